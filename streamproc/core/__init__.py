"""Pure logic: wire shapes, validation, windows, state transitions; imports no Kafka client, Faust or torch."""
