"""Security scan over a corpus of benign and malicious model files; no payload ever runs."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import time
import uuid
from pathlib import Path

import pytest

from weft.db import session_scope
from weft.scan.isolated import run_isolated
from weft.storage import get_storage
from weft.tables import Model, User

CANARY = Path(os.environ.get("TMPDIR", "/tmp")) / f"weft-canary-{uuid.uuid4().hex}"


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {CANARY}",))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_model_dir: Path) -> Path:
    import joblib
    import torch

    root = tmp_path_factory.mktemp("corpus")
    torch.save({"w": torch.zeros(3)}, root / "benign.pt")
    with (root / "evil.pkl").open("wb") as fh:
        pickle.dump(Payload(), fh)
    torch.save({"w": Payload()}, root / "evil.pt")
    torch.save({"w": Payload()}, root / "legacy.bin", _use_new_zipfile_serialization=False)
    joblib.dump({"model": Payload()}, root / "model.joblib")
    data = (tiny_model_dir / "model.safetensors").read_bytes()
    (root / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_len])
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [d * 2 for d in header[name]["shape"]]  # a header that lies about a tensor
    lying = json.dumps(header).encode()
    (root / "lying.safetensors").write_bytes(len(lying).to_bytes(8, "little") + lying + data[8 + header_len:])
    (root / "not.gguf").write_bytes(b"NOPE" + b"\0" * 64)
    code = root / "remote_code"
    shutil.copytree(tiny_model_dir, code)
    (code / "modeling_evil.py").write_text("import os\nos.system('echo hi')\n")
    config = json.loads((code / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (code / "config.json").write_text(json.dumps(config))
    return root


@pytest.mark.parametrize("name, kind, severity", [
    ("benign.pt", "pickle", None),
    ("evil.pkl", "pickle", "CRITICAL"),
    ("evil.pt", "pickle", "CRITICAL"),
    ("legacy.bin", "pickle", "CRITICAL"),  # modelscan 0.8 misses this one; picklescan catches it
    ("model.joblib", "pickle", "CRITICAL"),
    ("truncated.safetensors", "safetensors", "HIGH"),
    ("lying.safetensors", "safetensors", "HIGH"),
    ("not.gguf", "gguf", "HIGH"),
])
def test_each_file_gets_its_severity(corpus: Path, name: str, kind: str, severity: str | None):
    issues = run_isolated(kind, corpus / name, name)
    assert [i.severity for i in issues][:1] == ([severity] if severity else [])
    assert not CANARY.exists()


def test_benign_safetensors_and_tiny_gguf_are_clean(tiny_model_dir: Path, tiny_gguf_file: Path):
    assert run_isolated("safetensors", tiny_model_dir / "model.safetensors", "model.safetensors") == []
    assert run_isolated("gguf", tiny_gguf_file, tiny_gguf_file.name) == []


def test_a_scanner_that_hangs_is_a_scan_error_not_a_pass(corpus: Path):
    [issue] = run_isolated("pickle", corpus / "evil.pkl", "evil.pkl", timeout=0.01)
    assert issue.title == "Scan error" and issue.severity == "HIGH" and "timed out" in issue.description


def stored_model(owner: str, files: list[Path], folder: Path | None = None) -> str:
    model = Model(user_id=owner, name=f"scan-{uuid.uuid4().hex[:6]}", provider_type="disk")
    storage = get_storage()
    if folder is not None:
        storage.put_dir(folder, f"models/{model.id}")
    for f in files:
        storage.write_bytes(f"models/{model.id}/{f.name}", f.read_bytes())
    model.storage_uri = storage.url(f"models/{model.id}")
    with session_scope() as s:
        s.add(model)
    return model.id


@pytest.fixture(scope="module")
def owner(db) -> str:
    user = User(email=f"{uuid.uuid4().hex[:8]}@example.com", username=uuid.uuid4().hex[:10], password_hash="x")
    with session_scope() as s:
        s.add(user)
    return user.id


def scan(model_id: str, owner: str):
    from flows.model_security_scan import model_security_scan
    from weft.specs.scanning import ScanSpec

    state = model_security_scan(spec=ScanSpec(model_id=model_id), owner_id=owner, return_state=True)
    assert state.is_completed(), state.message
    with session_scope() as s:
        return s.get(Model, model_id), state


def test_flow_rolls_up_a_malicious_folder(prefect_server, corpus: Path, owner: str):
    names = ["benign.pt", "evil.pkl", "legacy.bin", "truncated.safetensors"]
    model, _ = scan(stored_model(owner, [corpus / n for n in names], folder=corpus / "remote_code"), owner)
    result = model.scan
    assert result["status"] == "CRITICAL" and model.scan_verified is False
    assert result["total_issues_by_severity"] == {"LOW": 0, "MEDIUM": 2, "HIGH": 1, "CRITICAL": 2}
    assert result["total_issues"] == 5 and result["model_issues"][0]["severity"] == "CRITICAL"
    assert set(result["scanned_files"]) >= set(names) | {"model.safetensors", "modeling_evil.py"}
    assert result["total_skipped_files"] >= 3  # config, tokenizer files, card
    assert {i["source"] for i in result["model_issues"] if i["severity"] == "MEDIUM"} == {"config.json",
                                                                                          "modeling_evil.py"}
    assert not CANARY.exists()


def test_benign_model_is_safe_and_a_rescan_is_a_cache_hit(prefect_server, tiny_model_dir: Path, owner: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    model_id = stored_model(owner, [], folder=tiny_model_dir)
    model, _ = scan(model_id, owner)
    assert model.scan["status"] == "SAFE" and model.scan_verified and model.scan["total_issues"] == 0
    assert model.scan["file_hashes"]["model.safetensors"]
    _, again = scan(model_id, owner)  # a new workflow, same files
    deadline = time.monotonic() + 15  # task-run states reach the server as events, a moment after the run
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(
                any_=[again.state_details.flow_run_id])))
        if all(r.state is not None for r in runs) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    states = {r.name.rsplit("-", 1)[0]: r.state.name for r in runs}
    assert {states[n] for n in ("scan_pickles", "validate_safetensors", "detect_code", "check_gguf")} == {"Cached"}


def test_override_and_deploy_gate(db, owner: str):
    from fastapi.testclient import TestClient

    from api.main import create_app
    from weft.scan.gate import NotDeployable, check_deployable

    with TestClient(create_app()) as client:
        r = client.post("/api/v1/auth/register", json={"email": "gate@example.com", "username": "gatekeeper",
                                                         "password": "long-enough-pw"})
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        user_id = r.json()["user"]["id"]
        model = Model(user_id=user_id, name="risky", provider_type="disk", storage_uri="file:///x",
                      scan={"status": "HIGH", "total_issues": 1, "model_issues": []}, scan_verified=False)
        with session_scope() as s:
            s.add(model)
        with pytest.raises(NotDeployable, match="HIGH"):
            check_deployable(model)
        scan_view = client.get(f"/api/v1/models/{model.id}/security-scan", headers=headers).json()
        assert scan_view["status"] == "HIGH" and scan_view["scan_verified"] is False
        assert client.post(f"/api/v1/models/{model.id}/security-scan/override", headers=headers,
                           json={"reason": "no"}).status_code == 422
        r = client.post(f"/api/v1/models/{model.id}/security-scan/override", headers=headers,
                        json={"reason": "internal test model, reviewed by hand"})
        assert r.status_code == 200 and r.json()["scan_override"]["user_id"] == user_id
        with session_scope() as s:
            assert "overridden by gatekeeper" in check_deployable(s.get(Model, model.id))
