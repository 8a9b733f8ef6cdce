"""weft: a model-operations platform for LLMs built as a Prefect project."""

__version__ = "0.1.0"
