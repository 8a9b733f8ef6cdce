"""`weft datasets`: training and test data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from weft.commands import JsonOption, api, attr, fields, output, size, table

app = typer.Typer(help="Upload, list, inspect and analyze datasets.", no_args_is_help=True)

COLUMNS = [("ID", attr("id")), ("NAME", attr("name")), ("RECORDS", attr("record_count")),
           ("SIZE", lambda d: size(d.size_bytes)), ("STATUS", attr("status"))]


@app.command("ls")
def list_datasets(json_output: JsonOption = False) -> None:
    """List your datasets."""
    with api() as client:
        found = list(client.datasets.list())
    output(found, json_output, lambda: table(found, COLUMNS, "datasets"))


@app.command("show")
def show_dataset(dataset_id: str, json_output: JsonOption = False) -> None:
    """Show one dataset."""
    with api() as client:
        dataset = client.datasets.get(dataset_id)
    output(dataset, json_output, lambda: fields(dataset))


@app.command("upload")
def upload(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                                help="A JSONL, JSON, CSV or Parquet file.")],
           name: Annotated[str | None, typer.Option(help="The dataset's name (default: the file's stem).")] = None,
           description: Annotated[str | None, typer.Option(help="What the data is.")] = None,
           json_output: JsonOption = False) -> None:
    """Upload a dataset file."""
    with api() as client:
        dataset = client.datasets.upload(file, name=name, description=description, progress=not json_output)
    records = f", {dataset.record_count} records" if dataset.record_count is not None else ""
    output(dataset, json_output, lambda: typer.echo(f"dataset {dataset.id} ({dataset.name}) {dataset.status}{records}"))


@app.command("analyze")
def analyze(dataset_id: str, json_output: JsonOption = False) -> None:
    """Start an analysis of a dataset (a workflow)."""
    with api() as client:
        started = client.datasets.analyze(dataset_id)
    output(started, json_output, lambda: typer.echo(
        f"analysis of {started.id}: workflow {started.workflow_id} ({started.status})"))
