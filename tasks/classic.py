"""Steps of the classic-model deploy: check the stored upload, add its revision, scan it before anything
loads it, build its uv environment, inspect it in a sandbox inside that environment, then hand it to the
endpoint controller (replicas of the classic-model server). A failure anywhere fails the revision with the
reason (see `deploy_failed`)."""

from __future__ import annotations

import json
from typing import Any

from prefect import get_run_logger, task
from pydantic import BaseModel
from sqlmodel import select

from tasks.common import step_options
from weft import pools
from weft.classic import envs, sandbox
from weft.clock import utcnow
from weft.db import session_scope
from weft.scan.gate import NotDeployable, check_deployable
from weft.scan.isolated import run_isolated
from weft.scan.report import markdown, roll_up, sha256_of
from weft.serving import revisions
from weft.serving.launch import CLASSIC_ENGINE
from weft.settings import get_settings
from weft.specs.classic import ClassicDeploySpec
from weft.statuses import EndpointStatus, RevisionStatus
from weft.storage import get_storage
from weft.tables import Endpoint, Model, Revision
from weft.webhooks.outbox import emit

INSPECT_TIMEOUT = 300.0  # seconds to load the model and run one probe prediction
INSPECT_MEMORY_MB = 4096  # inspection may need more than one replica's limit (it loads the framework too)


class Upload(BaseModel):
    model_id: str
    name: str
    file_key: str
    file_name: str
    framework: str
    sha256: str
    requirements: list[str]


def load_upload(model_id: str) -> Upload:
    with session_scope() as s:
        model = s.get(Model, model_id)
        d = model.details
        return Upload(model_id=model.id, name=model.name, file_key=d["file_key"], file_name=d["file_name"],
                      framework=d["framework"], sha256=d["sha256"], requirements=d["requirements"])


def update_details(model_id: str, **fields: Any) -> None:
    with session_scope() as s:
        model = s.get(Model, model_id)
        model.details, model.updated_at = {**model.details, **fields}, utcnow()
        s.add(model)


@task(**step_options("receive_upload"))
def receive_upload(spec: ClassicDeploySpec) -> Upload:
    """The stored file is the one the API received (its sha256), and the deploy is building."""
    upload = load_upload(spec.model_id)
    with get_storage().local(upload.file_key) as path:
        digest = sha256_of(path)
    if digest != upload.sha256:
        raise RuntimeError(f"the stored {upload.file_name} has sha256 {digest}, not the uploaded {upload.sha256}")
    with session_scope() as s:
        endpoint = s.get(Endpoint, spec.endpoint_id)
        emit(s, "deployment.building", revisions.event_data(endpoint, model_id=upload.model_id),
             key=f"deployment:{endpoint.id}:building:{upload.model_id}", user_id=endpoint.user_id)
    get_run_logger().info("%s (%s, sha256 %s) with %d requirements", upload.file_name, upload.framework, digest[:12],
                          len(upload.requirements))
    return upload


@task(**step_options("add_classic_revision"))
def add_classic_revision(spec: ClassicDeploySpec, workflow_id: str) -> str:
    """The version this deploy adds (no replicas yet): failures from here on are that version's."""
    with session_scope() as s:
        endpoint = s.get(Endpoint, spec.endpoint_id)
        if endpoint.status in (EndpointStatus.FAILED, EndpointStatus.STOPPED):
            endpoint.status, endpoint.reason = EndpointStatus.DEPLOYING, None
            s.add(endpoint)
        rev = revisions.add_revision(s, endpoint, spec.model_id, workflow_id, spec.changes)
        rev.engine, rev.pool = CLASSIC_ENGINE, pools.CPU
        rev.config = {"memory_mb": spec.memory_mb, "timeout_seconds": spec.timeout_seconds}
        s.add(rev)
        s.flush()
        version, revision_id = rev.version, rev.id
    get_run_logger().info("deploying %s", version)
    return revision_id


@task(**step_options("scan_upload"))
def scan_upload(upload: Upload) -> dict[str, Any]:
    """The classic-model scan in a child process; the deploy stops here unless the result is SAFE or an
    override is recorded on the model."""
    from prefect.artifacts import create_markdown_artifact

    with get_storage().local(upload.file_key) as path:
        issues = run_isolated("classic", path, upload.file_name)
    result = roll_up(issues, [upload.file_name], 0, {upload.file_name: upload.sha256})
    with session_scope() as s:
        model = s.get(Model, upload.model_id)
        model.scan, model.scan_verified, model.updated_at = result.model_dump(), result.status == "SAFE", utcnow()
        s.add(model)
        try:
            why = check_deployable(model)
        except NotDeployable:
            why = None
    create_markdown_artifact(markdown(upload.name, result), key="classic-model-scan",
                             description=f"scan of {upload.file_name}")
    log = get_run_logger()
    for issue in result.model_issues:
        log.warning("%s %s: %s", issue.severity, issue.title, issue.description)
    if why is None:
        findings = "; ".join(f"{i.severity} {i.title}: {i.description}" for i in result.model_issues[:5])
        raise RuntimeError(f"the security scan refused {upload.file_name} ({result.status}): {findings}")
    log.info("%s may be loaded: %s", upload.file_name, why)
    return result.model_dump()


@task(**step_options("build_environment"))
def build_environment(upload: Upload) -> str:
    """The uv environment of the requirements (reused when another deployment built it); the installer's
    message when it cannot be built."""
    try:
        env = envs.ensure_env(upload.requirements)
    except envs.BuildFailed as exc:
        raise RuntimeError(f"the environment of requirements.txt could not be built: {exc}") from exc
    update_details(upload.model_id, env=env.key, packages=env.packages)
    get_run_logger().info("environment %s %s in %.1f s: %s", env.key, "built" if env.built else "reused",
                          env.seconds, ", ".join(f"{k}=={v}" for k, v in sorted(env.packages.items())))
    return env.key


def keras_override(model_id: str) -> bool:
    """Keras loads a Lambda layer (Python code) only where an override of the scan is recorded."""
    with session_scope() as s:
        return bool(s.get(Model, model_id).scan_override)


@task(**step_options("inspect_model"))
def inspect_model(upload: Upload, env_key: str) -> dict[str, Any]:
    """Load the model in a sandboxed process of its environment (no network, no weft secrets, memory and
    CPU limits) and read its framework, type and input/output shapes from one probe prediction."""

    unsafe_keras = keras_override(upload.model_id)
    with sandbox.workdir(upload.file_key, upload.file_name) as model_path:
        done = sandbox.run(get_settings().envs_root / env_key, model_path.parent,
                           sandbox.runtime_args("inspect_model.py", model_path, upload.framework, unsafe_keras),
                           memory_mb=INSPECT_MEMORY_MB, timeout=INSPECT_TIMEOUT)
    try:
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        found = {"ok": False, "error": f"exit {done.returncode}: {done.stderr.strip()[-1500:] or 'no output'}"}
    if not found.pop("ok", False):
        raise RuntimeError(f"{upload.file_name} could not be loaded in its environment: {found.get('error')}")
    update_details(upload.model_id, detected=found, unsafe_keras=unsafe_keras)
    get_run_logger().info("%s %s: input %s, output %s%s", found.get("framework"), found.get("model_type"),
                          found.get("input_shape"), found.get("output_shape"),
                          ", with probabilities" if found.get("probabilities") else "")
    return found


@task(**step_options("start_classic_replicas"))
def start_classic_replicas(endpoint_id: str, revision_id: str) -> int:
    """Ask the controller for the revision's replicas (its plan: the classic server's threads per replica)."""
    workers = get_settings().classic_workers
    with session_scope() as s:
        endpoint, rev = s.get(Endpoint, endpoint_id), s.get(Revision, revision_id)
        rev.plan = {"engine": rev.engine, "pool": rev.pool, "replicas": 1, "per_replica_concurrency": workers,
                    "reason": f"one classic-model server of {workers} threads per replica", **rev.config}
        if rev.number == 1:
            endpoint.plan, endpoint.pool, endpoint.engine = rev.plan, rev.pool, rev.engine
            endpoint.target_concurrency = workers
        if rev.status == RevisionStatus.DEPLOYING and rev.replicas == 0:
            rev.replicas, rev.scaled_at = revisions.initial_replicas(endpoint, 1), utcnow()
        s.add(endpoint)
        s.add(rev)
        count = rev.replicas
    get_run_logger().info("%d replica(s) wanted", count)
    return count


def deploy_failed(endpoint_id: str, workflow_id: str, reason: str) -> None:
    """The deploy ended without its revision serving: the revision fails with the reason, the endpoint too
    when no other version serves, and `deployment.failed` goes out."""
    with session_scope() as s:
        endpoint = s.get(Endpoint, endpoint_id)
        rev = s.exec(select(Revision).where(Revision.workflow_id == workflow_id)).first()
        if rev is not None:
            rev.status, rev.replicas, rev.updated_at = RevisionStatus.FAILED, 0, utcnow()
            s.add(rev)
        serving = any(r.traffic for r in revisions.revisions(s, endpoint_id) if rev is None or r.id != rev.id)
        if not serving and endpoint.status not in (EndpointStatus.STOPPING, EndpointStatus.STOPPED):
            endpoint.status = EndpointStatus.FAILED
        endpoint.reason, endpoint.updated_at = reason[:4000], utcnow()
        s.add(endpoint)
        version = rev.version if rev else None
        revisions.record(s, endpoint_id, "revision_failed", reason[:2000], version)
        emit(s, "deployment.failed", revisions.event_data(endpoint, version=version, error=reason[:2000]),
             key=f"deployment:{endpoint_id}:failed:{workflow_id}", user_id=endpoint.user_id)
