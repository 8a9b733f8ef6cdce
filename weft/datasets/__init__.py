"""Dataset loading, profiling and quality checks."""
