"""The Python client and the `weft` command line against the real stack: the Python examples of documents
000, 001 and 003 as they are written (the package renamed to weft), a log stream that survives a killed
connection, and the CLI's job sequence and error output through its installed entry point."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import weft
from tests.helpers.e2e import onboard_from_disk, register
from weft.testing import classic_models as cm

pytestmark = pytest.mark.e2e
WEFT_CLI = str(Path(sys.executable).parent / "weft")
CODES = [{"messages": [{"role": "user", "content": f"code {i}"}, {"role": "assistant", "content": f"part {i % 3}"}]}
         for i in range(24)]


@pytest.fixture(scope="module")
def user(api) -> dict[str, str]:
    return register(api, "sdk")


@pytest.fixture(scope="module")
def api_key(api, user) -> str:
    r = api.post("/api/v1/auth/api-keys", headers=user, json={"name": "sdk"})
    assert r.status_code == 201, r.text
    return r.json()["key"]


@pytest.fixture(scope="module")
def env(stack, api_key, tmp_path_factory):
    """WEFT_API_URL and WEFT_API_KEY for the module: what a user exports before running the examples."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WEFT_API_URL", stack.api_url)
        mp.setenv("WEFT_API_KEY", api_key)
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))  # no saved login applies
        yield {**os.environ}


@pytest.fixture(scope="module")
def base_model(api, user, tiny_model_dir) -> str:
    """The tiny model, registered under the name document 000's example fine-tunes."""
    return onboard_from_disk(api, user, tiny_model_dir, "mistral-7b")


@pytest.fixture(scope="module")
def client(env) -> weft.Client:
    with weft.Client() as c:
        yield c


@pytest.fixture(scope="module")
def codes(client, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("codes") / "codes.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in CODES))
    return client.datasets.wait(client.datasets.upload(path, progress=False).id).id


def gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()


def job_config(base_model: str, dataset_id: str, steps: int) -> dict:
    return {"base_model": base_model, "dataset_id": dataset_id, "algorithm": "lora", "rank": 4, "alpha": 8,
            "batch_size": 2, "max_steps": steps, "checkpoint_steps": steps, "logging_steps": 1,
            "learning_rate": 1e-3, "max_seq_length": 64}


def test_document_000_python_example(env, base_model, tmp_path, monkeypatch, capsys):
    """Document 000's example, verbatim but for the package name and a real key; its file path is the
    caller's (uploaded by the client). The example reads the status once right after starting, so a wait
    is inserted there, as a user would. Its deploy names what weft cannot honour here (int8, an AWS
    instance type, vLLM without a GPU): each is a 422 naming it, and the deploy runs without them."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "maintenance_procedures.jsonl").write_text("\n".join(json.dumps(row) for row in CODES))
    api_key = env["WEFT_API_KEY"]

    # Initialize client
    client = weft.Client(api_key=api_key)

    # Create a workflow
    workflow = client.workflows.create(
        name="Automotive Service Advisor",
        description="Fine-tuned model for automotive service department applications",
        workflow_type="fine-tuning",
        config={
            "task": "vertical-tune",
            "vertical": "automotive",
            "specialization": "service_advisor",
            "model": {
                "name": "mistral-7b",
                "revision": "v0.1"
            },
            "dataset": {
                "primary": "./datasets/maintenance_procedures.jsonl",
                "validation_split": 0.1
            },
            "fine_tuning": {
                "method": "QLoRA",
                "parameters": {
                    "epochs": 3,
                    "learning_rate": 2e-4
                }
            }
        }
    )

    # Start the workflow
    client.workflows.start(workflow.id)
    client.workflows.wait(workflow.id, timeout=600)  # inserted: the example reads the status only once

    # Check workflow status
    workflow_status = client.workflows.get(workflow.id)
    print(f"Workflow status: {workflow_status.status}")

    # the example's deploy names an int8 quantization (weft serves weights as stored), an AWS instance type
    # and, on this CPU machine, vLLM: each is refused with a 422 naming it, never ignored
    model_id = workflow_status.output.model_id
    for field, value in (("quantization", "int8"), ("instance_type", "g4dn.xlarge"), ("endpoint_type", "vllm")):
        if field == "endpoint_type" and gpu_available():
            continue
        with pytest.raises(weft.Invalid) as refused:
            client.models.deploy(model_id, instance_count=1, **{field: value})
        assert field in refused.value.message, refused.value

    # Once workflow is completed, deploy the model
    if workflow_status.status == "completed":
        deployment = client.models.deploy(
            workflow_status.output.model_id,
            instance_count=1
        )
        print(f"Model deployed: {deployment.endpoint_url}")

    # Make a prediction
    prediction = client.inference.predict(
        model_id=workflow_status.output.model_id,
        prompt="Vehicle: Toyota Camry 2022\nMileage: 35000\nLast Service: 2025-01-15\nLast Service Mileage: 30000\nCustomer Concern: Strange noise when braking\n\nWhat service recommendations would you provide?",  # noqa: E501
        max_tokens=500
    )
    print(prediction.output)

    out = capsys.readouterr().out
    assert "Workflow status: completed" in out and "Model deployed: http" in out, out
    assert workflow_status.output.model_id != base_model and workflow_status.metrics["train_loss"] > 0
    assert workflow_status.config["dataset_id"] and workflow_status.completed_at is not None
    assert prediction.tokens_output > 0 and prediction.model_id == workflow_status.output.model_id
    downloaded = client.models.download(workflow_status.output.model_id, tmp_path, progress=False)
    assert downloaded.suffix == ".zip" and downloaded.stat().st_size > 0


def test_document_001_python_example(env, tmp_path, monkeypatch, capsys):
    """Document 001's example as written, `serveml` renamed to weft, in a folder holding its two files."""
    monkeypatch.chdir(tmp_path)
    model, _ = cm.iris()
    cm.write_pickle(model, tmp_path / "model.pkl")
    (tmp_path / "requirements.txt").write_text(cm.pinned("scikit-learn", "numpy", "scipy", "joblib", "threadpoolctl"))
    api_key = env["WEFT_API_KEY"]

    from weft import Client

    # Initialize client
    client = Client(api_key=api_key)

    # Deploy model
    deployment = client.deploy(
        model_path="model.pkl",
        requirements_path="requirements.txt",
        name="my-model"
    )

    # Make prediction
    result = deployment.predict([5.1, 3.5, 1.4, 0.2])
    print(result.prediction)

    # Get metrics
    metrics = deployment.get_metrics(hours=24)
    print(f"Total predictions: {metrics.request_count}")

    out = capsys.readouterr().out
    assert result.prediction == model.predict([[5.1, 3.5, 1.4, 0.2]]).tolist()[0]
    assert "Total predictions: 1" in out, out
    assert [v.version for v in deployment.versions()] == ["v1"]
    with pytest.raises(weft.Invalid):
        deployment.rollback("latest")


def test_document_003_python_examples(env, base_model, codes, stack):
    """Document 003's PEFT Studio client, as written against this stack, and the same two calls on weft's."""
    import requests

    class PEFTStudioClient:
        def __init__(self, api_key: str):
            self.base_url = f"{stack.api_url}/api/v1"  # the document's http://localhost:8000/api/v1
            self.headers = {"Authorization": f"Bearer {api_key}"}

        def create_job(self, config: dict) -> str:
            response = requests.post(
                f"{self.base_url}/jobs",
                json={"config": config},
                headers=self.headers
            )
            response.raise_for_status()
            return response.json()["job_id"]

        def get_job_status(self, job_id: str) -> dict:
            response = requests.get(
                f"{self.base_url}/jobs/{job_id}",
                headers=self.headers
            )
            response.raise_for_status()
            return response.json()

    # Usage
    client = PEFTStudioClient(env["WEFT_API_KEY"])
    job_id = client.create_job(job_config(base_model, codes, 2))
    status = client.get_job_status(job_id)
    assert status["job_id"] == job_id and status["status"] in ("pending", "running", "completed")

    # the same, on weft's client
    client = weft.Client(env["WEFT_API_KEY"])
    job_id = client.create_job(job_config(base_model, codes, 2))
    status = client.get_job_status(job_id)
    assert status.job_id == job_id and status.config["base_model"]


class Cutter:
    """A TCP proxy to the API that can drop every open connection at once (a network cut)."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                downstream, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.open += [downstream, upstream]
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> int:
        with self.lock:
            dropped, self.open = self.open, []
        for s in dropped:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        return len(dropped) // 2

    def close(self) -> None:
        self.server.close()
        self.cut()


def test_log_follow_survives_a_cut_connection_without_losing_or_repeating_a_line(env, stack, base_model, codes):
    cutter = Cutter(int(stack.api_url.rsplit(":", 1)[1]))
    try:
        client = weft.Client(env["WEFT_API_KEY"], base_url=f"http://127.0.0.1:{cutter.port}")
        job = client.jobs.create(job_config(base_model, codes, 12))
        seen, cuts = [], 0
        for event in client.jobs.logs(job.job_id, follow=True):
            seen.append(event)
            if len(seen) in (3, 8):  # mid-stream, twice
                cuts += cutter.cut()
        assert cuts >= 2
        ids = [e.id for e in seen]
        assert ids == list(range(1, len(ids) + 1)), ids  # nothing lost, nothing repeated
        assert any("step 12/12" in e.text for e in seen)
        uncut = list(weft.Client(env["WEFT_API_KEY"]).jobs.logs(job.job_id, follow=True))
        assert [(e.id, e.text) for e in uncut] == [(e.id, e.text) for e in seen]
        assert client.jobs.get(job.job_id).status == "completed"
    finally:
        cutter.close()


def cli(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([WEFT_CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_cli_create_follow_logs_then_show(env, base_model, codes, tmp_path):
    config = tmp_path / "job.yaml"
    import yaml

    config.write_text(yaml.safe_dump({"config": job_config(base_model, codes, 4)}))
    created = cli(env, "jobs", "create", "-f", str(config), "--json")
    assert created.returncode == 0, created.stderr
    job_id = json.loads(created.stdout)["job_id"]
    logs = cli(env, "jobs", "logs", job_id, "-f")
    assert logs.returncode == 0, logs.stderr
    assert "step 4/4" in logs.stdout, logs.stdout
    shown = cli(env, "jobs", "show", job_id, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["status"] == "completed", shown.stdout
    table = cli(env, "jobs", "ls")
    assert table.returncode == 0 and job_id[:8] in table.stdout


def test_cli_errors_exit_1_with_the_apis_code_and_message(env, base_model):
    missing = cli(env, "jobs", "show", "no-such-job")
    assert missing.returncode == 1 and missing.stderr.startswith("error "), missing.stderr
    assert "NOT_FOUND" in missing.stderr.splitlines()[0] and "no-such-job" in missing.stderr
    assert "Traceback" not in missing.stderr
    invalid = cli(env, "deploy", base_model, "--min", "3", "--max", "1")
    assert invalid.returncode == 1 and invalid.stderr.startswith("error VALIDATION_ERROR"), invalid.stderr
    assert "max_instances" in invalid.stderr and "Traceback" not in invalid.stderr
