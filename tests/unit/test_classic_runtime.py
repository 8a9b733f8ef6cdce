"""The classic-model runtime (weft/classic/runtime) as weft runs it: `inspect_model.py` and `server.py` run by
path in child processes of an environment's python (here this one), on real models built here: iris random
forests (pickle, and joblib with feature names), TorchScript networks (softmax, traced regressor, one that
raises, exhausts memory or spins on request), a torch state dict, Keras 3 models (softmax, Lambda layer).

Each child imports torch (and Keras) afresh, which costs seconds on a small machine, so each group's children
start together and the tests wait on the one they use. Every child is stopped by its fixture (SIGTERM, then
SIGKILL after 15 s) and dies with the test process (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ast
import ctypes
import http.client
import json
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from weft.classic.runtime import loader
from weft.net import free_port

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

RUNTIME = Path(__file__).resolve().parents[2] / "weft" / "classic" / "runtime"
PYTHON = sys.executable  # stands for the model environment's python
START_TIMEOUT = 240.0  # seconds for a child to load its model, several starting at once on two cores
MEMORY_LIMIT_MB = 1024
HUGE = 100_000.0  # x[0][0] of the trap model: torch.ones(HUGE, 1024, 1024) is 400 GB
CONNECTIONS = 120  # open at once under the memory limit: 960 MiB of thread stacks at the default 8 MiB
SPIN = 10_000_000.0  # x[0][1] of the trap model: matrix products for far longer than the timeout

KERAS_BUILDER = r"""
import json, os, sys
os.environ["KERAS_BACKEND"] = "torch"
import keras
import numpy as np
out = sys.argv[1]
keras.utils.set_random_seed(0)
x = np.random.default_rng(0).uniform(0, 8, size=(10, 4)).astype("float32")
softmax = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(8, activation="relu"),
                            keras.layers.Dense(3, activation="softmax")])
softmax.save(os.path.join(out, "softmax.keras"))
with_lambda = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Lambda(lambda t: t * 2.0),
                                keras.layers.Dense(3, activation="softmax")])
with_lambda.save(os.path.join(out, "lambda.keras"))
with open(os.path.join(out, "expected.json"), "w") as f:
    json.dump({"inputs": x.tolist(), "softmax": softmax.predict(x, verbose=0).tolist()}, f)
"""


# ---------------------------------------------------------------------------------------------- models

class MLP(torch.nn.Module):
    """4 features → 3 class probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(4, 16), torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc2(torch.relu(self.fc1(x))), dim=-1)


class Regressor(torch.nn.Module):
    """4 features → 1 value (traced: the file keeps no `in_features`, only weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Trap(torch.nn.Module):
    """A linear model that, on request, allocates x[0][0] GiB (x[0][0] > 1000), multiplies matrices for x[0][1]
    rounds (x[0][1] > 0; TorchScript cannot sleep) or raises (x[0][2] < -1000)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x)
        if x[0, 0] > 1000:
            out = out + torch.ones(int(x[0, 0].item()), 1024, 1024).sum()
        if x[0, 1] > 0:
            m = torch.eye(128)
            for _ in range(int(x[0, 1].item())):
                m = torch.tanh(m @ m)
            out = out + m.sum()
        if x[0, 2] < -1000:
            raise ValueError("trap: x[0][2] is below -1000")
        return out


# ---------------------------------------------------------------------------------------------- children

def child_limits(memory_mb: int | None) -> Callable[[], None]:
    """Between fork and exec: die with this process (SIGTERM) and, optionally, weft's RLIMIT_DATA limit."""
    def apply() -> None:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if memory_mb:
            resource.setrlimit(resource.RLIMIT_DATA, (memory_mb << 20, memory_mb << 20))
    return apply


class Child:
    """A runtime script in a child process: its stdout in `log`, its stderr beside it."""

    def __init__(self, script: str, args: list[str], env: dict[str, str], log: Path,
                 memory_mb: int | None = None) -> None:
        self.log, self.errors = log, log.with_suffix(".stderr")
        with log.open("wb") as out, self.errors.open("wb") as err:
            self.proc = subprocess.Popen([PYTHON, str(RUNTIME / script), *args], env=env, stdout=out, stderr=err,
                                         preexec_fn=child_limits(memory_mb))

    def tail(self) -> str:
        return self.errors.read_text(errors="replace")[-3000:]

    def stop(self) -> int:
        """SIGTERM (kill after 15 s); the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Inspection(Child):
    """`inspect_model.py`: its one JSON line (stdout) and exit status."""

    def __init__(self, model: Path, framework: str, env: dict[str, str], log: Path, *extra: str) -> None:
        super().__init__("inspect_model.py", ["--model", str(model), "--framework", framework, *extra], env, log)
        self._result: tuple[int, dict[str, Any]] | None = None

    def result(self) -> tuple[int, dict[str, Any]]:
        if self._result is None:
            try:
                self.proc.wait(START_TIMEOUT)
            finally:
                self.stop()
            lines = self.log.read_text().strip().splitlines()
            assert len(lines) == 1, f"stdout must be one JSON line: {lines}\n{self.tail()}"
            self._result = self.proc.returncode, json.loads(lines[0])
        return self._result


class Replica(Child):
    """`server.py` on a free port, with a keep-alive connection for the tests' requests."""

    def __init__(self, model: Path, framework: str, env: dict[str, str], log: Path, *extra: str,
                 timeout: float = 30, workers: int = 2, memory_mb: int | None = None) -> None:
        self.port = free_port()
        super().__init__("server.py", ["--model", str(model), "--framework", framework, "--host", "127.0.0.1",
                                       "--port", str(self.port), "--timeout", str(timeout), "--workers", str(workers),
                                       *extra], env, log, memory_mb)
        self.conn = self.connect()
        self.ready = False

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def wait_ready(self) -> Replica:
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ready:
            assert self.proc.poll() is None, f"the server exited with {self.proc.returncode}:\n{self.tail()}"
            assert time.monotonic() < deadline, f"the server did not answer within {START_TIMEOUT} s:\n{self.tail()}"
            conn = self.connect()
            try:
                self.ready = call(conn, "GET", "/health")[0] == 200
            except OSError:
                time.sleep(0.2)
            finally:
                conn.close()
        return self

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        return call(self.conn, method, path, body)

    def predict(self, data: Any) -> tuple[int, dict[str, Any]]:
        return self.call("POST", "/predict", {"data": data})

    def stop(self) -> int:
        self.conn.close()
        return super().stop()


def call(conn: http.client.HTTPConnection, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    """One request; the status and the JSON reply (bytes bodies go as they are)."""
    payload = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    conn.request(method, path, body=payload, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def started(stack: ExitStack, child: Child) -> Any:
    stack.callback(child.stop)
    return child


# ---------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def child_env() -> Iterator[dict[str, str]]:
    """The children's environment. Where this machine keeps no bytecode beside the sources
    (PYTHONDONTWRITEBYTECODE), the children share a private cache instead: each would compile torch's and
    Keras's modules again otherwise (about 5 s and 20 s here)."""
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    cache = None
    if env.pop("PYTHONDONTWRITEBYTECODE", None):
        cache = tempfile.mkdtemp(prefix="weft-pycache-")
        env["PYTHONPYCACHEPREFIX"] = cache
    yield env
    if cache:
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    return x, y


@pytest.fixture(scope="module")
def keras_build(child_env: dict[str, str], tmp_path_factory) -> Iterator[tuple[subprocess.Popen, Path]]:
    """The Keras models, built in a child (importing Keras costs ~20 s, paid while the other tests run),
    with that child's own `predict` on ten random examples."""
    out = tmp_path_factory.mktemp("keras")
    with (out / "build.log").open("wb") as log:
        proc = subprocess.Popen([PYTHON, "-c", KERAS_BUILDER, str(out)], env=child_env, stdout=log, stderr=log,
                                preexec_fn=child_limits(None))
    try:
        yield proc, out
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture(scope="module", autouse=True)
def keras_started(keras_build) -> None:
    """Starts the Keras build with the module's first test."""


@pytest.fixture(scope="module")
def sklearn_models(tmp_path_factory, iris) -> dict[str, Any]:
    """A forest fitted on a matrix (pickle) and one fitted on a DataFrame (joblib, with feature names)."""
    import joblib
    import pandas as pd
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    out = tmp_path_factory.mktemp("sklearn")
    x, y = iris
    plain = RandomForestClassifier(n_estimators=20, random_state=0).fit(x, y)
    frame = load_iris(as_frame=True).data
    named = RandomForestClassifier(n_estimators=20, random_state=1).fit(frame, y)
    with (out / "iris.pkl").open("wb") as f:
        pickle.dump(plain, f)
    joblib.dump(named, out / "iris.joblib")
    return {"plain": plain, "named": named, "names": list(frame.columns), "frame": pd.DataFrame, "dir": out}


@pytest.fixture(scope="module")
def torch_models(tmp_path_factory) -> dict[str, Any]:
    """TorchScript files (scripted MLP, traced regressor, scripted trap) and a state dict."""
    out = tmp_path_factory.mktemp("torch")
    torch.manual_seed(0)
    mlp, regressor = torch.jit.script(MLP()).eval(), torch.jit.trace(Regressor().eval(), torch.zeros(1, 4))
    torch.jit.save(mlp, str(out / "mlp.pt"))
    torch.jit.save(regressor, str(out / "regressor.pt"))
    torch.jit.save(torch.jit.script(Trap()), str(out / "trap.pt"))
    torch.save(MLP().state_dict(), out / "mlp_state.pth")
    return {"mlp": mlp, "regressor": regressor, "dir": out}


@pytest.fixture(scope="module")
def fleet(child_env, keras_build, sklearn_models, torch_models, tmp_path_factory) -> Iterator[dict[str, Child]]:
    """Every sklearn and torch child, started together (after the Keras build, which they overlap)."""
    logs, s, t = tmp_path_factory.mktemp("logs"), sklearn_models["dir"], torch_models["dir"]
    with ExitStack() as stack:
        yield {
            "pickle": started(stack, Replica(s / "iris.pkl", "sklearn", child_env, logs / "pickle.log")),
            "joblib": started(stack, Replica(s / "iris.joblib", "sklearn", child_env, logs / "joblib.log")),
            "mlp": started(stack, Replica(t / "mlp.pt", "pytorch", child_env, logs / "mlp.log")),
            "regressor": started(stack, Replica(t / "regressor.pt", "pytorch", child_env, logs / "regressor.log")),
            "memory": started(stack, Replica(t / "trap.pt", "pytorch", child_env, logs / "memory.log",
                                             memory_mb=MEMORY_LIMIT_MB)),
            "timeout": started(stack, Replica(t / "trap.pt", "pytorch", child_env, logs / "timeout.log", timeout=1)),
            "inspect_mlp": started(stack, Inspection(t / "mlp.pt", "pytorch", child_env, logs / "inspect_mlp.log")),
            "inspect_state": started(stack, Inspection(t / "mlp_state.pth", "pytorch", child_env,
                                                       logs / "inspect_state.log")),
        }


@pytest.fixture(scope="module")
def keras_fleet(child_env, keras_build, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Once the Keras models exist: their server and both inspections of the Lambda model, started together."""
    proc, out = keras_build
    assert proc.wait(START_TIMEOUT) == 0, (out / "build.log").read_text()[-3000:]
    logs = tmp_path_factory.mktemp("keras_logs")
    with ExitStack() as stack:
        yield {
            "server": started(stack, Replica(out / "softmax.keras", "keras", child_env, logs / "server.log", workers=4)),
            "safe": started(stack, Inspection(out / "lambda.keras", "keras", child_env, logs / "safe.log")),
            "unsafe": started(stack, Inspection(out / "lambda.keras", "keras", child_env, logs / "unsafe.log",
                                                "--unsafe-keras")),
            "expected": json.loads((out / "expected.json").read_text()),
        }


def ready(fleet: dict[str, Any], name: str) -> Replica:
    return fleet[name].wait_ready()


# ---------------------------------------------------------------------------------------------- tests

def test_runtime_imports_only_stdlib_and_numpy() -> None:
    """The scripts run where only the user's packages are installed: no weft, no third-party package but
    numpy at the top of a module (the framework is imported where it is used)."""
    allowed = set(sys.stdlib_module_names) | {"numpy", "loader", "__future__"}
    for path in RUNTIME.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name} at the top"


@pytest.mark.parametrize(("data", "shape", "expected"), [
    ([1, 2.5], [2], ([[1, 2.5]], True)),
    ([[1, 2], [3, 4]], [2], ([[1, 2], [3, 4]], False)),
    ([[1, 2], [3, 4]], [2, 2], ([[[1, 2], [3, 4]]], True)),
    ([[[1, 2], [3, 4]]], [2, 2], ([[[1, 2], [3, 4]]], False)),
    ([[1, 2, 3], [4, 5, 6]], [2, 2], "expected examples of shape [2, 2], got [2, 3]"),
    ([[1, 2], [3]], [2, 2], "ragged array: the examples (or their rows) have different lengths"),
    ([None, 1], [2], "Expected array of numbers"),
    ({"a": 1}, [2], "Expected array of numbers"),
    (7, [2], "expected one example of shape [2] or a list of them, got an array of shape []"),
])
def test_check_input(data, shape, expected) -> None:
    if isinstance(expected, str):
        with pytest.raises(loader.InvalidInput) as caught:
            loader.check_input(data, shape)
        assert (caught.value.field, caught.value.reason) == ("data", expected)
    else:
        assert loader.check_input(data, shape) == expected


def test_loader_on_other_estimators(tmp_path, iris, monkeypatch) -> None:
    """In process: string classes come back as strings, a regressor gives one value per example, a plain
    pickle loads without joblib, and a pickle without a model is refused."""
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = iris
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    monkeypatch.setitem(sys.modules, "joblib", None)  # `import joblib` fails: pickle.load reads the file
    for name, model in [("pipeline", make_pipeline(StandardScaler(), LogisticRegression()).fit(x, labels)),
                        ("regressor", LinearRegression().fit(x, y)), ("dict", {"weights": [1, 2]})]:
        with (tmp_path / f"{name}.pkl").open("wb") as f:
            pickle.dump(model, f)
    pipeline = loader.load(str(tmp_path / "pipeline.pkl"), "scikit-learn")
    assert pipeline.describe()["model_type"] == "Pipeline" and pipeline.describe()["output_shape"] == [3]
    answer = pipeline.predict(x[:3].tolist())
    assert answer["predictions"] == ["setosa"] * 3 and type(answer["predictions"][0]) is str
    regressor = loader.load(str(tmp_path / "regressor.pkl"), "sklearn")
    assert (regressor.describe()["output_shape"], regressor.describe()["probabilities"]) == ([1], False)
    assert json.dumps(regressor.predict(x[:2].tolist())) and regressor.predict(x[:1].tolist())["probabilities"] is None
    with pytest.raises(loader.LoadError, match="holds a dict, which has no predict method"):
        loader.load(str(tmp_path / "dict.pkl"), "sklearn")


def test_sklearn_predictions_equal_the_model(fleet, sklearn_models, iris) -> None:
    replica, model, x = ready(fleet, "pickle"), sklearn_models["plain"], iris[0]
    status, health = replica.call("GET", "/health")
    assert status == 200 and health == {
        "status": "ok", "max_batch": 2, "framework": "sklearn", "model_type": "RandomForestClassifier",
        "input_shape": [4], "output_shape": [3], "feature_names": None, "probabilities": True,
        "library_version": health["library_version"]}
    local_port = replica.conn.sock.getsockname()[1]

    status, single = replica.predict(x[0].tolist())
    assert status == 200 and single == {"prediction": int(model.predict(x[:1])[0]),
                                        "probabilities": model.predict_proba(x[:1])[0].tolist()}
    rows = x[::7]
    status, batch = replica.predict(rows.tolist())
    assert status == 200 and batch == {"predictions": model.predict(rows).tolist(),
                                       "probabilities": model.predict_proba(rows).tolist(), "batch_size": len(rows)}
    assert replica.conn.sock.getsockname()[1] == local_port, "the connection was not kept alive"


def test_sklearn_with_feature_names_from_joblib(fleet, sklearn_models, iris) -> None:
    replica, model, names = ready(fleet, "joblib"), sklearn_models["named"], sklearn_models["names"]
    health = replica.call("GET", "/health")[1]
    assert health["feature_names"] == names and health["input_shape"] == [4]
    rows = iris[0][1::9]
    expected = sklearn_models["frame"](rows, columns=names)
    assert replica.predict(rows.tolist()) == (200, {
        "predictions": model.predict(expected).tolist(), "probabilities": model.predict_proba(expected).tolist(),
        "batch_size": len(rows)})


@pytest.mark.parametrize(("data", "reason"), [
    ([5.1, 3.5, 1.4], "expected 4 features per example, got 3"),
    ([[5.1, 3.5, 1.4, 0.2], [1, 2, 3]], "ragged array: the examples (or their rows) have different lengths"),
    ([[5.1, 3.5, 1.4]], "expected 4 features per example, got 3"),
    (["a", "b", "c", "d"], "Expected array of numbers"),
    ("5.1, 3.5, 1.4, 0.2", "Expected array of numbers"),
    ([True, 1, 2, 3], "Expected array of numbers"),
    ([], "no examples: send one example or a non-empty list of them"),
    ([[[1, 2, 3, 4]]], "expected one example of shape [4] or a list of them, got an array of more than 2 dimensions"),
])
def test_invalid_input_is_400(fleet, data, reason) -> None:
    status, body = ready(fleet, "pickle").predict(data)
    assert status == 400 and body["error"]["code"] == "INVALID_INPUT"
    assert body["error"]["details"] == {"field": "data", "reason": reason}


def test_bad_requests_are_json_errors(fleet) -> None:
    replica = ready(fleet, "pickle")
    status, body = replica.call("POST", "/predict", b"{not json")
    assert status == 400 and body["error"]["code"] == "INVALID_INPUT" and body["error"]["details"]["field"] == "body"
    status, body = replica.call("POST", "/predict", {"rows": [1, 2, 3, 4]})
    assert status == 400 and body["error"]["details"]["field"] == "data"
    status, body = replica.call("GET", "/nowhere")
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"
    status, body = replica.call("GET", "/predict")
    assert status == 405 and body["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert replica.call("GET", "/health")[0] == 200  # the same connection goes on


def test_model_exception_is_500_and_the_server_goes_on(fleet, sklearn_models, iris) -> None:
    replica = ready(fleet, "pickle")
    status, body = replica.predict([1e39, 0, 0, 0])  # beyond float32: sklearn refuses it
    assert status == 500 and body["error"]["code"] == "PREDICTION_ERROR"
    assert body["error"]["message"].startswith("ValueError: Input X contains infinity or a value too large")
    assert body["error"]["details"] == {"reason": "exception"}
    assert replica.predict(iris[0][0].tolist()) == (200, {
        "prediction": int(sklearn_models["plain"].predict(iris[0][:1])[0]),
        "probabilities": sklearn_models["plain"].predict_proba(iris[0][:1])[0].tolist()})


def test_concurrent_requests(fleet, sklearn_models, iris) -> None:
    replica, model, x = ready(fleet, "pickle"), sklearn_models["plain"], iris[0]
    answers: dict[int, tuple[int, dict]] = {}

    def ask(i: int) -> None:
        conn = replica.connect()
        try:
            answers[i] = call(conn, "POST", "/predict", {"data": x[i::10].tolist()})
        finally:
            conn.close()

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for i in range(10):
        assert answers[i][0] == 200 and answers[i][1]["predictions"] == model.predict(x[i::10]).tolist()


def test_torchscript_softmax_server(fleet, torch_models, iris) -> None:
    replica, x = ready(fleet, "mlp"), iris[0][:10].astype(np.float32)
    health = replica.call("GET", "/health")[1]
    assert {k: health[k] for k in ("framework", "model_type", "input_shape", "output_shape", "probabilities")} == {
        "framework": "pytorch", "model_type": "MLP", "input_shape": [4], "output_shape": [3], "probabilities": True}
    expected = torch_models["mlp"](torch.from_numpy(x)).detach().numpy()
    status, batch = replica.predict(x.tolist())
    assert status == 200 and batch["batch_size"] == 10
    assert batch["predictions"] == expected.argmax(axis=1).tolist()
    np.testing.assert_allclose(batch["probabilities"], expected, atol=1e-5)
    status, single = replica.predict(x[3].tolist())
    assert status == 200 and single["prediction"] == int(expected[3].argmax())
    np.testing.assert_allclose(single["probabilities"], expected[3], atol=1e-5)


def test_traced_regressor_gives_scalars_and_stops_on_sigterm(fleet, torch_models, iris) -> None:
    replica, x = ready(fleet, "regressor"), iris[0][:5].astype(np.float32)
    health = replica.call("GET", "/health")[1]
    assert (health["input_shape"], health["output_shape"], health["probabilities"]) == ([4], [1], False)
    expected = torch_models["regressor"](torch.from_numpy(x)).detach().numpy()[:, 0]
    status, batch = replica.predict(x.tolist())
    assert status == 200 and set(batch) == {"predictions", "batch_size"}
    np.testing.assert_allclose(batch["predictions"], expected, atol=1e-5)
    status, single = replica.predict(x[0].tolist())
    assert status == 200 and set(single) == {"prediction"} and abs(single["prediction"] - expected[0]) < 1e-5
    assert replica.stop() == 0


def test_inspect_torchscript(fleet) -> None:
    assert fleet["inspect_mlp"].result() == (0, {
        "ok": True, "framework": "pytorch", "model_type": "MLP", "input_shape": [4], "output_shape": [3],
        "feature_names": None, "probabilities": True, "library_version": torch.__version__})


def test_inspect_refuses_a_state_dict(fleet) -> None:
    code, found = fleet["inspect_state"].result()
    assert code == 1 and found["ok"] is False and found["reason"] == "not_torchscript"
    assert "a state dict has no architecture: save the model with torch.jit.script/trace + torch.jit.save" \
        in found["error"]
    assert "fc1.weight" in found["error"]


def test_out_of_memory_is_500_then_exit_70(fleet) -> None:
    """Under weft's RLIMIT_DATA limit: many open connections, a model exception (the server goes on), then an
    allocation of 400 GB, which the allocator refuses; the process answers and exits for a fresh replica."""
    replica = ready(fleet, "memory")
    conns = [replica.connect() for _ in range(CONNECTIONS)]
    try:  # the limit counts thread stacks too: a thread per open connection must stay affordable
        assert {call(conn, "POST", "/predict", {"data": [1, 2, 3, 4]})[0] for conn in conns} == {200}
    finally:
        for conn in conns:
            conn.close()

    status, body = replica.predict([0, 0, -5000, 0])
    assert status == 500 and body["error"]["message"] == "ValueError: trap: x[0][2] is below -1000"
    assert body["error"]["details"] == {"reason": "exception"}
    assert replica.predict([0, 0, 0, 0])[0] == 200

    status, body = replica.predict([HUGE, 0, 0, 0])
    assert status == 500 and body["error"]["code"] == "PREDICTION_ERROR"
    assert body["error"]["details"] == {"reason": "memory"}
    assert "ran out of memory (RuntimeError: [enforce fail" in body["error"]["message"]
    assert "DefaultCPUAllocator: can't allocate memory" in body["error"]["message"]
    assert replica.proc.wait(10) == 70
    assert "exiting with 70" in replica.tail()


def test_timeout_is_500_then_exit_71(fleet) -> None:
    replica = ready(fleet, "timeout")
    began = time.monotonic()
    status, body = replica.predict([0, SPIN, 0, 0])
    assert status == 500 and body["error"]["code"] == "PREDICTION_ERROR"
    assert body["error"]["details"] == {"reason": "timeout", "timeout_seconds": 1.0}
    assert body["error"]["message"].startswith("the prediction did not finish within 1 s")
    assert time.monotonic() - began < 5
    assert replica.proc.wait(10) == 71


def test_keras_server(keras_fleet) -> None:
    replica, x = keras_fleet["server"].wait_ready(), np.asarray(keras_fleet["expected"]["inputs"])
    expected = np.asarray(keras_fleet["expected"]["softmax"])
    health = replica.call("GET", "/health")[1]
    assert {k: health[k] for k in ("framework", "model_type", "input_shape", "output_shape", "probabilities")} == {
        "framework": "keras", "model_type": "Sequential", "input_shape": [4], "output_shape": [3],
        "probabilities": True}
    answers: list[tuple[int, dict]] = []

    def ask() -> None:  # four at once, on the server's four workers
        conn = replica.connect()
        try:
            answers.extend(call(conn, "POST", "/predict", {"data": x.tolist()}) for _ in range(3))
        finally:
            conn.close()

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == 12
    for status, batch in answers:
        assert status == 200 and batch["predictions"] == expected.argmax(axis=1).tolist()
        np.testing.assert_allclose(batch["probabilities"], expected, atol=1e-5)
    status, single = replica.predict(x[0].tolist())
    assert status == 200 and single["prediction"] == int(expected[0].argmax())


def test_keras_lambda_layer_needs_the_override(keras_fleet) -> None:
    code, found = keras_fleet["safe"].result()
    assert code == 1 and found["ok"] is False and found["reason"] == "lambda_layer"
    assert "Lambda layer" in found["error"] and "override" in found["error"]
    code, found = keras_fleet["unsafe"].result()
    assert code == 0 and found["ok"] is True
    assert (found["input_shape"], found["output_shape"], found["probabilities"]) == ([4], [3], True)
