"""Prefect tasks, one module per domain."""
