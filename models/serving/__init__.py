"""Serving: the checkpoint on disk, the Scorer that loads it behind one call, and its explanations."""
