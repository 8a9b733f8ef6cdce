"""`weft login`: check an API key and save it for later commands."""

from __future__ import annotations

from typing import Annotated

import typer

from weft.commands import JsonOption, api, output


def login(url: Annotated[str | None, typer.Option("--url", help="The API's base URL (default: --api-url, "
                                                                 "WEFT_API_URL, the saved one, then "
                                                                 "http://127.0.0.1:8000).")] = None,
          api_key: Annotated[str | None, typer.Option("--api-key", help="The key (asked for when not given).")]
          = None,
          json_output: JsonOption = False) -> None:
    """Check an API key against the API and save it (with the URL) for the next commands."""
    from weft.client.config import save

    key = api_key or typer.prompt("API key", hide_input=True)
    with api(url, key) as client:
        me = client.me()
        base_url = client.base_url
    path = save(base_url, key)
    result = {"api_url": base_url, "username": me.username, "config_path": str(path)}
    output(result, json_output, lambda: typer.echo(f"logged in to {base_url} as {me.username}; "
                                                   f"saved to {path}"))
