"""Datasets: streamed upload with light validation, and the analyze_dataset flow on planted data."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from weft.datasets.synthetic import write_jsonl
from weft.db import session_scope
from weft.settings import get_settings
from weft.storage import get_storage
from weft.tables import Dataset, Model

PLANTED = dict(exact_duplicates=5, near_duplicates=4, missing_tools=7, missing_vehicle_type=4, outliers=3)


@pytest.fixture(scope="module")
def client(db):
    from api.main import create_app

    with TestClient(create_app()) as c:
        yield c


@pytest.fixture(scope="module")
def user(client) -> tuple[dict[str, str], str]:
    name = f"ds{uuid.uuid4().hex[:8]}"
    r = client.post("/api/v1/auth/register", json={"email": f"{name}@example.com", "username": name,
                                                     "password": "long-enough-pw"})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}, r.json()["user"]["id"]


@pytest.fixture(scope="module")
def automotive(tmp_path_factory) -> tuple[Path, object]:
    path = tmp_path_factory.mktemp("data") / "service_procedures.jsonl"
    return path, write_jsonl(path, 1000, **PLANTED)


def upload(client, headers, name: str, filename: str, content: bytes):
    return client.post("/api/v1/datasets/upload", headers=headers, data={"name": name, "description": "test"},
                       files={"file": (filename, io.BytesIO(content), "application/octet-stream")})


def test_jsonl_upload_becomes_ready_with_count_and_fingerprint(client, user, automotive):
    headers, _ = user
    path, planted = automotive
    r = upload(client, headers, "Maintenance Procedures", "procedures.jsonl", path.read_bytes())
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "processing" and r.json()["file_type"] == "jsonl"
    ds = client.get(f"/api/v1/datasets/{r.json()['id']}", headers=headers).json()  # validation ran after the reply
    assert ds["status"] == "ready" and ds["record_count"] == planted.records
    assert ds["fingerprint"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ds["size_bytes"] == path.stat().st_size


def test_malformed_jsonl_reports_the_line(client, user):
    headers, _ = user
    lines = [json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) for i in range(100)]
    lines[56] = '{"prompt": "broken", "completion": '
    r = upload(client, headers, "broken", "broken.jsonl", "\n".join(lines).encode())
    ds = client.get(f"/api/v1/datasets/{r.json()['id']}", headers=headers).json()
    assert ds["status"] == "error" and "line 57" in ds["error"]


def test_oversize_upload_is_413_and_leaves_nothing(client, user, monkeypatch):
    headers, _ = user
    monkeypatch.setattr(get_settings(), "max_upload_mb", 1)
    before = get_storage().list("datasets")
    with session_scope() as s:
        rows = len(s.exec(select(Dataset)).all())
    r = upload(client, headers, "big", "big.jsonl", b'{"text": "x"}\n' * 200_000)
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert get_storage().list("datasets") == before
    with session_scope() as s:
        assert len(s.exec(select(Dataset)).all()) == rows


def test_oversize_body_without_declared_length_is_cut_while_streaming(tmp_path):
    from weft.datasets.uploads import TooLarge, store_upload
    from weft.storage import Storage

    storage = Storage(tmp_path.as_uri())
    with pytest.raises(TooLarge):
        store_upload(io.BytesIO(b"x" * 5000), "datasets/a/a.jsonl", cap=4096, storage=storage)
    assert storage.list("datasets") == []


def test_unsupported_extension_is_415(client, user):
    headers, _ = user
    r = upload(client, headers, "doc", "notes.docx", b"hello")
    assert r.status_code == 415 and r.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_csv_parquet_and_json_arrays(client, user, fmt: str, tmp_path: Path):
    headers, _ = user
    frame = pd.DataFrame({"instruction": [f"do {i}" for i in range(30)], "output": [f"done {i}" for i in range(30)]})
    path = tmp_path / f"d.{fmt}"
    {"csv": lambda: frame.to_csv(path, index=False), "parquet": lambda: frame.to_parquet(path),
     "json": lambda: frame.to_json(path, orient="records")}[fmt]()
    r = upload(client, headers, fmt, path.name, path.read_bytes())
    ds = client.get(f"/api/v1/datasets/{r.json()['id']}", headers=headers).json()
    assert (ds["status"], ds["record_count"], ds["file_type"]) == ("ready", 30, fmt)


def test_list_delete_and_privacy(client, user):
    headers, _ = user
    other = client.post("/api/v1/auth/register", json={"email": "dsother@example.com", "username": "dsother",
                                                        "password": "long-enough-pw"}).json()["access_token"]
    r = upload(client, headers, "to delete", "x.jsonl", b'{"text": "a"}\n{"text": "b"}\n')
    ds_id = r.json()["id"]
    page = client.get("/api/v1/datasets", params={"limit": 1}, headers=headers).json()
    assert page["meta"]["limit"] == 1 and page["meta"]["total"] >= 1 and len(page["data"]) == 1
    assert client.get(f"/api/v1/datasets/{ds_id}", headers={"Authorization": f"Bearer {other}"}).status_code == 404
    assert client.delete(f"/api/v1/datasets/{ds_id}", headers=headers).status_code == 204
    assert client.get(f"/api/v1/datasets/{ds_id}", headers=headers).status_code == 404
    assert not get_storage().exists(f"datasets/{ds_id}")


def test_analysis_finds_the_planted_numbers(client, user, automotive, prefect_server, tiny_model_dir: Path):
    from flows.analyze_dataset import analyze_dataset
    from weft.specs.datasets import AnalyzeDatasetSpec

    headers, user_id = user
    path, planted = automotive
    ds_id = upload(client, headers, "Maintenance Procedures", "procedures.jsonl", path.read_bytes()).json()["id"]
    model = Model(user_id=user_id, name="tiny", provider_type="disk", details={"context_length": 256})
    storage = get_storage()
    storage.put_dir(tiny_model_dir, f"models/{model.id}")
    model.storage_uri = storage.url(f"models/{model.id}")
    with session_scope() as s:
        s.add(model)

    spec = AnalyzeDatasetSpec(dataset_id=ds_id, model_id=model.id, validation_split=0.2)
    state = analyze_dataset(spec=spec, owner_id=user_id, return_state=True)
    assert state.is_completed(), state.message
    body = client.get(f"/api/v1/datasets/{ds_id}/analysis", headers=headers).json()
    a = body["analysis"]
    assert a["record_count"] == planted.records
    assert a["quality_issues"] == {"missing_values": planted.missing_values, "duplicates": planted.exact_duplicates,
                                   "near_duplicates": planted.near_duplicates, "outliers": planted.outliers}
    assert a["missing_by_field"] == {"tools": planted.missing_tools, "vehicle_type": planted.missing_vehicle_type}
    stats = a["field_stats"]
    assert stats["vehicle_type"]["type"] == "string" and stats["vehicle_type"]["unique_values"] == 8
    assert len(stats["procedure"]["most_common"]) == 3
    assert stats["steps"]["type"] == "array" and stats["steps"]["min_length"] == 3
    assert stats["steps"]["max_length"] == 250 and stats["steps"]["avg_length"] > 3
    assert a["format"] == "custom"
    tokens = a["token_lengths"]
    assert tokens["records"] == planted.records and not tokens["sampled"] and tokens["context_length"] == 256
    assert tokens["p50"] <= tokens["p95"] <= tokens["max"] and tokens["over_context"] >= planted.outliers
    checks = a["expectations"]
    failed = {r["column"]: r["unexpected_count"] for r in checks["results"] if not r["success"]}
    assert failed == {"tools": planted.missing_tools, "vehicle_type": planted.missing_vehicle_type}
    recs = "\n".join(a["recommendations"])
    assert f"Remove {planted.exact_duplicates} duplicate records" in recs
    assert f"Review {planted.near_duplicates} near-duplicate records" in recs
    assert f"Fill missing values in 'tools' field ({planted.missing_tools} of {planted.records} records)" in recs
    assert f"Inspect {planted.outliers} length outliers" in recs
    assert "exceed the model context of 256 tokens" in recs
    splits = body["splits"]
    assert splits["train_records"] + splits["validation_records"] == planted.records
    assert 0.1 < splits["validation_records"] / planted.records < 0.3
    assert len(storage.read_bytes(splits["validation_key"]).splitlines()) == splits["validation_records"]

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as c:
        arts = c.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    kinds = {art.type for art in arts}
    assert {"markdown", "table", "progress"} <= kinds
    report = next(art.data for art in arts if art.type == "markdown")
    assert f"Remove {planted.exact_duplicates} duplicate records" in report


def test_analysis_of_a_dataset_that_is_not_ready_fails_at_the_step(client, user):
    headers, _ = user
    r = upload(client, headers, "broken2", "broken2.jsonl", b'{"a": 1}\n{oops\n')
    step = client.post("/api/v1/datasets/analyze-workflow", headers=headers,
                       json={"workflow_total_steps": 2, "step_number": 1, "dataset_id": r.json()["id"]})
    assert step.status_code == 422 and "line 2" in json.dumps(step.json())


def test_analyze_and_fine_tune_accept_a_dataset_still_being_validated(client, user, fake_trigger,
                                                                       tiny_model_dir: Path):
    """Document 000's order: the upload answers `processing` and analyze (or a job) follows at once."""
    from weft.testing.registry import register_dataset, register_model

    headers, user_id = user
    ds_id = register_dataset(user_id, "fresh", [{"prompt": "q", "completion": "a"}] * 3, status="processing")
    r = client.post(f"/api/v1/datasets/{ds_id}/analyze", headers=headers)
    assert r.status_code in (200, 202), r.text
    assert fake_trigger[-1][0] == "analyze_dataset" and fake_trigger[-1][2]["dataset_id"] == ds_id
    job = {"base_model": register_model(user_id, tiny_model_dir), "dataset_id": ds_id, "max_steps": 1}
    r = client.post("/api/v1/jobs", headers=headers, json={"config": job})
    assert r.status_code == 201, r.text
    assert fake_trigger[-1][0] == "fine_tune" and fake_trigger[-1][2]["dataset_id"] == ds_id


def test_the_first_step_waits_for_the_upload_validation(client, user, prefect_server):
    import threading

    from flows.analyze_dataset import analyze_dataset
    from weft.datasets.uploads import validate_dataset
    from weft.specs.datasets import AnalyzeDatasetSpec
    from weft.testing.registry import register_dataset

    headers, user_id = user
    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(20)]
    ok, bad = (register_dataset(user_id, name, rows, status="processing") for name in ("validating", "broken3"))
    with session_scope() as s:
        get_storage().write_bytes(s.get(Dataset, bad).storage_key, b'{"a": 1}\n{oops\n')
    for ds_id in (ok, bad):
        threading.Timer(1.0, validate_dataset, [ds_id]).start()

    state = analyze_dataset(spec=AnalyzeDatasetSpec(dataset_id=ok), owner_id=user_id, return_state=True)
    assert state.is_completed(), state.message
    assert client.get(f"/api/v1/datasets/{ok}/analysis", headers=headers).json()["analysis"]["record_count"] == 20
    state = analyze_dataset(spec=AnalyzeDatasetSpec(dataset_id=bad), owner_id=user_id, return_state=True)
    assert state.is_failed()
    assert f"dataset {bad} failed validation" in state.message and "line 2" in state.message


def test_waiting_for_validation_is_bounded(user, monkeypatch):
    from weft.datasets.uploads import wait_until_validated
    from weft.testing.registry import register_dataset

    _, user_id = user
    ds_id = register_dataset(user_id, "stuck", [{"text": "a"}], status="processing")
    monkeypatch.setattr(get_settings(), "dataset_ready_timeout_seconds", 0.3)
    waits: list[float] = []
    with pytest.raises(ValueError, match="still being validated after 0.3 s .WEFT_DATASET_READY_TIMEOUT_SECONDS"):
        wait_until_validated(ds_id, poll=0.05, on_wait=waits.append)
    assert waits == [0.3]
    with pytest.raises(ValueError, match="does not exist"):
        wait_until_validated("no-such-dataset")
