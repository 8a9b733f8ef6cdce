"""Real classic-model files for tests and benchmarks, built locally: an iris RandomForest (pickle), TorchScript
and Keras 3 classifiers, a TorchScript model that allocates or spins on demand, and files carrying an
`os.system` payload. Requirements pin the versions installed here, so building their environments reuses
the packages `make install` put in uv's cache."""

from __future__ import annotations

import os
import pickle
from importlib import metadata
from pathlib import Path
from typing import Any


def pinned(*packages: str) -> str:
    """A requirements.txt pinning each package to the version installed here."""
    return "".join(f"{p}=={metadata.version(p).split('+')[0]}\n" for p in packages)


def iris(shuffle_labels: bool = False) -> tuple[Any, Any]:
    """A fitted RandomForest on iris and the features; `shuffle_labels` trains on other labels (a v2 that
    predicts differently)."""
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    x, y = load_iris(return_X_y=True)
    if shuffle_labels:
        y = (y + 1) % 3
    return RandomForestClassifier(n_estimators=20, random_state=0).fit(x, y), x


def write_pickle(obj: Any, path: Path) -> Path:
    with path.open("wb") as fh:
        pickle.dump(obj, fh)
    return path


class Payload:
    """Runs `command` through os.system when unpickled."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def payload_files(folder: Path, canary: Path) -> dict[str, Path]:
    """The same payload (it would create `canary`) in a .pkl, a .joblib beside numpy arrays, and a .pt."""
    import joblib
    import numpy as np
    import torch

    command = f"touch {canary}"
    files = {"pkl": write_pickle({"model": Payload(command)}, folder / "evil.pkl")}
    joblib.dump({"weights": np.arange(4096.0), "hook": Payload(command), "bias": np.ones(64)},
                folder / "evil.joblib")
    files["joblib"] = folder / "evil.joblib"
    torch.save({"state": torch.ones(3), "hook": Payload(command)}, folder / "evil.pt")
    files["pt"] = folder / "evil.pt"
    return files


def torch_classifier(path: Path) -> Any:
    """A TorchScript 4 → 3 softmax MLP (saved to `path`), returned for in-process predictions."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3), torch.nn.Softmax(dim=1))
    scripted = torch.jit.script(net.eval())
    torch.jit.save(scripted, str(path))
    return scripted


def torch_state_dict(path: Path) -> Path:
    """A bare state dict: weights without an architecture (refused: it cannot be served)."""
    import torch

    torch.save(torch.nn.Linear(4, 3).state_dict(), path)
    return path


def hog_model(path: Path) -> Path:
    """TorchScript 2 → 1: input [n, 0] allocates n × 4 MiB, [0, n] runs n dependent 200×200 matrix
    products, anything else answers the sum."""
    import torch

    class Hog(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            megabytes = int(x[0, 0].item())
            if megabytes > 0:
                big = torch.ones(megabytes, 1024, 1024)
                return big.sum().reshape(1, 1).expand(x.shape[0], 1)
            spins = int(x[0, 1].item())
            acc = torch.zeros(200, 200)
            ones = torch.ones(200, 200)
            for _ in range(spins):  # each step needs the last: the JIT cannot hoist it out of the loop
                acc = torch.tanh(torch.mm(acc, ones) + 1)
            return x.sum(dim=1, keepdim=True) + acc[0, 0] * 0

    torch.jit.save(torch.jit.script(Hog()), str(path))
    return path


def keras_classifier(path: Path) -> Any:
    """A Keras 3 (torch backend) 4 → 3 softmax model saved as `.keras`, returned for in-process predictions."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.save(path)
    return model
