"""`POST /adapters/upload` (document 003) in-process: a valid peft adapter becomes an adapter and a deployable
fine-tuned model; a truncated file, a shape mismatch and a pickle renamed `.safetensors` are refused with why."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import pytest

from tests.helpers.api import assert_error, me
from weft.db import session_scope
from weft.model_metadata import extract_metadata
from weft.storage import get_storage
from weft.tables import Model
from weft.testing.adapters import build_adapter
from weft.testing.tiny_model import build_tiny_model

META = {"rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"], "name": "uploaded-advisor"}


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("adapters")
    wide = build_tiny_model(root / "wide-base", hidden=128)
    files = {"lora": build_adapter(tiny_model_dir, root / "lora"), "wide": build_adapter(wide, root / "wide")}
    return {name: (folder / "adapter_model.safetensors").read_bytes() for name, folder in files.items()}


@pytest.fixture
def owner(client, auth_headers, tiny_model_dir: Path) -> tuple[dict[str, str], str]:
    """A user with the tiny model registered as a base (weights in storage)."""
    headers = auth_headers()
    base = Model(user_id=me(client, headers)["id"], name="tiny-base", provider_type="disk",
                 details=extract_metadata(tiny_model_dir).model_dump())
    storage = get_storage()
    storage.put_dir(tiny_model_dir, f"models/{base.id}")
    base.storage_uri = storage.url(f"models/{base.id}")
    with session_scope() as s:
        s.add(base)
    return headers, base.id


def upload(client, headers, content: bytes, metadata: dict, filename: str = "adapter_model.safetensors"):
    return client.post("/api/v1/adapters/upload", headers=headers, data={"metadata": json.dumps(metadata)},
                       files={"file": (filename, io.BytesIO(content), "application/octet-stream")})


def test_a_valid_adapter_is_registered_listed_and_deployable(client, owner, adapters):
    headers, base_id = owner
    r = upload(client, headers, adapters["lora"], {**META, "base_model": "tiny-base"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["success"] is True and body["registry_url"] is None and "does not push" in body["message"]
    listed = client.get("/api/v1/adapters", headers=headers).json()["adapters"]
    (adapter,) = [a for a in listed if a["id"] == body["adapter_id"]]
    assert adapter["job_id"] is None and adapter["base_model"] == "tiny-base" and adapter["algorithm"] == "lora"
    assert adapter["metadata"] == {"rank": 4, "alpha": 8.0, "target_modules": ["q_proj", "v_proj"]}
    model = client.get(f"/api/v1/models/{body['model_id']}", headers=headers).json()
    assert model["type"] == "fine-tuned" and model["details"]["base_model_id"] == base_id
    assert model["scan_verified"] is True and model["scan"]["status"] == "SAFE"  # passes the deploy gate
    assert set(model["files"]) == {"lora_adapters/adapter_config.json", "lora_adapters/adapter_model.safetensors"}
    config = json.loads(get_storage().read_bytes(f"{adapter['path']}/adapter_config.json"))
    assert config["r"] == 4 and config["base_model_name_or_path"] == "tiny-base" and not config["use_dora"]


@pytest.mark.parametrize(("case", "reason"), [
    ("truncated", "truncated"), ("wide", "shape mismatch"), ("pickle", "not a safetensors file"),
])
def test_bad_files_are_refused_with_the_reason(client, owner, adapters, case, reason):
    headers, _ = owner
    content = {"truncated": adapters["lora"][:-100], "wide": adapters["wide"],
               "pickle": pickle.dumps({"lora_A": [1.0, 2.0]})}[case]
    before = len(client.get("/api/v1/adapters", headers=headers).json()["adapters"])
    error = assert_error(upload(client, headers, content, {**META, "base_model": "tiny-base"}), 400, "INVALID_INPUT")
    assert reason in error["message"]
    assert len(client.get("/api/v1/adapters", headers=headers).json()["adapters"]) == before  # nothing registered


def test_bad_metadata_and_forms(client, owner, adapters):
    headers, _ = owner
    error = assert_error(upload(client, headers, adapters["lora"], {**META, "base_model": "tiny-base", "lora_r": 4}),
                         422, "VALIDATION_ERROR")
    assert error["details"]["errors"][0]["field"] == "lora_r"
    assert_error(upload(client, headers, adapters["lora"], {**META, "base_model": "no-such-model"}),
                 422, "VALIDATION_ERROR")
    assert "rank mismatch" in assert_error(upload(client, headers, adapters["lora"],
                                                  {**META, "base_model": "tiny-base", "rank": 8}),
                                           400, "INVALID_INPUT")["message"]
    assert_error(upload(client, headers, adapters["lora"], {**META, "base_model": "tiny-base"}, "adapter.bin"),
                 400, "INVALID_INPUT")
    assert_error(client.post("/api/v1/adapters/upload", headers=headers, data={"metadata": "{}"}),
                 422, "VALIDATION_ERROR")
