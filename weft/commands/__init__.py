"""The `weft` API commands (one module per command group) and what they share: the client, errors, and
output as a rich table or, with `--json`, the raw JSON.

Every API command opens the client with `with api() as client:`; a `WeftError` or an `httpx.HTTPError`
inside it becomes `error CODE: message` on stderr and exit code 1. `weft.client` (and httpx) are imported
only when a command runs, so `weft --help` stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from pydantic import BaseModel

    from weft.client import Client

JsonOption = Annotated[bool, typer.Option("--json", help="Print the raw JSON instead of a table (for scripts).")]


@dataclass
class Connection:
    """The global `--api-url` / `--api-key` (None: the client's defaults: env, then `weft login`'s file)."""

    api_url: str | None = None
    api_key: str | None = None


def make_client(api_url: str | None, api_key: str | None) -> Client:
    """The client every command uses (tests replace this function to reach an in-process API)."""
    from weft.client import Client

    return Client(api_key=api_key, base_url=api_url)


connection = Connection()


def set_connection(api_url: str | None, api_key: str | None) -> None:
    """Take the global options (the app's callback calls this before any command runs)."""
    global connection
    connection = Connection(api_url=api_url, api_key=api_key)


def fail(code: str, message: str, details: Any = None) -> NoReturn:
    """Print `error CODE: message` (and the details as compact JSON) on stderr and exit 1."""
    typer.echo(f"error {code}: {message}", err=True)
    if details:
        typer.echo(json.dumps(details, separators=(",", ":"), default=str), err=True)
    raise typer.Exit(1)


@contextmanager
def api(api_url: str | None = None, api_key: str | None = None) -> Iterator[Client]:
    """A client for the API (the arguments win over the global options); the API's and the network's
    errors become `fail`."""
    import httpx

    from weft.errors import WeftError

    try:
        with make_client(api_url or connection.api_url, api_key or connection.api_key) as client:
            yield client
    except WeftError as exc:
        fail(exc.code, exc.message, exc.details)
    except httpx.HTTPError as exc:
        try:
            where = f"{exc.request.method} {exc.request.url}: "
        except RuntimeError:  # an error raised outside a request has none
            where = ""
        fail("CONNECTION_ERROR", f"{where}{str(exc) or type(exc).__name__}")
    except ConnectionError as exc:  # a log stream that kept dropping
        fail("CONNECTION_ERROR", str(exc))


def dump(value: Any) -> Any:
    """A schema object, a list of them, or plain data as JSON-ready data."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [dump(v) for v in value]
    return value


def print_json(value: Any) -> None:
    """`value` as indented JSON on stdout."""
    typer.echo(json.dumps(dump(value), indent=2, default=str))


def cell(value: Any) -> str:
    """One value as table text: `-` for none, compact JSON for dicts and lists."""
    if value is None or value == "":
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, dict | list):
        return json.dumps(dump(value), separators=(",", ":"), default=str)
    if hasattr(value, "model_dump"):
        return cell(value.model_dump(mode="json"))
    return str(value)


Column = tuple[str, Callable[[Any], Any]]
WRAPPED = frozenset({"NAME", "BASE MODEL", "TITLE"})  # the columns of free text


def table(rows: Iterable[Any], columns: Sequence[Column], title: str | None = None) -> None:
    """A rich table, one row per item, each column a (header, getter) pair."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    grid = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD)
    for header, _ in columns:  # ids and statuses stay whole (copyable); free text wraps
        grid.add_column(header, no_wrap=header not in WRAPPED, overflow="fold", min_width=len(header))
    for row in rows:
        grid.add_row(*(cell(get(row)) for _, get in columns))
    Console().print(grid if grid.row_count else f"no {title or 'items'}")


def fields(item: BaseModel, names: Sequence[str] | None = None) -> None:
    """A record as a two-column table of its fields (`names`, or all of them)."""
    from rich.console import Console
    from rich.table import Table

    grid = Table(show_header=False, box=None)
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for name in names or type(item).model_fields:
        grid.add_row(name, cell(getattr(item, name, None)))
    Console().print(grid)


def output(value: Any, json_output: bool, render: Callable[[], None]) -> None:
    """`value` as JSON with `--json`, else `render()`."""
    if json_output:
        print_json(value)
    else:
        render()


def attr(path: str) -> Callable[[Any], Any]:
    """A getter of a dotted attribute or key path (`config.base_model`)."""

    def get(item: Any) -> Any:
        for part in path.split("."):
            item = item.get(part) if isinstance(item, dict) else getattr(item, part, None)
        return item

    return get


def size(n: int | None) -> str:
    """Bytes in a human unit."""
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1024
        if value < 1024 or unit == "TB":
            break
    return f"{value:.1f} {unit}"


def clean(**values: Any) -> dict[str, Any]:
    """The given values without the ones left at None."""
    return {k: v for k, v in values.items() if v is not None}
