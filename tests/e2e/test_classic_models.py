"""Classic-model deployments (document 001) on the real stack: uploads of scikit-learn, TorchScript and
Keras 3 models are scanned, get their own uv environment and serve predictions equal to the model run
in-process; payloads are refused before anything loads them; a bad requirement, an out-of-memory or
overlong prediction each get a clear error; versions and rollback go through the control plane.

All uploads start at once (one `deployed` fixture) so their builds overlap; each test waits for its own."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers.e2e import register
from tests.helpers.receiver import Receiver
from weft.testing import classic_models as cm

pytestmark = pytest.mark.e2e
STACK_SETTINGS = {"replica_drain_seconds": 1, "revision_drain_seconds": 5, "rate_limit_per_minute": 1_000_000}
SKLEARN = cm.pinned("scikit-learn", "numpy", "scipy", "joblib", "threadpoolctl")
TORCH = cm.pinned("torch", "numpy")
KERAS = cm.pinned("keras", "torch", "numpy", "h5py")
EVENTS = ["deployment.created", "deployment.building", "deployment.ready", "deployment.failed",
          "deployment.deleted", "prediction.error"]


def deploy(api: httpx.Client, headers: dict, model: Path, requirements: str, **form) -> dict:
    r = api.post("/api/v1/deploy", headers=headers, data={k: str(v) for k, v in form.items()},
                 files={"model_file": (model.name, model.read_bytes()),
                        "requirements_file": ("requirements.txt", requirements.encode())})
    assert r.status_code == 202, r.text
    return r.json()


def settled(api: httpx.Client, headers: dict, deployment_id: str, timeout: float = 420) -> dict:
    """The deployment once it is active or failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api.get(f"/api/v1/deployments/{deployment_id}", headers=headers).json()
        if body["status"] in ("active", "failed"):
            return body
        time.sleep(1)
    raise AssertionError(f"deployment {deployment_id} is still {body['status']}: {body.get('events', [])[:5]}")


def predict(api: httpx.Client, headers: dict, deployment_id: str, data) -> httpx.Response:
    return api.post(f"/api/v1/predict/{deployment_id}", headers=headers, json={"data": data})


@pytest.fixture(scope="module")
def user(api):
    return register(api, "classic")


@pytest.fixture(scope="module")
def hooks(api, user):
    receiver = Receiver()
    r = api.post("/api/v1/webhooks", headers=user, json={"url": receiver.url, "events": EVENTS, "secret": "s" * 16})
    assert r.status_code == 201, r.text
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classic")
    canary = folder / "CANARY"
    iris, x = cm.iris()
    iris_v2, _ = cm.iris(shuffle_labels=True)
    return {"folder": folder, "canary": canary, "x": x, "iris": iris, "iris_v2": iris_v2,
            "iris_pkl": cm.write_pickle(iris, folder / "iris.pkl"),
            "iris_v2_pkl": cm.write_pickle(iris_v2, folder / "iris-v2.pkl"),
            "torch": cm.torch_classifier(folder / "mlp.pt"), "torch_pt": folder / "mlp.pt",
            "keras": cm.keras_classifier(folder / "mlp.keras"), "keras_file": folder / "mlp.keras",
            "hog": cm.hog_model(folder / "hog.pt"), "state_dict": cm.torch_state_dict(folder / "weights.pth"),
            "payloads": cm.payload_files(folder, canary)}


@pytest.fixture(scope="module")
def deployed(api, user, hooks, files):
    """Every upload at once; the 202 bodies by name."""
    started = {
        "iris": deploy(api, user, files["iris_pkl"], SKLEARN, name="iris-classifier"),
        "torch": deploy(api, user, files["torch_pt"], TORCH, name="torch-mlp"),
        "keras": deploy(api, user, files["keras_file"], KERAS, name="keras-mlp"),
        "hog": deploy(api, user, files["hog"], TORCH, name="hog", memory=768, timeout=2),
        "state_dict": deploy(api, user, files["state_dict"], TORCH, name="state-dict"),
        "missing_package": deploy(api, user, files["iris_pkl"], "weft-no-such-package-3141==1.0\n",
                                  name="missing-package"),
    }
    for kind, path in files["payloads"].items():
        started[f"evil_{kind}"] = deploy(api, user, path, SKLEARN if kind != "pt" else TORCH, name=f"evil-{kind}")
    return started


def test_the_upload_answers_at_once_in_document_001s_shape(deployed):
    body = deployed["iris"]
    assert body["status"] == "building" and body["name"] == "iris-classifier" and body["version"] == "v1"
    assert body["model_metadata"]["framework"] == "sklearn" and body["model_metadata"]["size_mb"] > 0
    assert body["endpoint_url"].endswith(f"/api/v1/predict/{body['id']}")


def test_a_scikit_learn_pickle_serves_what_the_model_predicts(api, user, deployed, files, hooks):
    dep = settled(api, user, deployed["iris"]["id"])
    assert dep["status"] == "active", dep["reason"]
    meta = dep["model_metadata"]
    assert (meta["framework"], meta["model_type"], meta["input_shape"], meta["output_shape"]) == (
        "sklearn", "RandomForestClassifier", [4], [3])
    model, x = files["iris"], files["x"]
    single = predict(api, user, dep["id"], x[0].tolist())
    assert single.status_code == 200, single.text
    one = single.json()
    assert one["prediction"] == model.predict(x[:1])[0] and one["model_version"] == "v1"
    assert np.allclose(one["probabilities"], model.predict_proba(x[:1])[0]) and one["response_time_ms"] > 0
    batch = predict(api, user, dep["id"], x[::10].tolist()).json()
    assert batch["predictions"] == model.predict(x[::10]).tolist() and batch["batch_size"] == len(x[::10])
    assert np.allclose(batch["probabilities"], model.predict_proba(x[::10]))
    named = api.post("/api/v1/test-model", headers=user, json={"deployment_id": dep["id"], "data": {
        "sepal_length": 6.2, "sepal_width": 3.4, "petal_length": 5.4, "petal_width": 2.3}})
    assert named.status_code == 200 and named.json()["prediction"] == model.predict([[6.2, 3.4, 5.4, 2.3]])[0]

    time.sleep(1)  # records are written just after the responses
    metrics = api.get(f"/api/v1/metrics/{dep['id']}", headers=user).json()["metrics"]
    assert metrics["request_count"] >= 3 and metrics["error_count"] == 0
    me = api.get("/api/v1/auth/me", headers=user).json()
    assert me["total_predictions"] >= 3 and me["deployment_count"] >= 1
    listed = api.get("/api/v1/deployments", headers=user, params={"framework": "sklearn", "status": "active"}).json()
    assert [d["id"] for d in listed["items"]] == [d["id"] for d in listed["deployments"]]
    assert dep["id"] in [d["id"] for d in listed["items"]] and listed["total"] >= 1 and listed["limit"] == 20
    item = next(d for d in listed["items"] if d["id"] == dep["id"])
    assert item["deployment_id"] == dep["id"] and item["endpoint_url"] == deployed["iris"]["endpoint_url"]
    assert item["metrics_summary"]["total_predictions"] >= 3 and item["configuration"]["memory_mb"] == 1024
    wanted, deadline = {"deployment.created", "deployment.building", "deployment.ready"}, time.monotonic() + 30
    while not wanted <= (seen := {r["headers"].get("X-Weft-Event") for r in hooks.requests
                                  if dep["id"] in r["body"].decode()}):
        assert time.monotonic() < deadline, f"webhooks delivered for {dep['id']}: {seen}"
        time.sleep(0.5)
    ready = next(json.loads(r["body"]) for r in hooks.of_type("deployment.ready") if dep["id"] in r["body"].decode())
    assert ready["event"] == "deployment.ready" and ready["timestamp"]
    assert ready["data"]["name"] == "iris-classifier" and ready["data"]["endpoint_url"] == dep["endpoint_url"]


def test_document_001s_four_input_errors(api, user, deployed):
    dep_id = settled(api, user, deployed["iris"]["id"])["id"]
    unauthorized = api.post(f"/api/v1/predict/{dep_id}", json={"data": [1, 2, 3, 4]})
    assert unauthorized.status_code == 401 and unauthorized.json()["error"]["code"] == "UNAUTHORIZED"
    assert unauthorized.json()["request_id"]
    missing = predict(api, user, "dep-does-not-exist", [1, 2, 3, 4])
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    wrong = predict(api, user, dep_id, [1, 2, 3])
    assert wrong.status_code == 400, wrong.text
    error = wrong.json()["error"]
    assert error["code"] == "INVALID_INPUT" and error["details"]["field"] == "data" and "4" in error["details"]["reason"]
    words = predict(api, user, dep_id, ["a", "b", "c", "d"])
    assert words.status_code == 400 and words.json()["error"]["code"] == "INVALID_INPUT"
    no_data = api.post(f"/api/v1/predict/{dep_id}", headers=user, json={"rows": [1, 2, 3, 4]})
    assert no_data.status_code == 422 and no_data.json()["error"]["code"] == "VALIDATION_ERROR"


def test_torchscript_and_keras_models_serve_what_they_compute(api, user, deployed, files):
    x = files["x"][::15].astype("float32")
    import torch

    for name, expected in (("torch", files["torch"](torch.from_numpy(x)).detach().numpy()),
                           ("keras", np.asarray(files["keras"].predict(x, verbose=0)))):
        dep = settled(api, user, deployed[name]["id"])
        assert dep["status"] == "active", (name, dep["reason"])
        assert dep["model_metadata"]["input_shape"] == [4] and dep["model_metadata"]["output_shape"] == [3]
        body = predict(api, user, dep["id"], x.tolist()).json()
        assert np.allclose(body["probabilities"], expected, atol=1e-5), name
        assert body["predictions"] == expected.argmax(axis=1).tolist()


def test_a_state_dict_is_refused_with_what_to_upload_instead(api, user, deployed):
    dep = settled(api, user, deployed["state_dict"]["id"])
    assert dep["status"] == "failed" and "torch.jit" in dep["reason"], dep["reason"]


@pytest.mark.parametrize("kind", ["pkl", "joblib", "pt"])
def test_a_payload_is_refused_before_anything_loads_it(api, user, deployed, files, hooks, kind):
    dep = settled(api, user, deployed[f"evil_{kind}"]["id"])
    assert dep["status"] == "failed" and "security scan refused" in dep["reason"], dep["reason"]
    assert "system" in dep["reason"] and "CRITICAL" in dep["reason"]
    assert not files["canary"].exists(), "the payload ran"
    assert any(dep["id"] in r["body"].decode() for r in hooks.of_type("deployment.failed"))


def test_a_requirement_that_does_not_exist_fails_with_the_installers_message(api, user, deployed):
    dep = settled(api, user, deployed["missing_package"]["id"])
    assert dep["status"] == "failed" and "weft-no-such-package-3141" in dep["reason"], dep["reason"]
    assert "not found in the package registry" in dep["reason"]
    assert not dep["workers"]  # no replica was ever started


def replica_ids(api, user, dep_id: str) -> set[str]:
    return {w["id"] for w in api.get(f"/api/v1/deployments/{dep_id}", headers=user).json()["workers"]
            if w["state"] == "healthy"}


def replaced(api, user, dep_id: str, old: set[str], timeout: float = 120) -> set[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = replica_ids(api, user, dep_id)
        if now and not now & old:
            return now
        time.sleep(1)
    raise AssertionError(f"the replicas {old} of {dep_id} were not replaced")


def test_memory_and_time_limits_answer_each_request_and_replace_the_replica(api, user, deployed, hooks):
    dep = settled(api, user, deployed["hog"]["id"])
    assert dep["status"] == "active", dep["reason"]
    assert dep["configuration"]["memory_mb"] == 768 and dep["configuration"]["timeout_seconds"] == 2
    assert predict(api, user, dep["id"], [0.0, 3.0]).json()["prediction"] == pytest.approx(3.0)  # 3 quick spins
    before = replica_ids(api, user, dep["id"])
    hog = predict(api, user, dep["id"], [2048.0, 0.0])  # 8 GiB
    assert hog.status_code == 500, hog.text
    assert hog.json()["error"]["code"] == "PREDICTION_ERROR" and hog.json()["error"]["details"]["reason"] == "memory"
    assert api.get("/api/v1/status").status_code == 200  # the API is unharmed
    after = replaced(api, user, dep["id"], before)
    slow = predict(api, user, dep["id"], [0.0, 100_000.0])  # minutes of work
    assert slow.status_code == 500 and slow.json()["error"]["details"]["reason"] == "timeout", slow.text
    replaced(api, user, dep["id"], after)
    assert predict(api, user, dep["id"], [0.0, 2.0]).json()["prediction"] == pytest.approx(2.0)
    deadline = time.monotonic() + 30  # recorded after the response, then delivered
    while not any(dep["id"] in r["body"].decode() for r in hooks.of_type("prediction.error")):
        assert time.monotonic() < deadline, "prediction.error was not delivered"
        time.sleep(0.5)


def test_a_second_version_takes_over_and_rollback_brings_the_first_back(api, user, deployed, files):
    dep_id = settled(api, user, deployed["iris"]["id"])["id"]
    x = files["x"][::7]
    v1, v2 = files["iris"].predict(x).tolist(), files["iris_v2"].predict(x).tolist()
    assert v1 != v2
    model, requirements = files["iris_v2_pkl"], SKLEARN
    r = api.post(f"/api/v1/deployments/{dep_id}/versions", headers=user, data={"changes": "trained on other labels"},
                 files={"model_file": (model.name, model.read_bytes()),
                        "requirements_file": ("requirements.txt", requirements.encode())})
    assert r.status_code == 202 and r.json()["version"] == "v2", r.text
    deadline = time.monotonic() + 300
    while (body := predict(api, user, dep_id, x.tolist()).json()).get("model_version") != "v2":
        assert time.monotonic() < deadline, body
        time.sleep(1)
    assert body["predictions"] == v2
    versions = api.get(f"/api/v1/deployments/{dep_id}/versions", headers=user).json()["versions"]
    assert [(v["version"], v["is_current"]) for v in versions] == [("v2", True), ("v1", False)]
    assert versions[0]["changes"] == "trained on other labels"
    assert api.post(f"/api/v1/deployments/{dep_id}/rollback", headers=user, json={"version": "v1"}).status_code == 200
    deadline = time.monotonic() + 120  # v1 drained once v2 took over: the first request waits for its cold start
    while (first := predict(api, user, dep_id, x.tolist())).status_code == 503:
        assert time.monotonic() < deadline, first.text
    assert first.json()["model_version"] == "v1"
    answers = [predict(api, user, dep_id, x.tolist()).json() for _ in range(5)]
    assert all(a["model_version"] == "v1" and a["predictions"] == v1 for a in answers), answers


def test_deleting_a_deployment_stops_its_replicas(api, user, deployed, hooks):
    dep = settled(api, user, deployed["keras"]["id"])
    gone = api.delete(f"/api/v1/deployments/{dep['id']}", headers=user)
    assert gone.status_code == 200 and gone.json()["id"] == dep["id"], gone.text
    deadline = time.monotonic() + 60
    while (body := api.get(f"/api/v1/deployments/{dep['id']}", headers=user).json())["status"] != "deleted":
        assert time.monotonic() < deadline, body["status"]
        time.sleep(0.5)
    assert all(w["state"] == "stopped" for w in body["workers"])
    assert predict(api, user, dep["id"], [0.0, 0.0, 0.0, 0.0]).status_code == 503
    while not any(dep["id"] in r["body"].decode() for r in hooks.of_type("deployment.deleted")):
        assert time.monotonic() < deadline + 30, "deployment.deleted was not delivered"
        time.sleep(0.5)
