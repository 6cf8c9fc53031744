"""Application-level experiments: the benchmark runner."""
