"""Benchmarks: every figure in BENCHMARKS.md and the issue notes comes from a command here."""
