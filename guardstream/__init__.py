"""guardstream: Kafka → Faust → Ray → Qwen3Guard moderation worker."""
"""guardstream: Qwen3Guard moderation of Kafka chat streams (the application: CLI, worker start-up, dev tools, benchmarks)."""

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent / "examples"  # package data: example events, streams and policy
