"""weft: a model-operations platform for LLMs built as a Prefect project."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """The Python client's names (`weft.Client`, `weft.AsyncClient`, `weft.NotFound`, ...: `weft.client.__all__`),
    imported on first use so importing weft stays cheap. Other names (submodules are lower case) are an
    AttributeError at once, so `from weft import pools` goes on to import the submodule."""
    if name[:1].isupper():
        import importlib

        client = importlib.import_module("weft.client")
        if name in client.__all__:
            return getattr(client, name)
    raise AttributeError(f"module 'weft' has no attribute {name!r}")
