"""The registry in-process (documents 000, 002, 003): filters, both paging styles, sort/order/fields, the record
with files and signed links, the streamed ZIP, create/update/delete and the adapters list."""

from __future__ import annotations

import io
import json
import time
import zipfile
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from tests.helpers.api import assert_error, me
from tests.helpers.registry import ADAPTER_BYTES, GGUF_BYTES, registry
from weft.db import session_scope
from weft.registry import links
from weft.storage import get_storage
from weft.tables import Adapter, Endpoint, Model


@pytest.fixture
def alice(client: TestClient, auth_headers) -> tuple[dict[str, str], dict[str, str]]:
    headers = auth_headers()
    return headers, registry(me(client, headers)["id"])


def names(client, headers, **params) -> list[str]:
    r = client.get("/api/v1/models", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return [m["name"] for m in r.json()["data"]]


def test_every_filter(client, alice):
    headers, ids = alice
    base = client.get(f"/api/v1/models/{ids['base']}", headers=headers).json()["name"]
    assert names(client, headers) == ["q-advisor", "advisor", base]
    assert names(client, headers, base_model=base) == ["q-advisor", "advisor"]
    assert names(client, headers, base_model=ids["base"]) == ["q-advisor", "advisor"]  # by id too
    assert names(client, headers, status="ready") == names(client, headers, status="active") == \
        ["q-advisor", "advisor", base]
    assert names(client, headers, status="error") == []
    assert names(client, headers, type="lora") == ["advisor"]
    assert names(client, headers, type="qlora") == ["q-advisor"]
    assert names(client, headers, type="base") == [base]
    assert names(client, headers, job_id=ids["job"]) == ["advisor"]
    assert names(client, headers, date_from="2026-11-06") == ["q-advisor", "advisor"]  # advisor: 11-06 12:00
    assert names(client, headers, date_to="2026-11-06") == ["advisor", base]  # the whole day
    assert names(client, headers, date_to="2026-11-05") == [base]
    assert names(client, headers, date_from="2026-11-04T00:00:00Z", date_to="2026-11-07") == ["advisor"]


def test_both_paging_styles_sort_and_fields(client, alice):
    headers, _ = alice
    page = client.get("/api/v1/models", params={"page": 2, "limit": 1}, headers=headers).json()
    assert (page["total"], page["page"], page["limit"]) == (3, 2, 1)
    assert page["meta"] == {"total": 3, "limit": 1, "offset": 1} and [m["name"] for m in page["data"]] == ["advisor"]
    assert names(client, headers, sort="name", order="asc")[:2] == ["advisor", names(client, headers)[2]]
    slim = client.get("/api/v1/models", params={"fields": "ID,name,job_id", "limit": 1}, headers=headers).json()
    assert slim["data"] == [{"ID": slim["data"][0]["ID"], "name": "q-advisor", "job_id": None}]
    item = client.get("/api/v1/models", params={"type": "lora"}, headers=headers).json()["data"][0]
    assert item["training_metrics"] == {"train_loss": 0.25} and item["gguf_path"].endswith("/gguf")


@pytest.mark.parametrize(("params", "parameter"), [
    ({"status": "bogus"}, None), ({"type": "gpt"}, "type"), ({"date_from": "last week"}, "date_from"),
    ({"date_from": "2026-11-09", "date_to": "2026-11-01"}, "date_from"), ({"page": 0}, "page"),
    ({"sort": "password"}, "sort"), ({"order": "sideways"}, "order"), ({"fields": "name,secret"}, "fields"),
])
def test_bad_filter_values_are_422(client, alice, params, parameter):
    headers, _ = alice
    error = assert_error(client.get("/api/v1/models", params=params, headers=headers), 422, "VALIDATION_ERROR")
    if parameter:
        assert error["details"]["parameter"] == parameter


def test_record_files_and_signed_links(client, alice, auth_headers):
    headers, ids = alice
    body = client.get(f"/api/v1/models/{ids['tuned']}", headers=headers).json()
    record = body["model"]
    assert record["ID"] == body["id"] == ids["tuned"] and record["job"]["id"] == ids["job"]
    assert record["job"]["dataset_id"] == "ds-1" and record["job"]["status"] == "completed"
    assert record["job"]["configuration"]["rank"] == 8
    assert record["eval_results"] == {"accuracy": 0.75, "f1_score": 0.7}
    assert record["training_metrics"] == {"train_loss": 0.25}
    assert body["files"] == {"lora_adapters/adapter_config.json": 8,
                             "lora_adapters/adapter_model.safetensors": len(ADAPTER_BYTES),
                             "gguf/model-q8_0.gguf": len(GGUF_BYTES)}
    assert record["lora_adapters_path"].startswith("adapters/") and record["gguf_path"] == f"exports/{ids['tuned']}/gguf"
    assert set(body["download_links"]) == {"lora_adapters", "gguf"}

    gguf = client.get(body["download_links"]["gguf"])  # no token
    assert gguf.status_code == 200 and gguf.content == GGUF_BYTES
    part = client.get(body["file_links"]["gguf/model-q8_0.gguf"], headers={"Range": "bytes=4-9"})
    assert part.status_code == 206 and part.content == GGUF_BYTES[4:10]
    folder = client.get(body["download_links"]["lora_adapters"])
    with zipfile.ZipFile(io.BytesIO(folder.content)) as z:
        assert z.read(f"{record['lora_adapters_path'].rsplit('/', 1)[-1]}/adapter_model.safetensors") == ADAPTER_BYTES

    url = urlsplit(body["download_links"]["gguf"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    tampered = url._replace(query=url.query.replace(query["signature"], "0" * 64)).geturl()
    assert_error(client.get(tampered), 403, "FORBIDDEN")
    other_key = client.get(url._replace(path=url.path.replace("model-q8_0", "model-f16")).geturl())
    assert_error(other_key, 403, "FORBIDDEN")
    key = f"exports/{ids['tuned']}/gguf/model-q8_0.gguf"
    expired = links.api_link("http://testserver", key, query["user"], seconds=60, now=time.time() - 3600)
    assert "expired" in assert_error(client.get(expired), 403, "FORBIDDEN")["message"]
    bob = me(client, auth_headers())["id"]
    # a valid signature for someone who does not own the file
    assert_error(client.get(links.api_link("http://testserver", key, bob)), 403, "FORBIDDEN")
    assert int(query["expires"]) - time.time() == pytest.approx(24 * 3600, abs=60)


def test_download_zip_layout_card_and_metrics(client, alice):
    headers, ids = alice
    head = client.head(f"/api/v1/models/{ids['tuned']}/download", headers=headers)
    assert head.status_code == 200 and head.headers["content-type"] == "application/zip"
    disposition = f"attachment; filename=model-{ids['tuned']}-{datetime.now(UTC):%Y%m%d}.zip"
    assert head.headers["content-disposition"] == disposition and not head.content
    with client.stream("GET", f"/api/v1/models/{ids['tuned']}/download", headers=headers) as r:
        assert r.status_code == 200 and r.headers["content-disposition"] == disposition
        data = b"".join(r.iter_bytes(8192))
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.testzip() is None
        root = ids["tuned"]
        assert sorted(z.namelist()) == sorted([f"{root}/lora_adapters/adapter_config.json",
                                               f"{root}/lora_adapters/adapter_model.safetensors",
                                               f"{root}/gguf/model-q8_0.gguf", f"{root}/metrics.json",
                                               f"{root}/README.md"])
        metrics = json.loads(z.read(f"{root}/metrics.json"))
        card = z.read(f"{root}/README.md").decode()
    assert metrics["training"] == {"train_loss": 0.25} and metrics["evaluation"]["fine_tuned"]["accuracy"] == 0.75
    front = card.split("---")[1]
    assert "base_model: " in front and "library_name: peft" in front and "license: apache-2.0" in front
    assert "- lora" in front and "- gguf" in front
    assert "| accuracy | 0.5 | 0.75 |" in card and "f" * 64 in card and "## Intended use" in card


def test_create_update_delete(client, alice, auth_headers):
    headers, ids = alice
    tuned = client.get(f"/api/v1/models/{ids['tuned']}", headers=headers).json()
    body = {"name": "My Custom Model", "description": "for sentiment", "base_model": "tiny", "type": "lora",
            "job_id": ids["job"], "storage_path": tuned["lora_adapters_path"],
            "lora_adapters_path": tuned["lora_adapters_path"], "gguf_path": tuned["gguf_path"], "status": "ready"}
    created = client.post("/api/v1/models", json=body, headers=headers)
    assert created.status_code == 201, created.text
    record = created.json()
    assert record["ID"] == record["id"] and record["status"] == "active" and record["job_id"] == ids["job"]
    assert record["type"] == "fine-tuned" and record["parameters"]["adapter_type"] == "lora"

    bob = auth_headers()
    assert_error(client.post("/api/v1/models", json=body, headers=bob), 422, "VALIDATION_ERROR")  # alice's job
    error = assert_error(client.post("/api/v1/models", json={**body, "job_id": None}, headers=bob), 403, "FORBIDDEN")
    assert "not storage you own" in error["message"]  # alice's folders
    assert_error(client.post("/api/v1/models", json={**body, "storage_path": "../../etc"}, headers=headers),
                 403, "FORBIDDEN")
    missing = {**body, "storage_path": f"exports/{ids['tuned']}/nothing-here"}
    assert_error(client.post("/api/v1/models", json=missing, headers=headers), 422, "VALIDATION_ERROR")
    assert_error(client.post("/api/v1/models", json={**body, "type": "gpt"}, headers=headers), 422, "VALIDATION_ERROR")
    assert_error(client.post("/api/v1/models", json={**body, "colour": "red"}, headers=headers), 422,
                 "VALIDATION_ERROR")

    updated = client.put(f"/api/v1/models/{record['id']}", headers=headers,
                         json={"name": "Updated", "status": "ready", "training_metrics": {"loss": 0.2}}).json()
    assert updated["name"] == "Updated" and updated["training_metrics"] == {"loss": 0.2}
    assert_error(client.put(f"/api/v1/models/{record['id']}", json={"status": "shiny"}, headers=headers),
                 422, "VALIDATION_ERROR")
    assert_error(client.put(f"/api/v1/models/{record['id']}", json={"gguf_path": "models/x"}, headers=headers),
                 403, "FORBIDDEN")
    assert_error(client.put(f"/api/v1/models/{record['id']}", json={"name": "x"}, headers=bob), 404, "NOT_FOUND")

    # the created record shares the fine-tune's folders: deleting it removes no bytes
    gone = client.delete(f"/api/v1/models/{record['id']}", headers=headers).json()
    assert gone["message"] == "Model deleted successfully" and gone["removed"] == []
    storage = get_storage()
    assert storage.exists(tuned["lora_adapters_path"])

    assert_error(client.delete(f"/api/v1/models/{ids['base']}", headers=headers), 409, "CONFLICT")  # a base
    with session_scope() as s:
        s.add(Endpoint(user_id=me(client, headers)["id"], name="live", slug=f"live-{ids['tuned'][:8]}",
                       model_id=ids["tuned"], status="active"))
    error = assert_error(client.delete(f"/api/v1/models/{ids['tuned']}", headers=headers), 409, "CONFLICT")
    assert "deployed" in error["message"]
    qlora_folder = client.get(f"/api/v1/models/{ids['qlora']}", headers=headers).json()["lora_adapters_path"]
    gone = client.delete(f"/api/v1/models/{ids['qlora']}", headers=headers).json()
    assert qlora_folder in gone["removed"] and not storage.exists(qlora_folder)
    with session_scope() as s:
        assert s.get(Model, ids["qlora"]) is None
        assert not s.exec(select(Adapter).where(Adapter.model_id == ids["qlora"])).all()
    assert_error(client.get(f"/api/v1/models/{ids['qlora']}", headers=headers), 404, "NOT_FOUND")


def test_adapters_in_document_003_shape(client, alice):
    headers, ids = alice
    body = client.get("/api/v1/adapters", headers=headers).json()
    assert len(body["adapters"]) == 2 and body["data"] == body["adapters"] and body["meta"]["total"] == 2
    one = client.get("/api/v1/adapters", params={"job_id": ids["job"], "limit": 5}, headers=headers).json()
    (adapter,) = one["adapters"]
    assert adapter["job_id"] == ids["job"] and adapter["algorithm"] == "lora" and adapter["path"].startswith("adapters/")
    assert adapter["metadata"] == {"rank": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}
    assert adapter["size_bytes"] == len(ADAPTER_BYTES) and adapter["base_model"].startswith("base-")


def test_export_requests_are_checked(client, alice, fake_trigger, monkeypatch):
    headers, ids = alice
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no llama-quantize
    error = assert_error(client.post(f"/api/v1/models/{ids['tuned']}/export", headers=headers,
                                     json={"format": "gguf", "quantization": "q4_k_m"}), 422, "VALIDATION_ERROR")
    assert "llama-quantize" in error["message"]
    assert_error(client.post(f"/api/v1/models/{ids['tuned']}/export", headers=headers,
                             json={"format": "gguf", "quantization": "q3"}), 422, "VALIDATION_ERROR")
    assert_error(client.post(f"/api/v1/models/{ids['tuned']}/export", headers=headers,
                             json={"format": "onnx"}), 422, "VALIDATION_ERROR")
    started = client.post(f"/api/v1/models/{ids['tuned']}/export", headers=headers,
                          json={"format": "gguf", "quantization": "q4_0"})
    assert started.status_code == 202, started.text
    assert "10.4" in started.json()["warning"] and fake_trigger[-1][0] == "export_model"
    assert fake_trigger[-1][2]["quantization"] == "q4_0"
    merged = client.post(f"/api/v1/models/{ids['tuned']}/export", headers=headers, json={"format": "merged"}).json()
    assert merged["warning"] is None and merged["quantization"] is None
