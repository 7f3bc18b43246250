"""What gateways and workers share to speak over Kafka: connection settings, the topics, the
policies in force and their feed, the broker's errors, the metrics both count. It imports only the
wire contract (`schemas/`), so a gateway loads nothing of the worker."""
