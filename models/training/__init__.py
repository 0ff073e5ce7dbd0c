"""Training: the run's config and presets, batches, losses, the head's initial biases, validation, the loop."""
