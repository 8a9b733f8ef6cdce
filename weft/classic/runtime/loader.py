"""Load an uploaded classic model the safe way for its framework and serve it through one interface.

This runs inside the model's own environment: it imports the standard library and numpy at the top and the
framework lazily, never weft. The file was security-scanned before it gets here; loading is still the safe
variant each framework has:

- sklearn: any pickle or joblib file (`joblib.load` where joblib is installed, else `pickle.load`);
- pytorch: TorchScript only (`torch.jit.load`): a state dict has no architecture and a pickled nn.Module is
  code, so anything else is only identified (`torch.load(weights_only=True)`) to say what it is;
- keras: Keras 3 `.keras`/`.h5` with `safe_mode` on, unless an override of the scan lets a Lambda layer's
  Python code load.

`load()` returns a `Served` model: `describe()` says what it is and `predict(rows)` answers a batch with
JSON-native values; `check_input()` turns request data into a batch of the model's input shape.
"""

from __future__ import annotations

import os
import pickle
import sys
from abc import ABC, abstractmethod
from importlib.metadata import version as dist_version
from typing import Any

import numpy as np

FRAMEWORKS = ("sklearn", "pytorch", "keras")
ALIASES = {"scikit-learn": "sklearn", "torch": "pytorch", "tensorflow": "keras"}
TORCHSCRIPT_HINT = "save the model with torch.jit.script/trace + torch.jit.save"
STATE_DICT_HINT = f"a state dict has no architecture: {TORCHSCRIPT_HINT}"
OOM_MARKERS = ("can't allocate memory", "DefaultCPUAllocator", "std::bad_alloc")
MAX_ERROR_CHARS = 2000
# first layers whose input size a TorchScript file does not record: weft cannot build a probe for them
UNSIZED_LAYERS = {f"Conv{t}{d}d" for t in ("", "Transpose") for d in (1, 2, 3)} | {"LSTM", "GRU", "RNN", "Embedding",
                                                                                  "EmbeddingBag"}
TORCHSCRIPT_TRACE = "failed in the TorchScript interpreter"  # an error raised in TorchScript code


class LoadError(Exception):
    """The model cannot be served as it is; `reason` is a short code (not_torchscript, lambda_layer, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class InvalidInput(ValueError):
    """Request data that does not fit the model: the offending `field` and why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


# ---------------------------------------------------------------------------------------------- the models

class Served(ABC):
    """A loaded model: what it is (`describe`) and predictions for a batch of examples (`predict`)."""

    framework = ""

    def __init__(self) -> None:
        self._info: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        """framework, model_type, input_shape, output_shape, feature_names, probabilities, library_version
        (computed once: torch and Keras models run one zero example to learn their output)."""
        if self._info is None:
            self._info = self._describe()
        return dict(self._info)

    @abstractmethod
    def predict(self, rows: list) -> dict[str, Any]:
        """`{"predictions": [...], "probabilities": [[...]] or None}` for a batch (a list of examples)."""

    @abstractmethod
    def _describe(self) -> dict[str, Any]:
        """What `describe` returns, computed once."""


class SklearnModel(Served):
    """A fitted estimator from a pickle: scikit-learn's, or another library's with the same API (xgboost...)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        if not callable(getattr(model, "predict", None)):
            raise LoadError("not_a_model", f"the file holds a {type(model).__name__}, which has no predict method")
        self.model = model
        names = getattr(model, "feature_names_in_", None)
        self.feature_names = [str(n) for n in names] if names is not None else None
        self.pandas = _pandas() if self.feature_names else None

    def _describe(self) -> dict[str, Any]:
        model, library = self.model, type(self.model).__module__.split(".")[0]
        n_features = getattr(model, "n_features_in_", None)
        if not isinstance(n_features, (int, np.integer)):
            raise LoadError("unknown_input_shape", f"{type(model).__name__} has no n_features_in_: it is not fitted, "
                            "or its library does not say how many features it takes")
        classes = getattr(model, "classes_", None)
        if classes is not None:
            output_shape = [len(classes)]
        else:  # a regressor (or clusterer): one value per example, or n_outputs of them
            predicted = np.asarray(model.predict(self._matrix([[0.0] * int(n_features)])))
            output_shape = [int(predicted.shape[1])] if predicted.ndim > 1 else [1]
        return {"framework": library, "model_type": type(model).__name__, "input_shape": [int(n_features)],
                "output_shape": output_shape, "feature_names": self.feature_names,
                "probabilities": hasattr(model, "predict_proba"), "library_version": _version(library)}

    def predict(self, rows: list) -> dict[str, Any]:
        x = self._matrix(rows)
        predictions = to_native(np.asarray(self.model.predict(x)))
        probabilities = None
        if self.describe()["probabilities"]:
            probabilities = _probability_rows(self.model.predict_proba(x))
        return {"predictions": predictions, "probabilities": probabilities}

    def _matrix(self, rows: list) -> Any:
        """float64 rows; a DataFrame with the fitted column names where the model knows them (a pipeline may
        select columns by name, and sklearn warns about nameless input)."""
        x = np.asarray(rows, dtype=np.float64)
        if self.pandas is not None:
            return self.pandas.DataFrame(x, columns=self.feature_names)
        return x


class TensorModel(Served):
    """A network (TorchScript or Keras) mapping a float batch to an output batch."""

    library = ""

    def __init__(self) -> None:
        super().__init__()
        self.dtype: np.dtype = np.dtype(np.float32)

    def _describe(self) -> dict[str, Any]:
        shape = self._input_shape()
        out = self._forward(np.zeros([1, *shape], dtype=self.dtype))
        return {"framework": self.framework, "model_type": self._model_type(), "input_shape": shape,
                "output_shape": [int(d) for d in out.shape[1:]], "feature_names": None,
                "probabilities": is_distribution(out), "library_version": _version(self.library)}

    def predict(self, rows: list) -> dict[str, Any]:
        probabilities = self.describe()["probabilities"]
        out = self._forward(np.asarray(rows, dtype=self.dtype))
        if out.ndim == 0 or out.shape[0] != len(rows):
            raise ValueError(f"the model returned shape {list(out.shape)} for a batch of {len(rows)}")
        if probabilities:
            return {"predictions": out.argmax(axis=-1).tolist(), "probabilities": out.tolist()}
        if out.ndim > 1 and out.shape[-1] == 1:
            return {"predictions": out[..., 0].tolist(), "probabilities": None}
        return {"predictions": out.tolist(), "probabilities": None}

    @abstractmethod
    def _input_shape(self) -> list[int]:
        """One example's shape."""

    @abstractmethod
    def _model_type(self) -> str:
        """The network's class name."""

    @abstractmethod
    def _forward(self, x: np.ndarray) -> np.ndarray:
        """The output batch of a float input batch."""


class TorchScriptModel(TensorModel):
    framework, library = "pytorch", "torch"

    def __init__(self, module: Any, torch: Any) -> None:
        super().__init__()
        self.module, self.torch = module.eval(), torch
        floats = [p for p in module.parameters() if p.is_floating_point()]
        if floats and floats[0].dtype in (torch.float64, torch.float32):
            self.dtype = np.dtype(str(floats[0].dtype).removeprefix("torch."))

    def _model_type(self) -> str:
        return str(getattr(self.module, "original_name", type(self.module).__name__))

    def _input_shape(self) -> list[int]:
        """From the first layer that says how many features it takes: a scripted Linear keeps
        `in_features`, a traced one only its weight ([out, in])."""
        for sub in self.module.modules():
            name = str(getattr(sub, "original_name", ""))
            in_features = getattr(sub, "in_features", None)
            if isinstance(in_features, int):
                return [in_features]
            if name == "Linear" and hasattr(sub, "weight"):
                return [int(sub.weight.shape[-1])]
            if name in UNSIZED_LAYERS or hasattr(sub, "in_channels"):
                raise LoadError("unknown_input_shape", f"the first layer ({name}) takes input whose size (spatial "
                                "size, sequence length) a TorchScript file does not record, so weft cannot probe it "
                                "(it serves TorchScript models whose first layer is Linear)")
        raise LoadError("unknown_input_shape", "the TorchScript model has no Linear layer: weft cannot tell the "
                        "shape of its input")

    def _forward(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            out = self.module(torch.from_numpy(x))
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"the model returned a {type(out).__name__}: weft serves models that return one tensor")
        if out.dtype in (torch.float16, torch.bfloat16):
            out = out.float()
        return out.detach().cpu().numpy()


class KerasModel(TensorModel):
    framework, library = "keras", "keras"

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        inputs = getattr(model, "inputs", None) or []
        dtype = str(getattr(inputs[0], "dtype", "float32")) if len(inputs) == 1 else "float32"
        if dtype in ("float16", "float32", "float64"):
            self.dtype = np.dtype(dtype)

    def _model_type(self) -> str:
        return type(self.model).__name__

    def _input_shape(self) -> list[int]:
        try:
            shape = self.model.input_shape
        except (AttributeError, ValueError) as exc:
            raise LoadError("unknown_input_shape", f"the Keras model has no defined input: {exc}") from exc
        if not isinstance(shape, tuple) or not all(isinstance(d, int) for d in shape[1:]):
            raise LoadError("unknown_input_shape", f"the Keras model's input shape is {shape}: weft serves models "
                            "with one input of fixed size")
        return list(shape[1:])

    def _forward(self, x: np.ndarray) -> np.ndarray:
        out = self.model.predict_on_batch(x)
        if isinstance(out, (list, tuple, dict)):
            raise TypeError(f"the model returned a {type(out).__name__}: weft serves models with one output")
        return np.asarray(out)


# ---------------------------------------------------------------------------------------------- loading

def load(path: str, framework: str, unsafe_keras: bool = False) -> Served:
    """The model in `path` as `framework` (sklearn, pytorch, keras, or an alias such as torch)."""
    framework = ALIASES.get(framework.lower(), framework.lower())
    if framework == "sklearn":
        return _load_pickle(path)
    if framework == "pytorch":
        return _load_torchscript(path)
    if framework == "keras":
        return _load_keras(path, unsafe_keras)
    raise LoadError("unsupported_framework", f"unknown framework {framework!r}: use one of {', '.join(FRAMEWORKS)}")


def _load_pickle(path: str) -> SklearnModel:
    try:
        import joblib
    except ImportError:
        with open(path, "rb") as f:
            return SklearnModel(pickle.load(f))
    return SklearnModel(joblib.load(path))


def _load_torchscript(path: str) -> TorchScriptModel:
    import torch

    try:
        module = torch.jit.load(path, map_location="cpu")
    except Exception as exc:
        what = _not_torchscript(torch, path)
        if what is None:
            raise LoadError("load_failed", f"not a TorchScript file ({error_text(exc)}): {TORCHSCRIPT_HINT}") from exc
        raise LoadError("not_torchscript", f"{os.path.basename(path)} is not TorchScript but {what}") from exc
    return TorchScriptModel(module, torch)


def _not_torchscript(torch: Any, path: str) -> str | None:
    """What a torch file that is not TorchScript holds (read with the weights-only unpickler, never run),
    or None where torch cannot read it at all."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # the weights-only unpickler refuses classes: a pickled nn.Module
        return f"pickled Python objects (a whole nn.Module saved with torch.save is code): {TORCHSCRIPT_HINT}"
    except Exception:
        return None
    if isinstance(obj, dict):
        keys = [str(k) for k in obj]
        shown = ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")
        tensors = sum(isinstance(v, torch.Tensor) for v in obj.values())
        kind = f"a state dict of {tensors} tensors" if tensors == len(keys) else f"a dict of {len(keys)} entries"
        return f"{kind} ({shown}): {STATE_DICT_HINT}"
    return f"a {type(obj).__name__} saved with torch.save: {STATE_DICT_HINT}"


def _load_keras(path: str, unsafe: bool) -> KerasModel:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    try:
        model = keras.saving.load_model(path, safe_mode=not unsafe)
    except Exception as exc:
        text = str(exc)
        if not unsafe and "Lambda" in text and "safe_mode" in text:
            raise LoadError("lambda_layer", "the Keras model has a Lambda layer, whose Python code Keras's safe mode "
                            "refuses to load: serving it needs an override of the security scan (then it loads with "
                            "--unsafe-keras)") from exc
        if not unsafe and "safe_mode" in text:
            raise LoadError("unsafe_code", f"Keras's safe mode refused the model ({text[:500]}): serving it needs an "
                            "override of the security scan") from exc
        raise
    return KerasModel(model)


# ---------------------------------------------------------------------------------------------- helpers

def check_input(data: Any, input_shape: list[int]) -> tuple[list, bool]:
    """`(rows, single)`: one example of `input_shape` becomes a batch of one, a list of them is a batch.
    Anything else (not numbers, ragged, wrong size, empty) raises InvalidInput."""
    rank = len(input_shape)
    try:
        shape = _shape_of(data, rank + 1)
    except _TooDeep:
        raise InvalidInput("data", f"expected one example of shape {input_shape} or a list of them, got an array "
                           f"of more than {rank + 1} dimensions") from None
    if data == []:
        raise InvalidInput("data", "no examples: send one example or a non-empty list of them")
    if len(shape) == rank:
        rows, single, example = [data], True, list(shape)
    elif len(shape) == rank + 1:
        rows, single, example = data, False, list(shape[1:])
    else:
        raise InvalidInput("data", f"expected one example of shape {input_shape} or a list of them, got an array of "
                           f"shape {list(shape)}")
    if example != list(input_shape):
        if rank == 1:
            raise InvalidInput("data", f"expected {input_shape[0]} features per example, got {example[0]}")
        raise InvalidInput("data", f"expected examples of shape {input_shape}, got {example}")
    return rows, single


class _TooDeep(Exception):
    pass


def _shape_of(value: Any, max_rank: int) -> tuple[int, ...]:
    """The shape of a nested list of numbers (bools are not numbers here) of at most `max_rank` dimensions;
    InvalidInput (or _TooDeep) otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ()
    if not isinstance(value, list):
        raise InvalidInput("data", "Expected array of numbers")
    if max_rank == 0:
        raise _TooDeep
    if not value:
        return (0,)
    first = _shape_of(value[0], max_rank - 1)
    if first == ():  # a row: check its items without recursing
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise InvalidInput("data", "Expected array of numbers")
    elif any(_shape_of(v, max_rank - 1) != first for v in value[1:]):
        raise InvalidInput("data", "ragged array: the examples (or their rows) have different lengths")
    return (len(value), *first)


def zeros(shape: list[int]) -> list:
    """One all-zero example of `shape`, as nested lists."""
    return np.zeros(shape).tolist()


def is_distribution(out: np.ndarray) -> bool:
    """Rows of two or more non-negative values that sum to 1 (within 1e-4): class probabilities."""
    if out.ndim < 2 or out.shape[-1] < 2 or not np.issubdtype(out.dtype, np.floating):
        return False
    return bool(np.all(out >= 0) and np.allclose(out.sum(axis=-1), 1.0, rtol=0.0, atol=1e-4))


def to_native(value: Any) -> Any:
    """numpy arrays and scalars (also inside object arrays) as JSON-native Python values."""
    if isinstance(value, np.ndarray):
        if value.dtype != object:
            return value.tolist()
        value = value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [to_native(v) for v in value]
    return value


def _probability_rows(proba: Any) -> list:
    """predict_proba's answer per example; a multi-output classifier's list of arrays becomes, per example,
    one probability row per output."""
    if isinstance(proba, list):
        arrays = [np.asarray(p) for p in proba]
        return [[to_native(a[i]) for a in arrays] for i in range(len(arrays[0]))]
    return to_native(np.asarray(proba))


def is_out_of_memory(exc: BaseException) -> bool:
    """A MemoryError (numpy, Python), or torch's allocator failing under the memory limit."""
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in OOM_MARKERS)


def error_text(exc: BaseException) -> str:
    """`Type: message`. A TorchScript error shows the exception it carries (its last line, e.g.
    `RuntimeError: boom`), not the interpreter's traceback."""
    text = str(exc).strip()
    if text and (type(exc).__module__.startswith("torch.jit") or TORCHSCRIPT_TRACE in text):
        line = text.splitlines()[-1].strip().removeprefix("builtins.")
        if ": " in line:
            return line[:MAX_ERROR_CHARS]
    return f"{type(exc).__name__}: {text}"[:MAX_ERROR_CHARS] if text else type(exc).__name__


def _version(module: str) -> str | None:
    """The version of an imported library (its `__version__`, else its distribution's)."""
    version = getattr(sys.modules.get(module), "__version__", None)
    if version is None:
        try:
            version = dist_version({"sklearn": "scikit-learn"}.get(module, module))
        except Exception:
            return None
    return str(version)


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        return None
    return pandas
