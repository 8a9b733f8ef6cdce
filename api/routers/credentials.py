"""Proprietary credentials: the secret lives in a Prefect Secret block, never in weft's tables."""

from __future__ import annotations

from fastapi import APIRouter, status
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from sqlmodel import select

from api.deps import CurrentUser, SessionDep
from api.errors import ApiError, not_found
from api.paging import Paging, paginate
from api.schemas import CredentialIn, CredentialOut
from weft.tables import Credential, new_id

router = APIRouter(prefix="/credentials", tags=["credentials"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CredentialOut)
def create_credential(body: CredentialIn, user: CurrentUser, session: SessionDep) -> CredentialOut:
    cred_id = new_id()
    block_name = f"weft-credential-{cred_id}"
    try:
        Secret(value=body.secret).save(block_name)
    except Exception as exc:
        raise ApiError(503, "SERVICE_UNAVAILABLE", "could not store the secret in Prefect") from exc
    row = Credential(id=cred_id, user_id=user.id, name=body.name, provider_type=body.provider_type,
                     block_name=block_name)
    session.add(row)
    session.commit()
    return CredentialOut.model_validate(row, from_attributes=True)


@router.get("")
def list_credentials(user: CurrentUser, session: SessionDep, page: Paging) -> dict:
    stmt = select(Credential).where(Credential.user_id == user.id).order_by(Credential.created_at)
    return paginate(session, stmt, page,
                    lambda r: CredentialOut.model_validate(r, from_attributes=True).model_dump(mode="json"))


@router.delete("/{credential_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_credential(credential_id: str, user: CurrentUser, session: SessionDep) -> None:
    row = session.get(Credential, credential_id)
    if row is None or row.user_id != user.id:
        raise not_found("credential", credential_id)
    with get_client(sync_client=True) as client:
        try:
            document = client.read_block_document_by_name(row.block_name, "secret")
            client.delete_block_document(document.id)
        except ObjectNotFound:
            pass
    session.delete(row)
    session.commit()
