"""Evaluation: the protocols (next item, cold start, fraud, time to next), their baselines and reports."""
