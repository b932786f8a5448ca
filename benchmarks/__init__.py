"""Latency and quality benchmarks: every exported precision on every CPU provider (precision),
in-process against served through Triton (serving_latency)."""
