"""Prometheus metrics, partition gauges, stall reports and readiness probes."""
