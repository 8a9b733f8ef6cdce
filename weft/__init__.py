"""weft: a model-operations platform for LLMs built as a Prefect project."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """The client's names (`weft.Client`, `weft.AsyncClient`, `weft.NotFound`, ...), imported on first use
    (importing weft stays cheap)."""
    import importlib

    client = importlib.import_module("weft.client")  # not `from weft import client`: that asks this hook again
    if name in client.__all__:
        return getattr(client, name)
    raise AttributeError(f"module 'weft' has no attribute {name!r}")
