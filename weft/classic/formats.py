"""Which model files a classic deployment accepts, and the framework each suffix means."""

from __future__ import annotations

from pathlib import PurePath

FRAMEWORK_OF_SUFFIX = {".pkl": "sklearn", ".pickle": "sklearn", ".joblib": "sklearn", ".pt": "pytorch",
                       ".pth": "pytorch", ".h5": "keras", ".keras": "keras"}
# document 001's `framework` filter names Keras models `tensorflow`; weft serves them with Keras 3
FRAMEWORK_ALIASES = {"tensorflow": "keras", "torch": "pytorch", "scikit-learn": "sklearn"}
SUFFIXES = ", ".join(sorted(FRAMEWORK_OF_SUFFIX))


class UnsupportedFile(ValueError):
    pass


def framework_of(filename: str) -> str:
    """The framework an uploaded file's suffix names; UnsupportedFile for any other suffix."""
    suffix = PurePath(filename).suffix.lower()
    if suffix not in FRAMEWORK_OF_SUFFIX:
        raise UnsupportedFile(f"{filename!r} is not a model file weft serves: use one of {SUFFIXES}")
    return FRAMEWORK_OF_SUFFIX[suffix]


def framework_filter(value: str) -> str:
    """A `framework` query value as weft names it (`tensorflow` is Keras)."""
    value = value.lower()
    return FRAMEWORK_ALIASES.get(value, value)
