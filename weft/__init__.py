"""weft: a model-operations platform for LLMs built as a Prefect project."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`weft.Client` and `weft.AsyncClient`, imported on first use (importing weft stays cheap)."""
    if name in ("Client", "AsyncClient"):
        from weft import client

        return getattr(client, name)
    raise AttributeError(f"module 'weft' has no attribute {name!r}")
