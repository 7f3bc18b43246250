"""guardstream: Kafka → Faust → Ray → Qwen3Guard moderation worker."""
