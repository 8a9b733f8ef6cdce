"""`weft eval`: compare a fine-tuned model with its base."""

from __future__ import annotations

from typing import Annotated

import typer

from weft.commands import JsonOption, api, clean, fields, output

app = typer.Typer(help="Evaluate a model against its base model.", no_args_is_help=True)

DETAIL = ["id", "model_id", "status", "test_set_path", "dataset_id", "base_model_name", "fine_tuned_name", "promoted",
          "error", "results", "gate", "started_at", "completed_at"]


@app.command("create")
def create(model_id: str,
           test_set: Annotated[str | None, typer.Option("--test-set", help="A test file on the server's disk.")]
           = None,
           dataset_id: Annotated[str | None, typer.Option("--dataset-id", help="Or a registered dataset.")] = None,
           base_model: Annotated[str | None, typer.Option("--base-model", help="Compare with this model instead "
                                                                             "of the base.")] = None,
           json_output: JsonOption = False) -> None:
    """Start an evaluation of a model."""
    with api() as client:
        created = client.evaluations.create(model_id, **clean(test_set_path=test_set, dataset_id=dataset_id,
                                                                base_model_name=base_model))
    output(created, json_output, lambda: typer.echo(f"evaluation {created.evaluation_id} ({created.status}): "
                                                    f"{created.message}"))


@app.command("show")
def show_evaluation(evaluation_id: str, json_output: JsonOption = False) -> None:
    """Show an evaluation and its results."""
    with api() as client:
        evaluation = client.evaluations.get(evaluation_id)
    output(evaluation, json_output, lambda: fields(evaluation, DETAIL))
