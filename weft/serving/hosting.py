"""Adapters served by a replica of their base model: a running base replica (weft's transformers server)
loads, at run time, every adapter revision of its owner built on that base; the gateway then sends the
adapter endpoint's requests there (under the adapter's name), and the controller starts no copy of the
base for the adapter while such a replica serves it. Ten fine-tunes of one base need one base in memory."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, delete, select

from weft.serving.rotation import in_rotation
from weft.statuses import EndpointStatus, RevisionStatus
from weft.tables import Adapter, Endpoint, HostedAdapter, Model, Replica, Revision

HOSTING_ENGINES = ("transformers",)  # vLLM loads adapters at run time only when started with --enable-lora


@dataclass(frozen=True)
class Wanted:
    """An adapter revision a base replica should serve, and from which stored folder."""

    revision_id: str
    name: str
    storage_key: str


def _adapter_of(session: Session, model: Model | None) -> Adapter | None:
    if model is None or model.provider_type != "adapter":
        return None
    return session.get(Adapter, (model.details or {}).get("adapter_id"))


def wanted(session: Session, replica_id: str) -> list[Wanted]:
    """The adapter revisions the replica should serve: those of its owner's live adapter endpoints whose
    adapter was trained on the replica's model (none when the replica itself serves an adapter)."""
    replica = session.get(Replica, replica_id)
    revision = session.get(Revision, replica.revision_id) if replica and replica.revision_id else None
    endpoint = session.get(Endpoint, replica.endpoint_id) if replica else None
    if revision is None or endpoint is None or _adapter_of(session, session.get(Model, revision.model_id)):
        return []
    rows = session.exec(
        select(Revision, Endpoint, Model).join(Endpoint, Endpoint.id == Revision.endpoint_id)
        .join(Model, Model.id == Revision.model_id)
        .where(Endpoint.user_id == endpoint.user_id, Endpoint.id != endpoint.id, Model.provider_type == "adapter",
               col(Endpoint.status).not_in([EndpointStatus.STOPPING, EndpointStatus.STOPPED]),
               Revision.status != RevisionStatus.FAILED,
               (Revision.traffic > 0) | (Revision.status == RevisionStatus.DEPLOYING))).all()
    out = []
    for rev, ep, model in rows:
        adapter = _adapter_of(session, model)
        if adapter is not None and adapter.base_model_id == revision.model_id:
            out.append(Wanted(rev.id, f"{ep.slug or ep.id}-{rev.version}", adapter.storage_key))
    return out


def hosts(session: Session, revision_id: str) -> list[Replica]:
    """The replicas in rotation that serve the adapter revision for its endpoint."""
    return list(session.exec(select(Replica).join(HostedAdapter, HostedAdapter.replica_id == Replica.id)
                             .where(HostedAdapter.revision_id == revision_id, in_rotation())))


def forget(session: Session, replica_id: str) -> None:
    """The replica stopped: it serves no adapter any more."""
    session.exec(delete(HostedAdapter).where(HostedAdapter.replica_id == replica_id))
