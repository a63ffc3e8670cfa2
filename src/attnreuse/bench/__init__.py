"""Benchmarks: operators and models, latency percentiles and peak memory, JSON/CSV records."""
