"""Proprietary credentials: the secret lives in a Prefect Secret block, never in weft's tables.

The endpoints are sync (run in the threadpool), so the sync face of Prefect's block API is used;
an `async def` endpoint would `await Secret(value=...).asave(name)` instead.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Response, status
from prefect.blocks.system import Secret
from sqlmodel import Session, col, select

from api.deps import CurrentUser, SessionDep, get_owned
from api.errors import ApiError
from api.paging import Page, Paging, paginate
from api.schemas.credentials import CredentialIn, CredentialOut
from weft.tables import Credential, new_id

log = logging.getLogger(__name__)
router = APIRouter(prefix="/credentials", tags=["credentials"])


def block_name_for(credential_id: str) -> str:
    return f"weft-credential-{credential_id}"


def prefect_unavailable(action: str) -> ApiError:
    return ApiError(503, "SERVICE_UNAVAILABLE", f"could not {action} the secret in Prefect; is the server up?")


def delete_block(name: str) -> None:
    """Delete a Secret block; one already gone is fine."""
    try:
        Secret.delete(name)
    except ValueError:  # Prefect's "Unable to find block document named ..."
        log.info("secret block %s was already gone", name)


def store_secret(session: Session, row: Any, block_name: str, secret: str) -> None:
    """Save `secret` as the Secret block `block_name`, then commit `row`; a failed commit removes the
    block again (no orphan secret). An unreachable Prefect server is a 503."""
    try:
        Secret(value=secret).save(block_name)
    except Exception as exc:
        log.exception("could not save secret block %s", block_name)
        raise prefect_unavailable("store") from exc
    session.add(row)
    try:
        session.commit()
    except Exception:
        session.rollback()
        delete_block(block_name)
        raise


def remove_secret(block_name: str) -> None:
    """Delete a Secret block before its row goes; an unreachable Prefect server is a 503."""
    try:
        delete_block(block_name)
    except Exception as exc:
        log.exception("could not delete secret block %s", block_name)
        raise prefect_unavailable("delete") from exc


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CredentialOut)
def create_credential(body: CredentialIn, user: CurrentUser, session: SessionDep) -> CredentialOut:
    """Store the secret in the Prefect Secret block `weft-credential-<id>`; the response never echoes it."""
    row = Credential(id=new_id(), user_id=user.id, name=body.name, provider_type=body.provider_type, block_name="")
    row.block_name = block_name_for(row.id)
    store_secret(session, row, row.block_name, body.secret)
    return CredentialOut.model_validate(row)


@router.get("", response_model=Page[CredentialOut])
def list_credentials(user: CurrentUser, session: SessionDep, page: Paging) -> dict:
    """The caller's credentials, without their secrets."""
    stmt = (select(Credential).where(Credential.user_id == user.id)
            .order_by(col(Credential.created_at), col(Credential.id)))
    return paginate(session, stmt, page, CredentialOut.model_validate)


@router.delete("/{credential_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_credential(credential_id: str, user: CurrentUser, session: SessionDep) -> None:
    """Delete the credential and its Secret block."""
    row = get_owned(session, Credential, credential_id, user.id, "credential")
    remove_secret(row.block_name)
    session.delete(row)
    session.commit()
