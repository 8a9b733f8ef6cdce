"""Training jobs (document 003) through the API: what a job config may ask for."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.api import assert_error


def test_int8_training_is_refused_naming_the_field(client, auth_headers, fake_trigger, tiny_model_dir: Path):
    """weft's qlora trains on a 4-bit NF4 base only: an int8 job is refused, never trained as nf4."""
    from tests.helpers.api import me
    from weft.testing.registry import register_dataset, register_model

    headers = auth_headers()
    user_id = me(client, headers)["id"]
    config = {"base_model": register_model(user_id, tiny_model_dir), "algorithm": "qlora", "quantization": "int8",
              "dataset_id": register_dataset(user_id, "int8 codes", [{"prompt": "q", "completion": "a"}] * 4)}
    error = assert_error(client.post("/api/v1/jobs", headers=headers, json={"config": config}), 400, "INVALID_CONFIG")
    assert error["details"]["field"] == "quantization" and "'int8' is not supported" in error["message"]
    assert "nf4" in error["message"] and fake_trigger == []
    r = client.post("/api/v1/jobs", headers=headers, json={"config": {**config, "quantization": "nf4"}})
    assert r.status_code == 201, r.text
