"""Latency and quality benchmarks (not yet implemented)."""
