"""`weft jobs`: fine-tuning jobs (document 003)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from weft.commands import JsonOption, api, attr, fail, fields, output, print_json, table

if TYPE_CHECKING:
    from weft.client import Client
    from weft.schemas.jobs import JobOut

app = typer.Typer(help="Create, follow and cancel fine-tuning jobs.", no_args_is_help=True)

POLL_SECONDS = 2.0
COLUMNS = [("JOB ID", attr("job_id")), ("STATUS", attr("status")), ("PROGRESS", lambda j: f"{j.progress:.0%}"),
           ("BASE MODEL", attr("config.base_model"))]
DETAIL = ["job_id", "status", "progress", "reason", "model_id", "adapter_id", "flow_run_id", "config", "metrics",
          "artifact", "duration_seconds", "cost", "created_at"]


def read_config(path: Path) -> dict[str, Any]:
    """A job config from a YAML or JSON file (its `config:` value when it has one)."""
    import yaml

    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        fail("INVALID_FILE", f"cannot read {path}: {exc}")
    if isinstance(document, dict) and isinstance(document.get("config"), dict):
        document = document["config"]
    if not isinstance(document, dict):
        fail("INVALID_FILE", f"{path} does not hold a job config (a mapping of base_model, dataset_id, ...)")
    return document


def wait(client: Client, job_id: str, show: bool = True) -> JobOut:
    """Poll the job until it has finished, with a progress bar when `show`."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from weft.statuses import RUN_TERMINAL

    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not show) as progress:
        task = progress.add_task(f"job {job_id}", total=1.0)
        while True:
            job = client.jobs.get(job_id)
            progress.update(task, completed=job.progress, description=f"job {job_id} {job.status}")
            if job.status in RUN_TERMINAL:
                return job
            time.sleep(POLL_SECONDS)


@app.command("create")
def create(file: Annotated[Path, typer.Option("--file", "-f", exists=True, dir_okay=False,
                                              help="YAML or JSON job config (base_model, dataset_id, algorithm, "
                                                   "...).")],
           wait_: Annotated[bool, typer.Option("--wait", help="Follow the job's progress until it finishes; "
                                                              "exit 1 unless it completed.")] = False,
           json_output: JsonOption = False) -> None:
    """Create a fine-tuning job and print its id."""
    config = read_config(file)
    with api() as client:
        created = client.jobs.create(config)
        if not wait_:
            output(created, json_output, lambda: typer.echo(created.job_id))
            return
        if not json_output:
            typer.echo(created.job_id)
        job = wait(client, created.job_id, show=not json_output)
    output(job, json_output, lambda: typer.echo(f"job {job.job_id} {job.status}"
                                                + (f": {job.reason}" if job.reason else "")
                                                + (f" (model {job.model_id})" if job.model_id else "")))
    if job.status != "completed":
        raise typer.Exit(1)


@app.command("ls")
def list_jobs(status: Annotated[str | None, typer.Option(help="pending, running, completed, failed or cancelled.")]
              = None,
              json_output: JsonOption = False) -> None:
    """List your jobs, newest first."""
    with api() as client:
        found = list(client.jobs.list(status=status))
    output(found, json_output, lambda: table(found, COLUMNS, "jobs"))


@app.command("show")
def show_job(job_id: str, json_output: JsonOption = False) -> None:
    """Show one job."""
    with api() as client:
        job = client.jobs.get(job_id)
    output(job, json_output, lambda: fields(job, DETAIL))


@app.command("logs")
def logs(job_id: str,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Print every line as it is written, until "
                                                                     "the job finishes.")] = False,
         lines: Annotated[int | None, typer.Option("--lines", min=1, help="Only the last N lines.")] = None,
         json_output: JsonOption = False) -> None:
    """Print a job's log (with --json and -f: one JSON object per line)."""
    with api() as client:
        if follow:
            for event in client.jobs.logs(job_id, follow=True):
                typer.echo(json.dumps(event.model_dump(mode="json")) if json_output else event.text)
            return
        found = client.jobs.logs(job_id, lines=lines)
    if json_output:
        print_json(found)
        return
    for line in found.logs:
        typer.echo(f"[{line.timestamp}] [{line.level.upper()}] {line.message}")


@app.command("cancel")
def cancel(job_id: str, json_output: JsonOption = False) -> None:
    """Cancel a job."""
    with api() as client:
        cancelled = client.jobs.cancel(job_id)
    output(cancelled, json_output, lambda: typer.echo(f"job {cancelled.job_id} {cancelled.status}"))
