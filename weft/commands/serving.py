"""`weft deploy`, `weft endpoints` and `weft predict`: serving models."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from weft.commands import JsonOption, api, attr, clean, fields, output, table

endpoints = typer.Typer(help="List, inspect, scale, roll back and delete endpoints.", no_args_is_help=True)

COLUMNS = [("ID", attr("id")), ("NAME", attr("name")), ("STATUS", attr("status")), ("ENGINE", attr("engine")),
           ("REPLICAS", lambda e: f"{e.min_instances}..{e.max_instances}")]
DETAIL = ["id", "name", "slug", "model_id", "status", "kind", "endpoint_type", "engine", "pool", "endpoint_url", "model",
          "min_instances", "max_instances", "target_concurrency", "reason", "metrics", "workflow_id", "created_at",
          "updated_at"]
VERSION_COLUMNS = [("VERSION", attr("version")), ("STATUS", attr("status")), ("TRAFFIC %", attr("traffic_percent")),
                   ("REPLICAS", lambda v: f"{v.healthy_replicas}/{v.desired_replicas}"), ("MODEL ID", attr("model_id"))]


class Engine(StrEnum):
    vllm = "vllm"
    transformers = "transformers"


MinOption = Annotated[int | None, typer.Option("--min", min=0, help="Fewest replicas (0 scales to zero when idle).")]
MaxOption = Annotated[int | None, typer.Option("--max", min=1, help="Most replicas.")]


def deploy(model_id: str, min_instances: MinOption = None, max_instances: MaxOption = None,
           name: Annotated[str | None, typer.Option(help="The endpoint's name (one of yours: adds a revision).")]
           = None,
           engine: Annotated[Engine | None, typer.Option(help="The serving engine (default: the best that runs).")]
           = None,
           json_output: JsonOption = False) -> None:
    """Deploy a model behind an OpenAI-compatible endpoint."""
    scaling = clean(min_instances=min_instances, max_instances=max_instances)
    config = clean(auto_scaling=scaling or None, endpoint_name=name, endpoint_type=engine.value if engine else None)
    with api() as client:
        deployed = client.models.deploy(model_id, **config)
    output(deployed, json_output, lambda: typer.echo(
        f"endpoint {deployed.id} ({deployed.name}, {deployed.version or 'v1'}) {deployed.status}\n"
        f"url {deployed.endpoint_url}  model {deployed.model}"))


def predict(model_id: Annotated[str, typer.Argument(metavar="ENDPOINT_OR_MODEL", help="The deployed model's id.")],
            prompt: str,
            max_tokens: Annotated[int | None, typer.Option(min=1, help="Most tokens to generate.")] = None,
            temperature: Annotated[float | None, typer.Option(min=0.0, max=2.0, help="Sampling temperature.")]
            = None,
            json_output: JsonOption = False) -> None:
    """Generate a completion from a deployed model."""
    with api() as client:
        answer = client.inference.predict(model_id, prompt, **clean(max_tokens=max_tokens, temperature=temperature))
    output(answer, json_output, lambda: typer.echo(answer.output))


@endpoints.command("ls")
def list_endpoints(json_output: JsonOption = False) -> None:
    """List your endpoints."""
    with api() as client:
        found = client.endpoints.list().data
    output(found, json_output, lambda: table(found, COLUMNS, "endpoints"))


@endpoints.command("show")
def show_endpoint(endpoint_id: str, json_output: JsonOption = False) -> None:
    """Show one endpoint with its versions."""
    with api() as client:
        endpoint = client.endpoints.get(endpoint_id)

    def render() -> None:
        fields(endpoint, DETAIL)
        table(endpoint.versions, VERSION_COLUMNS, "versions")

    output(endpoint, json_output, render)


@endpoints.command("scale")
def scale(endpoint_id: str, min_instances: MinOption = None, max_instances: MaxOption = None,
          json_output: JsonOption = False) -> None:
    """Change an endpoint's replica bounds."""
    if min_instances is None and max_instances is None:
        raise typer.BadParameter("give --min, --max or both")
    with api() as client:
        updated = client.deployments.scale(endpoint_id, min_instances=min_instances, max_instances=max_instances)
    output(updated, json_output, lambda: typer.echo(
        f"endpoint {updated.id} {updated.status}: replicas {updated.configuration.get('min_instances')}.."
        f"{updated.configuration.get('max_instances')}"))


@endpoints.command("rollback")
def rollback(endpoint_id: str, version: Annotated[str, typer.Argument(help="The version to send all traffic to, "
                                                                           "e.g. v1.")],
             json_output: JsonOption = False) -> None:
    """Send all of an endpoint's traffic to an earlier version."""
    with api() as client:
        updated = client.deployments.rollback(endpoint_id, version)
    output(updated, json_output, lambda: typer.echo(f"endpoint {updated.id} {updated.status}: all traffic to "
                                                    f"{version}"))


@endpoints.command("rm")
def remove(endpoint_id: str, json_output: JsonOption = False) -> None:
    """Delete an endpoint (its replicas drain, then stop)."""
    with api() as client:
        endpoint = client.endpoints.delete(endpoint_id)
    output(endpoint, json_output, lambda: typer.echo(f"endpoint {endpoint.id} {endpoint.status}"))
