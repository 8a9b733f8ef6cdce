"""Document 001's upload (`POST /deploy`, `POST /deployments/{id}/versions`) in-process: what it stores and
starts, and the clear 4xx of a bad upload, which leaves nothing stored. The flow itself runs in
tests/e2e/test_classic_models.py."""

from __future__ import annotations

import pytest
from sqlmodel import select

from tests.helpers.api import assert_error
from weft.classic.envs import RequirementsError, parse_requirements
from weft.db import session_scope
from weft.specs.names import WorkflowName
from weft.storage import get_storage
from weft.tables import Endpoint, Model

REQUIREMENTS = b"scikit-learn==1.9.1\nnumpy  # arrays\n"


def upload(client, headers, file_name="model.pkl", data=b"\x80\x04N.", requirements=REQUIREMENTS, path="/api/v1/deploy",
           **form):
    files = {"model_file": (file_name, data), "requirements_file": ("requirements.txt", requirements)}
    return client.post(path, headers=headers, files=files, data=form)


def stored_models() -> int:
    with session_scope() as s:
        return len(s.exec(select(Model).where(Model.modality == "classic")).all())


def test_an_upload_is_stored_and_its_deploy_started(client, auth_headers, fake_trigger):
    headers = auth_headers()
    r = upload(client, headers, file_name="iris.pkl", memory="2048", timeout="10")
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "building" and body["name"] == "iris" and body["version"] == "v1"
    assert body["model_metadata"] == {**body["model_metadata"], "framework": "sklearn"}
    (kind, _, spec), = fake_trigger
    assert kind == WorkflowName.DEPLOY_CLASSIC_MODEL and spec["endpoint_id"] == body["id"]
    assert (spec["memory_mb"], spec["timeout_seconds"]) == (2048, 10)
    with session_scope() as s:
        endpoint = s.get(Endpoint, body["id"])
        model = s.get(Model, endpoint.model_id)
        assert (endpoint.kind, endpoint.status, endpoint.memory_mb) == ("classic", "deploying", 2048)
        assert model.details["requirements"] == ["numpy", "scikit-learn==1.9.1"]
        key = model.details["file_key"]
    assert get_storage().read_bytes(key) == b"\x80\x04N."
    got = client.get(f"/api/v1/deployments/{body['id']}", headers=headers).json()
    assert got["status"] == "building" and got["endpoint_url"].endswith(f"/api/v1/predict/{body['id']}")

    again = upload(client, headers, file_name="iris-2.pkl", name="iris", changes="more trees")
    assert again.status_code == 202 and again.json()["id"] == body["id"], again.text
    version = upload(client, headers, path=f"/api/v1/deployments/{body['id']}/versions")
    assert version.status_code == 202 and version.json()["id"] == body["id"]
    assert [s["endpoint_id"] for _, _, s in fake_trigger] == [body["id"]] * 3


@pytest.mark.parametrize(("change", "status", "code", "field"), [
    ({"file_name": "model.exe"}, 400, "INVALID_INPUT", "model_file"),
    ({"requirements": b"--index-url https://evil.example/simple\nscikit-learn\n"}, 400, "INVALID_INPUT",
     "requirements_file"),
    ({"requirements": b"mypkg @ https://evil.example/mypkg.whl\n"}, 400, "INVALID_INPUT", "requirements_file"),
    ({"requirements": b"\xff\xfe\x00"}, 400, "INVALID_INPUT", "requirements_file"),
    ({"memory": "12"}, 422, "VALIDATION_ERROR", "memory"),
    ({"timeout": "soon"}, 422, "VALIDATION_ERROR", "timeout"),
])
def test_a_bad_upload_is_refused_and_leaves_nothing(client, auth_headers, fake_trigger, change, status, code, field):
    before = stored_models()
    error = assert_error(upload(client, auth_headers(), **change), status, code)
    assert error["details"]["field"] == field
    assert stored_models() == before and not fake_trigger


def test_both_files_are_required(client, auth_headers, fake_trigger):
    r = client.post("/api/v1/deploy", headers=auth_headers(), files={"model_file": ("m.pkl", b"x")})
    assert assert_error(r, 422, "VALIDATION_ERROR")["details"]["field"] == "requirements_file"


def test_a_name_taken_by_someone_else_is_a_conflict(client, auth_headers, fake_trigger):
    assert upload(client, auth_headers(), file_name="shared.pkl").status_code == 202
    assert_error(upload(client, auth_headers(), file_name="shared.pkl"), 409, "CONFLICT")


def test_requirements_are_normalised_and_options_refused():
    assert parse_requirements("# comment\nNumPy>=2 ; python_version>'3'\n\nscipy\nscipy\n") == [
        'NumPy>=2; python_version > "3"', "scipy"]
    for bad in ("-r other.txt", "-e .", "git+https://x/y.git", "pkg @ file:///tmp/x"):
        with pytest.raises(RequirementsError):
            parse_requirements(bad)
