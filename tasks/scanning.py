"""Security-scan tasks. Findings depend only on file contents, so each check's cache key is the
files' sha256s: scanning an unchanged model again is a cache hit, whichever workflow asks."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.context import TaskRunContext
from pydantic import BaseModel

from tasks.common import step_options
from weft.clock import utcnow
from weft.db import session_scope
from weft.scan.checks import SAFE, Issue, code_issues, kind_of
from weft.scan.isolated import run_isolated
from weft.scan.report import ScanResult, markdown, roll_up, sha256_of
from weft.storage import get_storage
from weft.tables import Model


class ModelFiles(BaseModel):
    model_id: str
    name: str
    key: str
    files: dict[str, str]  # relative path -> sha256
    kinds: dict[str, str | None]  # relative path -> check


def content_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    files: ModelFiles = parameters["files"]
    digest = hashlib.sha256("".join(f"{k}:{v};" for k, v in sorted(files.files.items())).encode()).hexdigest()
    return f"weft-scan-{context.task.name}-{digest}"


def scan_step(name: str) -> dict[str, Any]:
    return {**step_options(name), "cache_key_fn": content_cache_key}


@task(**step_options("list_model_files"))
def list_model_files(model_id: str) -> ModelFiles:
    """Every file of the stored model with its sha256 and the check it needs."""
    with session_scope() as s:
        model = s.get(Model, model_id)
        if model is None or not model.storage_uri:
            raise ValueError(f"model {model_id} has no stored files to scan")
        name, uri = model.name, model.storage_uri
    key = get_storage().key_of(uri)  # a base model's folder, or a fine-tune's adapter
    with get_storage().local(key) as root:
        paths = sorted(p for p in root.rglob("*") if p.is_file())
        files = {p.relative_to(root).as_posix(): sha256_of(p) for p in paths}
    kinds = {rel: kind_of(Path(rel)) for rel in files}
    get_run_logger().info("%d files, %d to scan", len(files), sum(k is not None for k in kinds.values()))
    return ModelFiles(model_id=model_id, name=name, key=key, files=files, kinds=kinds)


def scan_kind(files: ModelFiles, kind: str) -> list[Issue]:
    issues: list[Issue] = []
    with get_storage().local(files.key) as root:
        for rel, k in files.kinds.items():
            if k == kind:
                found = run_isolated(kind, root / rel, rel)
                get_run_logger().info("%s: %s", rel, ", ".join(f"{i.severity} {i.title}" for i in found) or "clean")
                issues += found
    return issues


@task(**scan_step("scan_pickles"))
def scan_pickles(files: ModelFiles) -> list[Issue]:
    """Pickles and pickle-in-zip archives (.pkl .pt .pth .bin .ckpt .joblib) with modelscan and picklescan."""
    return scan_kind(files, "pickle")


@task(**scan_step("validate_safetensors"))
def validate_safetensors(files: ModelFiles) -> list[Issue]:
    """Header length, JSON, dtypes and offsets of every .safetensors file."""
    return scan_kind(files, "safetensors")


@task(**scan_step("check_gguf"))
def check_gguf(files: ModelFiles) -> list[Issue]:
    """Magic, version and tensor layout of every .gguf file."""
    return scan_kind(files, "gguf")


@task(**scan_step("detect_code"))
def detect_code(files: ModelFiles) -> list[Issue]:
    """Python files and auto_map entries that need trust_remote_code."""
    with get_storage().local(files.key) as root:
        issues = code_issues(root)
    get_run_logger().info("%d code findings", len(issues))
    return issues


@task(**step_options("roll_up_scan"))
def roll_up_scan(files: ModelFiles, findings: list[list[Issue]]) -> ScanResult:
    """Overall status (the worst severity, SAFE when none), stored on the model and published."""
    from prefect.artifacts import create_markdown_artifact

    scanned = [rel for rel, kind in files.kinds.items() if kind is not None]
    result = roll_up([i for group in findings for i in group], scanned, len(files.files) - len(scanned), files.files)
    with session_scope() as s:
        model = s.get(Model, files.model_id)
        model.scan, model.scan_verified = result.model_dump(), result.status == SAFE
        model.updated_at = utcnow()
        s.add(model)
    create_markdown_artifact(markdown(files.name, result), key="security-scan", description=f"scan of {files.name}")
    get_run_logger().info("scan status %s: %d issues", result.status, result.total_issues)
    return result


def scan_model(model_id: str) -> ScanResult:
    """The scan's steps, in order: the model_security_scan flow's body and the onboarding flow's last step."""
    files = list_model_files(model_id)
    findings = [scan_pickles(files), validate_safetensors(files), detect_code(files), check_gguf(files)]
    return roll_up_scan(files, findings)
