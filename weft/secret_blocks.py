"""Where weft keeps secrets: Prefect Secret blocks, one per credential, webhook signing secret or
cluster configuration, never in weft's tables, step data or logs.

The functions are sync (callers run them in a thread); an async caller uses `anyio.to_thread`.
Prefect is imported when a secret is touched, so importing this module (and `weft.webhooks.verify`,
which a webhook receiver uses) stays cheap.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlmodel import Session

from weft.errors import Unavailable

log = logging.getLogger(__name__)


def block_name(kind: str, row_id: str) -> str:
    """The block of one record's secret: `weft-credential-<id>`, `weft-webhook-<id>`, `weft-cluster-<id>`."""
    return f"weft-{kind}-{row_id}"


def read_secret(name: str) -> str:
    """The value of the Secret block `name`."""
    from prefect.blocks.system import Secret

    return str(Secret.load(name).get())


def _unavailable(action: str) -> Unavailable:
    return Unavailable(f"could not {action} the secret in Prefect; is the server up?")


def save_secret(name: str, value: str) -> None:
    """Save (or replace) the Secret block `name`; an unreachable Prefect server is `Unavailable`."""
    from prefect.blocks.system import Secret

    try:
        Secret(value=value).save(name, overwrite=True)
    except Exception as exc:
        log.exception("could not save secret block %s", name)
        raise _unavailable("store") from exc


def store_secret(session: Session, row: Any, name: str, value: str) -> None:
    """Save `value` as the Secret block `name`, then commit `row`; a failed commit removes the block
    again, so no secret outlives its row."""
    save_secret(name, value)
    session.add(row)
    try:
        session.commit()
    except Exception:
        session.rollback()
        _delete(name)
        raise


def _delete(name: str) -> None:
    from prefect.blocks.system import Secret

    try:
        Secret.delete(name)
    except ValueError:  # Prefect's "Unable to find block document named ..."
        log.info("secret block %s was already gone", name)


def remove_secret(name: str) -> None:
    """Delete the Secret block `name` (one already gone is fine) before its row goes."""
    try:
        _delete(name)
    except Exception as exc:
        log.exception("could not delete secret block %s", name)
        raise _unavailable("delete") from exc
