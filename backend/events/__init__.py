"""Task events: the outbox the task service writes, the relay that publishes it, our consumers."""
