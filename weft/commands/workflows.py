"""`weft workflows`: the runs behind jobs, evaluations, exports and deploys."""

from __future__ import annotations

from typing import Annotated

import typer

from weft.commands import JsonOption, api, attr, fields, output, table

app = typer.Typer(help="List, inspect, retry and cancel workflows.", no_args_is_help=True)

COLUMNS = [("ID", attr("id")), ("TYPE", attr("workflow_type")), ("NAME", attr("name")), ("STATUS", attr("status"))]
DETAIL = ["id", "name", "workflow_type", "status", "current_step", "total_steps", "reason", "flow_run_id", "output",
          "metrics", "created_at", "updated_at", "completed_at"]
STEP_COLUMNS = [("STEP", attr("id")), ("TITLE", attr("title")), ("STATUS", attr("status"))]


@app.command("ls")
def list_workflows(workflow_type: Annotated[str | None, typer.Option("--type", help="Only this workflow type, e.g. "
                                                                                   "fine_tune.")] = None,
                   status: Annotated[str | None, typer.Option(help="Only this status, e.g. running.")] = None,
                   json_output: JsonOption = False) -> None:
    """List your workflows, newest first."""
    with api() as client:
        found = list(client.workflows.list(workflow_type=workflow_type, status=status))
    output(found, json_output, lambda: table(found, COLUMNS, "workflows"))


@app.command("show")
def show_workflow(workflow_id: str, json_output: JsonOption = False) -> None:
    """Show one workflow and its steps."""
    with api() as client:
        workflow = client.workflows.get(workflow_id)

    def render() -> None:
        fields(workflow, DETAIL)
        table(workflow.steps, STEP_COLUMNS, "steps")

    output(workflow, json_output, render)


@app.command("retry")
def retry(workflow_id: str, json_output: JsonOption = False) -> None:
    """Run a failed or cancelled workflow again."""
    with api() as client:
        workflow = client.workflows.retry(workflow_id)
    output(workflow, json_output, lambda: typer.echo(f"workflow {workflow.id} {workflow.status}"))


@app.command("cancel")
def cancel(workflow_id: str, json_output: JsonOption = False) -> None:
    """Cancel a workflow's run."""
    with api() as client:
        workflow = client.workflows.cancel(workflow_id)
    output(workflow, json_output, lambda: typer.echo(f"workflow {workflow.id} {workflow.status}"))
