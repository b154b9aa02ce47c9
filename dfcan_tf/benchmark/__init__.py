"""Benchmarks: FLOP counts and timers, reported as fractions of the machine's sgemm rate."""
