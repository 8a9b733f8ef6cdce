"""Proprietary credentials: the secret lives in a Prefect Secret block (`weft.secret_blocks`), never
in weft's tables."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlmodel import col, select

from api.deps import CurrentUser, SessionDep, get_owned
from api.paging import Listing, Paging, paginate
from weft.schemas.common import Page
from weft.schemas.credentials import CredentialIn, CredentialOut
from weft.secret_blocks import block_name, remove_secret, store_secret
from weft.tables import Credential, new_id

router = APIRouter(prefix="/credentials", tags=["credentials"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CredentialOut)
def create_credential(body: CredentialIn, user: CurrentUser, session: SessionDep) -> CredentialOut:
    """Store the secret in the Prefect Secret block `weft-credential-<id>`; the response never echoes it."""
    row = Credential(id=new_id(), user_id=user.id, name=body.name, provider_type=body.provider_type, block_name="")
    row.block_name = block_name("credential", row.id)
    store_secret(session, row, row.block_name, body.secret)
    return CredentialOut.model_validate(row)


@router.get("", response_model=Page[CredentialOut])
def list_credentials(user: CurrentUser, session: SessionDep, page: Paging, listing: Listing) -> dict:
    """The caller's credentials, without their secrets."""
    stmt = (select(Credential).where(Credential.user_id == user.id)
            .order_by(col(Credential.created_at), col(Credential.id)))
    return paginate(session, stmt, page, CredentialOut.model_validate, listing, CredentialOut)


@router.delete("/{credential_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_credential(credential_id: str, user: CurrentUser, session: SessionDep) -> None:
    """Delete the credential and its Secret block."""
    row = get_owned(session, Credential, credential_id, user.id, "credential")
    remove_secret(row.block_name)
    session.delete(row)
    session.commit()
