"""Reproducible measurements that print ratios (`python -m benchmarks.<name>`)."""
