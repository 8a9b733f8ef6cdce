"""The classic-model scan (weft/scan/classic.py) on real files built here: iris random forests (pickle, joblib,
compressed joblib), object arrays in joblib files, a TorchScript module, a torch state dict, a legacy torch
file, Keras 3 models (Dense, Lambda layer), and `os.system` payloads hidden in each format. The scan must find
every payload without running it (a canary file never appears) and pass the clean files with no issue at all,
since any issue stops a deploy.

Keras takes ~25 s to import on a small machine, so its models are built by a child process that starts with
this module and is waited on by the Keras tests at the end.
"""

from __future__ import annotations

import copyreg
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest
from joblib.numpy_pickle import NumpyArrayWrapper

from weft.scan.checks import Issue
from weft.scan.classic import classic_issues, classify, walk_pickle_file
from weft.scan.isolated import run_isolated
from weft.testing.classic_models import hog_model

KERAS_BUILDER = r"""
import os, sys
os.environ["KERAS_BACKEND"] = "torch"
import keras
out = sys.argv[1]
dense = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
dense.save(os.path.join(out, "dense.keras"))
dense.save(os.path.join(out, "dense.h5"))
keras.Sequential([keras.Input(shape=(4,)), keras.layers.Lambda(lambda t: t * 2.0)]).save(os.path.join(out, "lambda.keras"))
"""


class Evil:
    """Runs `touch CANARY` when unpickled: a `__reduce__` payload (os.system pickles as posix.system)."""

    def __init__(self, canary: Path):
        self.canary = canary

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.canary}",)


class Call:
    """Pickles as `func(*args)`, then BUILD with `state`: hand-made streams without writing opcodes."""

    def __init__(self, func: object, args: tuple, state: object = None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self) -> tuple:
        return self.func, self.args, self.state


def blocking(issues: list[Issue]) -> list[tuple[str, str]]:
    return [(i.severity, i.title) for i in issues if i.severity in ("HIGH", "CRITICAL")]


def assert_finds_system_call(issues: list[Issue], canary: Path) -> None:
    assert any(i.severity == "CRITICAL" and i.title.endswith(("posix.system", "os.system"))
               and i.scanner.startswith("weft.classic") for i in issues), issues  # by the walker itself
    assert not canary.exists()  # found, never run


@pytest.fixture(scope="module", autouse=True)
def keras_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen, Path]]:
    out = tmp_path_factory.mktemp("keras")
    child = subprocess.Popen([sys.executable, "-c", KERAS_BUILDER, str(out)], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    yield child, out
    if child.poll() is None:
        child.kill()
        child.wait()


@pytest.fixture(scope="module")
def forest() -> object:
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    x, y = load_iris(return_X_y=True)
    return RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    return tmp_path / "CANARY"


# ---------------------------------------------------------------------------------------------- scikit-learn

def test_iris_forest_as_pickle_joblib_and_compressed_joblib_is_clean(tmp_path: Path, forest: object):
    pickle.dump(forest, (tmp_path / "rf.pkl").open("wb"))
    joblib.dump(forest, tmp_path / "rf.joblib")
    joblib.dump(forest, tmp_path / "rf_z.joblib", compress=3)
    for name in ("rf.pkl", "rf.joblib", "rf_z.joblib"):
        # modelscan cannot parse the joblib files and picklescan calls sklearn's globals unknown: both dropped
        assert classic_issues(tmp_path / name, name) == [], name
    assert walk_pickle_file(tmp_path / "rf.joblib").arrays > 0  # the array bytes were skipped, not parsed


def test_object_arrays_in_joblib_are_walked_as_nested_pickles(tmp_path: Path, canary: Path):
    objects = np.array([1, "a", None], dtype=object)
    joblib.dump({"w": np.arange(10.0), "o": objects}, tmp_path / "clean.joblib")
    assert classic_issues(tmp_path / "clean.joblib", "clean.joblib") == []

    hidden = np.empty(2, dtype=object)
    hidden[0], hidden[1] = Evil(canary), 1
    joblib.dump({"w": np.arange(10.0), "o": hidden}, tmp_path / "evil.joblib")
    assert_finds_system_call(classic_issues(tmp_path / "evil.joblib", "evil.joblib"), canary)


def test_payload_in_pickle_and_next_to_joblib_arrays_is_critical(tmp_path: Path, forest: object, canary: Path):
    pickle.dump({"x": Evil(canary)}, (tmp_path / "evil.pkl").open("wb"))
    # modelscan 0.8.8 says "No issues found" for this one while joblib.load runs it
    joblib.dump({"w": np.arange(1000.0), "m": forest, "x": Evil(canary)}, tmp_path / "evil.joblib")
    joblib.dump({"w": np.arange(1000.0), "x": Evil(canary)}, tmp_path / "evil_xz.joblib", compress=("xz", 3))
    for name in ("evil.pkl", "evil.joblib", "evil_xz.joblib"):
        assert_finds_system_call(classic_issues(tmp_path / name, name), canary)


def test_array_bytes_that_pickle_load_would_run_are_found(tmp_path: Path, canary: Path):
    """joblib writes array bytes right after the wrapper when it cannot tell() the file: joblib.load skips them,
    pickle.load (weft's loader without joblib) reads them as opcodes, so both views are walked."""
    class Untellable(io.BytesIO):
        def tell(self) -> int:
            raise io.UnsupportedOperation("no tell")

    out = Untellable()
    joblib.dump({"a": np.frombuffer(pickle.dumps(Evil(canary), protocol=0), dtype=np.uint8)}, out)
    (tmp_path / "hidden.joblib").write_bytes(out.getvalue())
    assert_finds_system_call(classic_issues(tmp_path / "hidden.joblib", "hidden.joblib"), canary)


def test_a_wrapper_handed_to_a_call_is_unscannable(tmp_path: Path):
    """numpy.max of an object array holding a NumpyArrayWrapper returns it, and joblib would read array bytes
    after its BUILD: no walker can tell, so the file is refused."""
    wrapper = Call(copyreg._reconstructor, (NumpyArrayWrapper, object, None))
    holder = Call(np._core.multiarray._reconstruct, (np.ndarray, (0,), b"b"),
                  (1, (1,), np.dtype("O"), False, [wrapper]))
    state = {"shape": (8,), "dtype": np.dtype("u1"), "order": "C", "numpy_array_alignment_bytes": None}
    (tmp_path / "alias.joblib").write_bytes(pickle.dumps([Call(np.max, (holder,), state)], protocol=4))
    issues = classic_issues(tmp_path / "alias.joblib", "alias.joblib")
    assert ("HIGH", "Unscannable pickle") in blocking(issues)
    assert "NumpyArrayWrapper is handed to <global numpy.max>" in str(issues)


def test_unknown_global_is_high_and_a_truncated_pickle_is_unscannable(tmp_path: Path, forest: object):
    (tmp_path / "unknown.pkl").write_bytes(b"cmymodule\nThing\n(tR.")
    assert blocking(classic_issues(tmp_path / "unknown.pkl", "unknown.pkl")) == [
        ("HIGH", "Global not on the allow-list: mymodule.Thing")]

    whole = pickle.dumps(forest)
    (tmp_path / "cut.pkl").write_bytes(whole[: len(whole) // 2])
    issues = classic_issues(tmp_path / "cut.pkl", "cut.pkl")
    assert ("HIGH", "Unscannable pickle") in blocking(issues)
    assert not any(i.severity == "CRITICAL" for i in issues)

    (tmp_path / "model.onnx").write_bytes(b"\x08\x07")
    assert blocking(classic_issues(tmp_path / "model.onnx", "model.onnx")) == [("HIGH", "Unsupported file type")]


def test_classify():
    assert classify("numpy._core.multiarray", "_reconstruct") is None
    assert classify("sklearn.tree._tree", "Tree") is None
    assert classify("torch._utils", "_rebuild_tensor_v2") is None
    assert classify("posix", "system")[0] == "CRITICAL"
    assert classify("builtins", "getattr")[0] == "CRITICAL"
    assert classify("numpy", "load")[0] == "CRITICAL"  # np.load(allow_pickle=True): inside an allowed package
    assert classify("numpy", "os.system")[0] == "CRITICAL"  # a protocol-4 attribute path
    assert classify("sklearn.base", "clone.x")[0] == "HIGH"
    assert classify("mymodule", "Thing")[0] == "HIGH"
    # a TorchScript class keeps its Python module's path (`testing` too): TorchScript compiles it, never imports
    assert classify("__torch__.weft.testing.classic_models", "Hog") is None


def test_run_isolated_runs_the_classic_kind(tmp_path: Path, canary: Path):
    joblib.dump({"w": np.arange(100.0), "x": Evil(canary)}, tmp_path / "evil.joblib")
    assert_finds_system_call(run_isolated("classic", tmp_path / "evil.joblib", "evil.joblib"), canary)


# ---------------------------------------------------------------------------------------------- PyTorch

@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script/save: still what weft serves
def test_torch_files(tmp_path: Path, canary: Path):
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    torch.jit.save(torch.jit.script(model), tmp_path / "script.pt")
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    torch.save(model.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save({"x": Evil(canary)}, tmp_path / "evil.pt")

    assert classic_issues(tmp_path / "script.pt", "script.pt") == []
    assert classic_issues(hog_model(tmp_path / "hog.pt"), "hog.pt") == []  # a scripted class of its own
    assert classic_issues(tmp_path / "weights.pth", "weights.pth") == []
    assert blocking(classic_issues(tmp_path / "legacy.pt", "legacy.pt")) == [("HIGH", "Unscannable PyTorch file")]
    assert_finds_system_call(classic_issues(tmp_path / "evil.pt", "evil.pt"), canary)


# ---------------------------------------------------------------------------------------------- Keras

def test_keras_custom_object_is_high(tmp_path: Path):
    config = {"module": "keras", "class_name": "Sequential", "config": {"layers": [
        {"module": "keras.layers", "class_name": "Dense", "config": {"name": "d"}},
        {"module": "mypackage.layers", "class_name": "Mine", "config": {"name": "m"}}]}}
    with zipfile.ZipFile(tmp_path / "custom.keras", "w") as archive:
        archive.writestr("config.json", json.dumps(config))
    assert blocking(classic_issues(tmp_path / "custom.keras", "custom.keras")) == [
        ("HIGH", "Keras custom object mypackage.layers.Mine")]


def test_keras_models(keras_models: tuple[subprocess.Popen, Path]):
    child, out = keras_models
    output, _ = child.communicate(timeout=300)
    assert child.returncode == 0, output
    assert classic_issues(out / "dense.keras", "dense.keras") == []
    assert classic_issues(out / "dense.h5", "dense.h5") == []
    assert blocking(classic_issues(out / "lambda.keras", "lambda.keras")) == [("HIGH", "Keras Lambda layer")]
