"""Document 003's model search and details, offline: the caller's registry, a model in the local Hugging Face
cache and the cloud catalog are found; the answer says the Hub was not reached; details carry the model's own
facts and weft.hardware's requirements; the source routes do not shadow `/models/{id}/...`."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from tests.helpers.api import assert_error, me
from weft.db import session_scope
from weft.model_metadata import extract_metadata
from weft.tables import Model

REPO = "weft-tests/tiny-cached-llama"


def cache_model(tiny_model_dir: Path, repo_id: str = REPO) -> Path:
    """`repo_id` in the Hugging Face cache the way huggingface_hub writes it: blobs, a snapshot of links, refs."""
    from huggingface_hub import constants

    root = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    if root.exists():
        return root
    commit = "0" * 40
    snapshot = root / "snapshots" / commit
    (root / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    for file in tiny_model_dir.iterdir():
        blob = root / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copyfile(file, blob)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / file.name)
    return root


@pytest.fixture
def searcher(client, auth_headers, tiny_model_dir) -> dict[str, str]:
    cache_model(tiny_model_dir)
    headers = auth_headers()
    with session_scope() as s:
        s.add(Model(user_id=me(client, headers)["id"], name="tiny cached copy", provider_type="disk",
                    details=extract_metadata(tiny_model_dir).model_dump()))
    return headers


def test_search_finds_registry_cache_and_catalog_offline(client, searcher):
    body = client.get("/api/v1/models/search", params={"q": "tiny"}, headers=searcher).json()
    where = {(m["source"], m["where"]) for m in body["models"]}
    assert ("registry", "registry") in where and ("huggingface", "local cache") in where
    cached = next(m for m in body["models"] if m["id"] == REPO)
    assert cached["license"] == "apache-2.0" and cached["size_gb"] > 0 and cached["downloads"] is None
    assert body["total"] == len(body["models"]) and body["page"] == 1
    assert any("Hugging Face Hub was not reached" in note for note in body["notes"])
    gpt = client.get("/api/v1/models/search", params={"q": "gpt-4o", "source": "catalog"}, headers=searcher).json()
    assert gpt["models"] and all(m["source"] == "catalog" for m in gpt["models"]) and gpt["notes"] == []
    assert_error(client.get("/api/v1/models/search", params={"q": "x", "source": "civitai"}, headers=searcher),
                 422, "VALIDATION_ERROR")


def test_details_from_each_source(client, searcher, tiny_model_dir):
    facts = client.get(f"/api/v1/models/huggingface/{REPO}", headers=searcher)
    assert facts.status_code == 200, facts.text
    body = facts.json()
    meta = extract_metadata(tiny_model_dir)
    assert body["architecture"] == "LlamaForCausalLM" and body["context_length"] == meta.context_length
    assert body["license"] == "apache-2.0" and body["parameter_count"] == meta.parameter_count
    requirements = body["hardware_requirements"]
    assert 0 < requirements["min_vram_gb"] < requirements["recommended_vram_gb"]
    assert body["compatible_algorithms"][:2] == ["lora", "dora"]

    registry_id = next(m["id"] for m in client.get("/api/v1/models/search", params={"q": "tiny cached copy"},
                                                   headers=searcher).json()["models"])
    assert client.get(f"/api/v1/models/registry/{registry_id}", headers=searcher).json()["name"] == "tiny cached copy"
    assert client.get(f"/api/v1/models/{registry_id}", headers=searcher).json()["id"] == registry_id  # not shadowed
    assert client.get("/api/v1/models/catalog/openai/gpt-4o", headers=searcher).json()["source"] == "catalog"
    assert_error(client.get("/api/v1/models/huggingface/nobody/nothing", headers=searcher), 503,
                 "SERVICE_UNAVAILABLE")  # not cached, and the Hub is off
    assert_error(client.get("/api/v1/models/catalog/nobody/nothing", headers=searcher), 404, "NOT_FOUND")
