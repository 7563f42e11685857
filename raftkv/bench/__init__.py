"""Benchmarks (run them with ``raftkv benchmark ...``; never as timed unit tests)."""
