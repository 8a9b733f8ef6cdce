"""`weft models`: the model registry."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from weft.commands import JsonOption, api, attr, fields, output, size, table

app = typer.Typer(help="List, inspect, download, export and delete registered models.", no_args_is_help=True)

COLUMNS = [("ID", attr("id")), ("NAME", attr("name")), ("TYPE", attr("type")), ("STATUS", attr("status")),
           ("SIZE", lambda m: size(m.total_size))]
DETAIL = ["id", "name", "description", "type", "status", "base_model", "specialization", "modality", "provider_type",
          "uri", "job_id", "workflow_id", "total_size", "scan_verified", "training_metrics", "eval_results",
          "deployments", "download_links", "created_at", "updated_at"]


class ExportFormat(StrEnum):
    gguf = "gguf"
    merged = "merged"


@app.command("ls")
def list_models(json_output: JsonOption = False) -> None:
    """List your models."""
    with api() as client:
        found = list(client.models.list())
    output(found, json_output, lambda: table(found, COLUMNS, "models"))


@app.command("show")
def show_model(model_id: str, json_output: JsonOption = False) -> None:
    """Show one model."""
    with api() as client:
        model = client.models.get(model_id)
    output(model, json_output, lambda: fields(model, DETAIL))


@app.command("download")
def download(model_id: str,
             out: Annotated[Path, typer.Option("--out", "-o", help="File, or folder for the server's file name.")]
             = Path("."),
             json_output: JsonOption = False) -> None:
    """Download a model's files as a ZIP."""
    with api() as client:
        path = client.models.download(model_id, out, progress=not json_output)
    output({"model_id": model_id, "path": str(path)}, json_output, lambda: typer.echo(f"saved {path}"))


@app.command("export")
def export(model_id: str,
           format: Annotated[ExportFormat, typer.Option(help="gguf (llama.cpp) or merged safetensors.")]
           = ExportFormat.gguf,
           quantization: Annotated[str | None, typer.Option(help="GGUF quantization, e.g. q8_0 or q4_k_m.")] = None,
           json_output: JsonOption = False) -> None:
    """Start an export of a model (a workflow)."""
    with api() as client:
        started = client.models.export(model_id, format=format.value, quantization=quantization)

    def render() -> None:
        typer.echo(f"{started.message}\nworkflow {started.workflow_id} ({started.status})")
        if started.warning:
            typer.echo(f"warning: {started.warning}", err=True)

    output(started, json_output, render)


@app.command("rm")
def remove(model_id: str, json_output: JsonOption = False) -> None:
    """Delete a model and its stored files."""
    with api() as client:
        deleted = client.models.delete(model_id)
    output(deleted, json_output, lambda: typer.echo(f"{deleted.message}: {deleted.id}"))
