"""The `weft` command line: every command's help, the installed script, cheap imports, and the API
commands on `weft.client` (in-process API through an injected client; a fake one for `jobs create --wait`)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tests.helpers.api import me
from weft import commands
from weft.cli import app
from weft.commands import jobs as job_commands
from weft.errors import Invalid

WEFT = Path(sys.executable).parent / "weft"

# every command path: its --help must work and show its usage
COMMANDS = [
    "", "up", "migrate", "worker", "demo-model", "demo", "login", "deploy", "predict",
    "models", "models ls", "models show", "models download", "models export", "models rm",
    "datasets", "datasets ls", "datasets show", "datasets upload", "datasets analyze",
    "jobs", "jobs create", "jobs ls", "jobs show", "jobs logs", "jobs cancel",
    "eval", "eval create", "eval show",
    "endpoints", "endpoints ls", "endpoints show", "endpoints scale", "endpoints rollback", "endpoints rm",
    "workflows", "workflows ls", "workflows show", "workflows retry", "workflows cancel",
]

runner = CliRunner(env={"COLUMNS": "200"})  # rich tables wrap to the terminal's width


def run(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input, prog_name="weft")


def script_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WEFT_API_URL", "WEFT_API_KEY")}
    return {**env, "COLUMNS": "120", "NO_COLOR": "1", **extra}


def command_paths(command: Any, prefix: str = "") -> list[str]:
    paths = [prefix]
    for name, sub in getattr(command, "commands", {}).items():
        paths += command_paths(sub, f"{prefix} {name}".strip())
    return paths


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No developer's saved login or WEFT_API_* reaches a test; `weft login` writes under tmp_path."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("WEFT_API_URL", raising=False)
    monkeypatch.delenv("WEFT_API_KEY", raising=False)
    return tmp_path


# --- help and the real entry points ------------------------------------------------------------------------

def test_the_help_list_covers_every_command():
    assert sorted(command_paths(typer.main.get_command(app))) == sorted(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: p or "weft")
def test_help(path: str):
    result = run(*path.split(), "--help")
    assert result.exit_code == 0, result.output
    assert f"Usage: weft {path}".rstrip() in result.output


@pytest.mark.parametrize("argv", [["--help"], ["up", "--help"], ["jobs", "logs", "--help"]])
def test_help_of_the_installed_script(argv: list[str]):
    result = subprocess.run([str(WEFT), *argv], capture_output=True, text=True, env=script_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"Usage: weft {' '.join(argv[:-1])}".rstrip() in result.stdout
    if argv == ["up", "--help"]:
        assert "embedded" in result.stdout and "production" in result.stdout


def test_python_m_weft_cli_worker_help():
    result = subprocess.run([sys.executable, "-m", "weft.cli", "worker", "--help"], capture_output=True, text=True,
                            env=script_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Usage: weft worker" in result.stdout and "--pool" in result.stdout and "--name" in result.stdout


HEAVY = "('torch', 'prefect', 'transformers')"
IMPORTS = f"""
import sys
from weft.cli import main

def run(argv, code):
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code == code, exc.code
    return sorted(m for m in {HEAVY} if m in sys.modules)

print(run(['--help'], 0), 'weft.client' in sys.modules)
print(run(['jobs', 'cancel', 'j1'], 1))  # an API command (a POST: refused at once, no retries)
"""


def test_help_and_api_commands_import_neither_torch_nor_prefect():
    result = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True, timeout=60,
                            env=script_env(WEFT_API_URL="http://127.0.0.1:9"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == ["[] False", "[]"]


def test_unreachable_api_is_one_error_line():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = subprocess.run([str(WEFT), "jobs", "show", "nope"], capture_output=True, text=True, timeout=60,
                            env=script_env(WEFT_API_URL=f"http://127.0.0.1:{port}"))
    assert result.returncode == 1
    assert result.stderr.startswith("error CONNECTION_ERROR:"), result.stderr
    assert "Traceback" not in result.stderr and str(port) in result.stderr


def test_platform_usage_errors():
    assert run("worker").exit_code == 2  # --pool is required
    assert run("up", "--profile", "nope").exit_code == 2
    assert run("endpoints", "scale", "e1").exit_code == 2  # neither --min nor --max


# --- the API commands against the in-process API -----------------------------------------------------------

@pytest.fixture
def token(client, auth_headers, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh user's token; every command's client reaches the in-process API (with the key given to the
    command, else this token)."""
    from weft.client import Client

    token = auth_headers()["Authorization"].removeprefix("Bearer ")

    def make(api_url: str | None, api_key: str | None) -> Client:
        return Client(api_key=api_key or token, base_url="http://testserver", http_client=client)

    monkeypatch.setattr(commands, "make_client", make)
    return token


def test_models_ls_json(client, token: str):
    from weft.db import session_scope
    from weft.tables import Model

    user_id = me(client, {"Authorization": f"Bearer {token}"})["id"]
    assert json.loads(run("models", "ls", "--json").stdout) == []
    with session_scope() as s:
        s.add(Model(id="mdl-cli-1", user_id=user_id, name="cli-model", provider_type="disk", uri="/models/cli"))
    result = run("models", "ls", "--json")
    assert result.exit_code == 0, result.output
    assert [(m["id"], m["name"]) for m in json.loads(result.stdout)] == [("mdl-cli-1", "cli-model")]
    table = run("models", "ls")
    assert table.exit_code == 0 and "cli-model" in table.stdout and "NAME" in table.stdout


def test_missing_job_is_not_found(token: str):
    result = run("jobs", "show", "no-such-job")
    assert result.exit_code == 1
    assert result.stderr.startswith("error NOT_FOUND:") and "no-such-job" in result.stderr
    assert "Traceback" not in result.output


def test_workflows_ls(client, token: str):
    from weft.db import session_scope
    from weft.statuses import WorkflowStatus
    from weft.tables import Workflow

    assert "no workflows" in run("workflows", "ls").stdout
    with session_scope() as s:
        s.add(Workflow(user_id=me(client, {"Authorization": f"Bearer {token}"})["id"], workflow_type="fine_tune",
                       name="cli-flow", status=WorkflowStatus.COMPLETED, total_steps=1, current_step=1))
    result = run("workflows", "ls")
    assert result.exit_code == 0, result.output
    assert "cli-flow" in result.stdout and "fine_tune" in result.stdout and "completed" in result.stdout
    listed = json.loads(run("workflows", "ls", "--json", "--status", "completed").stdout)
    assert [w["name"] for w in listed] == ["cli-flow"]


def test_an_error_with_details_prints_them_on_a_second_line(token: str):
    result = run("workflows", "ls", "--type", "no_such_type")
    assert result.exit_code == 1
    first, second = result.stderr.splitlines()
    assert first == "error VALIDATION_ERROR: unknown workflow_type no_such_type"
    assert "fine_tune" in json.loads(second)["allowed"]


def test_login_checks_and_saves_the_key(isolated: Path, token: str):
    result = run("login", "--api-key", token)
    assert result.exit_code == 0, result.output
    path = isolated / "weft" / "config.json"
    assert str(path) in result.stdout
    assert json.loads(path.read_text()) == {"api_url": "http://testserver", "api_key": token}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_login_asks_for_the_key_and_refuses_a_wrong_one(isolated: Path, token: str):
    path = isolated / "weft" / "config.json"
    wrong = run("login", input="not-a-key\n")
    assert wrong.exit_code == 1 and wrong.stderr.startswith("error UNAUTHORIZED")
    assert "not-a-key" not in wrong.output and not path.exists()  # hidden input, nothing saved
    assert run("login", input=f"{token}\n").exit_code == 0
    assert json.loads(path.read_text())["api_key"] == token


# --- jobs create --wait on a fake client -------------------------------------------------------------------

class FakeJobs:
    def __init__(self, statuses: list[tuple[str, float]]) -> None:
        self.statuses, self.created_with = statuses, None

    def create(self, config: dict[str, Any]) -> Any:
        from weft.schemas.jobs import JobCreated

        self.created_with = config
        return JobCreated(job_id="job-1", status="pending", created_at=datetime.now(UTC),
                          estimated_duration_minutes=None, estimated_cost=None, provider=None, resource_id=None,
                          flow_run_id=None)

    def get(self, job_id: str) -> Any:
        from weft.schemas.jobs import JobOut

        status, progress = self.statuses.pop(0)
        return JobOut(job_id=job_id, config={}, status=status, created_at=datetime.now(UTC), flow_run_id=None,
                      progress=progress, metrics={}, reason="boom" if status == "failed" else None,
                      model_id="mdl-9" if status == "completed" else None, adapter_id=None)


class FakeClient:
    def __init__(self, jobs: FakeJobs) -> None:
        self.jobs = jobs

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.fixture
def fake_jobs(monkeypatch: pytest.MonkeyPatch) -> FakeJobs:
    jobs = FakeJobs([])
    monkeypatch.setattr(commands, "make_client", lambda api_url, api_key: FakeClient(jobs))
    monkeypatch.setattr(job_commands, "POLL_SECONDS", 0)
    return jobs


def test_jobs_create_reads_yaml_and_waits(tmp_path: Path, fake_jobs: FakeJobs):
    config = tmp_path / "job.yaml"
    config.write_text("config:\n  base_model: tiny\n  dataset_id: ds-1\n  algorithm: lora\n")
    fake_jobs.statuses = [("running", 0.5), ("completed", 1.0)]
    result = run("jobs", "create", "-f", str(config), "--wait")
    assert result.exit_code == 0, result.output
    assert fake_jobs.created_with == {"base_model": "tiny", "dataset_id": "ds-1", "algorithm": "lora"}
    assert result.stdout.splitlines()[0] == "job-1" and "job job-1 completed (model mdl-9)" in result.stdout


def test_jobs_create_json_and_a_failed_wait(tmp_path: Path, fake_jobs: FakeJobs):
    config = tmp_path / "job.json"
    config.write_text(json.dumps({"base_model": "tiny", "dataset_id": "ds-1"}))
    assert json.loads(run("jobs", "create", "-f", str(config), "--json").stdout)["job_id"] == "job-1"
    fake_jobs.statuses = [("running", 0.2), ("failed", 0.2)]
    result = run("jobs", "create", "-f", str(config), "--wait", "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["status"] == "failed"
    config.write_text("- not a mapping\n")
    bad = run("jobs", "create", "-f", str(config))
    assert bad.exit_code == 1 and bad.stderr.startswith("error INVALID_FILE:")


def test_weft_error_details_are_compact_json(monkeypatch: pytest.MonkeyPatch):
    class Refusing:
        def get(self, job_id: str) -> None:
            raise Invalid("config is invalid", [{"field": "rank", "message": "must be > 0"}])

    monkeypatch.setattr(commands, "make_client", lambda api_url, api_key: FakeClient(Refusing()))  # type: ignore[arg-type]
    result = run("jobs", "show", "j1")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == ["error VALIDATION_ERROR: config is invalid",
                                          '{"errors":[{"field":"rank","message":"must be > 0"}]}']


def test_global_options_reach_the_client(monkeypatch: pytest.MonkeyPatch):
    from weft.errors import NotFound

    class Missing:
        def get(self, job_id: str) -> None:
            raise NotFound.of("job", job_id)

    assert commands.make_client("http://api.test:1/api/v1/", "k").base_url == "http://api.test:1"
    seen: list[tuple[str | None, str | None]] = []
    monkeypatch.setattr(commands, "make_client", lambda url, key: seen.append((url, key)) or FakeClient(Missing()))  # type: ignore[arg-type]
    assert run("--api-url", "http://api.test:1", "--api-key", "k1", "jobs", "show", "j").exit_code == 1
    monkeypatch.setenv("WEFT_API_URL", "http://env.test:2")
    monkeypatch.setenv("WEFT_API_KEY", "k2")
    assert run("jobs", "show", "j").exit_code == 1
    assert seen == [("http://api.test:1", "k1"), ("http://env.test:2", "k2")]


class Recorder:
    """A fake client: records each call as (dotted name, args, kwargs) and answers from `answers`."""

    def __init__(self, answers: dict[str, Any], calls: list[tuple[str, tuple, dict]] | None = None,
                 name: str = "") -> None:
        self.answers, self.calls, self.name = answers, [] if calls is None else calls, name

    def __getattr__(self, attribute: str) -> Recorder:
        return Recorder(self.answers, self.calls, f"{self.name}.{attribute}".lstrip("."))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((self.name, args, kwargs))
        return self.answers[self.name]

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def test_serving_commands_map_their_options(monkeypatch: pytest.MonkeyPatch):
    from types import SimpleNamespace as NS

    updated = NS(id="e1", status="active", configuration={"min_instances": 0, "max_instances": 3})
    fake = Recorder({
        "models.deploy": NS(id="e1", name="ep", version="v1", status="deploying", endpoint_url="http://x/v1", model="ep"),
        "deployments.scale": updated, "deployments.rollback": updated,
        "inference.predict": NS(output="forty-two"),
    })
    monkeypatch.setattr(commands, "make_client", lambda url, key: fake)
    assert run("deploy", "m1", "--min", "0", "--max", "3", "--name", "ep", "--engine", "vllm").exit_code == 0
    assert run("deploy", "m1").exit_code == 0
    assert run("endpoints", "scale", "e1", "--max", "3").exit_code == 0
    assert run("endpoints", "rollback", "e1", "v1").exit_code == 0
    answer = run("predict", "m1", "what is it?", "--max-tokens", "8", "--temperature", "0")
    assert answer.exit_code == 0 and answer.stdout == "forty-two\n"
    assert fake.calls == [
        ("models.deploy", ("m1",), {"auto_scaling": {"min_instances": 0, "max_instances": 3}, "endpoint_name": "ep",
                                    "endpoint_type": "vllm"}),
        ("models.deploy", ("m1",), {}),
        ("deployments.scale", ("e1",), {"min_instances": None, "max_instances": 3}),
        ("deployments.rollback", ("e1", "v1"), {}),
        ("inference.predict", ("m1", "what is it?"), {"max_tokens": 8, "temperature": 0.0}),
    ]


def test_jobs_logs(monkeypatch: pytest.MonkeyPatch):
    from types import SimpleNamespace as NS

    from weft.schemas.jobs import LogEvent

    lines = [NS(timestamp="2026-01-01T10:00:00Z", level="info", message="step 1 loss 2.0")]
    fake = Recorder({"jobs.logs": NS(logs=lines)})
    monkeypatch.setattr(commands, "make_client", lambda url, key: fake)
    assert run("jobs", "logs", "j1", "--lines", "5").stdout == "[2026-01-01T10:00:00Z] [INFO] step 1 loss 2.0\n"
    fake.answers["jobs.logs"] = iter([LogEvent(id=1, text="[10:00:00] [INFO] a"), LogEvent(id=2, text="b")])
    assert run("jobs", "logs", "j1", "-f").stdout == "[10:00:00] [INFO] a\nb\n"
    assert fake.calls == [("jobs.logs", ("j1",), {"lines": 5}), ("jobs.logs", ("j1",), {"follow": True})]
