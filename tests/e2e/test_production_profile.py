"""`weft up --profile production` end to end: PostgreSQL for weft's and Prefect's tables, S3 storage,
two cpu workers, two API processes. A model onboarded through API process 1 reads back through API
process 2; its files are in the bucket and the flow run is in Prefect's PostgreSQL database."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.helpers.e2e import LOCAL, local_steps, post_sequence, register, wait_status
from weft.platform import Platform, ProfileError
from weft.settings import Settings

pytestmark = pytest.mark.e2e


def test_production_profile_names_missing_settings(tmp_path: Path):
    settings = Settings(home=tmp_path, database_url=None, storage_url="file:///tmp/x")
    with pytest.raises(ProfileError) as err:
        Platform(settings=settings, profile="production").start()
    message = str(err.value)
    assert all(v in message for v in ("WEFT_DATABASE_URL", "WEFT_PREFECT_DATABASE_URL", "WEFT_STORAGE_URL"))
    assert not (tmp_path / "logs").exists()  # nothing was started


def test_onboard_through_one_api_process_read_through_the_other(production_stack, tiny_model_dir: Path):
    stack = production_stack
    first, second = stack.apis
    assert first.base_url != second.base_url
    headers = register(first, "prod-alice")

    body = post_sequence(first, headers, LOCAL, local_steps("disk", str(tiny_model_dir), name="prod tiny"))
    done = wait_status(second, headers, body["workflow_id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED", done

    [summary] = [m for m in second.get("/api/v1/models", headers=headers).json()["data"] if m["name"] == "prod tiny"]
    model = second.get(f"/api/v1/models/{summary['id']}", headers=headers).json()
    assert model["details"]["architecture"] == "LlamaForCausalLM" and model["scan"]["status"] == "SAFE"
    assert model["storage_uri"].startswith(f"s3://{stack.bucket}/weft/")

    fs = stack.fs()
    stored = fs.find(model["storage_uri"].removeprefix("s3://"))
    assert any(p.endswith("/model.safetensors") for p in stored), stored
    assert fs.find(f"{stack.bucket}/weft/prefect-results"), "the resumable steps' results are on S3"

    # weft's rows and Prefect's flow runs are on PostgreSQL
    assert stack.query(stack.weft_database, "SELECT name FROM model WHERE id = %(id)s", id=summary["id"]) == \
        [("prod tiny",)]
    runs = stack.query(stack.prefect_database, "SELECT state_type FROM flow_run WHERE id = %(id)s",
                       id=body["flow_run_id"])
    assert runs == [("COMPLETED",)]
    [(hardware,)] = stack.query(stack.weft_database, "SELECT hardware FROM cluster WHERE pool_name = 'cpu'")
    assert hardware["cpu_count"] >= 1  # `weft worker` reported this machine into the configured database

    # both cpu workers are online under distinct names; the result-storage block carries s3fs's options
    workers = httpx.post(f"{stack.prefect_api}/work_pools/cpu/workers/filter", json={}).json()
    online = {w["name"] for w in workers if w["status"] == "ONLINE"}
    assert len(online) >= 2 and all(n.endswith(("-cpu-1", "-cpu-2")) for n in online), workers
    block = httpx.post(f"{stack.prefect_api}/block_documents/filter",
                       json={"block_documents": {"name": {"any_": ["weft-results"]}}, "include_secrets": True}).json()
    assert block and block[0]["data"]["settings"]["client_kwargs"]["endpoint_url"] == stack.s3.endpoint


def test_children_are_killed_and_restarted_by_name(production_stack):
    """What fault tests build on: SIGKILL a named child, restart it with the same command."""
    platform = production_stack.platform
    for name in ("api-2", "worker-cpu-2"):
        old = platform.pid(name)
        platform.kill(name, signal.SIGKILL)
        assert platform.wait(name) == -signal.SIGKILL and not platform.alive(name)
        platform.restart(name)
        assert platform.alive(name) and platform.pid(name) != old
    assert httpx.get(f"{production_stack.api_urls[1]}/", timeout=10).status_code < 500
