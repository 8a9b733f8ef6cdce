"""Prefect flows, one module per process."""
