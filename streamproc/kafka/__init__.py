"""Kafka plumbing: the local broker, topic administration, the output producer, readers and checks."""
