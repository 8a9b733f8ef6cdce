"""One replica of an endpoint's revision: start its OpenAI-compatible server, then heartbeat until the
controller stops it (its row says `stopped`, or the run is cancelled: the server dies with this process)
or the server dies (the run fails)."""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack

import httpx
from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from sqlmodel import select

from flows import names
from weft.classic import replica as classic_replica
from weft.clock import utcnow
from weft.db import session_scope
from weft.net import free_port
from weft.serving import hosting, launch, placement
from weft.settings import get_settings
from weft.specs.names import WorkflowName
from weft.statuses import ReplicaState
from weft.storage import Storage, get_storage
from weft.tables import Adapter, Endpoint, HostedAdapter, Model, Replica, Revision


def mark(replica_id: str, **fields) -> str:
    """Update the replica's row, unless the controller has stopped it; returns its state."""
    with session_scope() as s:
        replica = s.get(Replica, replica_id)
        if replica.state in (ReplicaState.STOPPED, ReplicaState.DRAINING) and "state" in fields:
            fields.pop("state")  # a replica leaving keeps leaving
        for key, value in fields.items():
            setattr(replica, key, value)
        replica.updated_at = utcnow()
        s.add(replica)
        return replica.state


def host_adapters(replica_id: str, url: str, stack: ExitStack, storage: Storage, refused: set[str],
                  log: logging.Logger) -> None:
    """Load the adapter revisions this base replica should serve (see weft.serving.hosting) and unload
    those it should not any more; the rows say what the gateway may send here. An adapter the server
    refused (`refused`, e.g. DoRA) is not tried again: its endpoint keeps replicas of its own."""
    with session_scope() as s:
        wanted = {w.revision_id: w for w in hosting.wanted(s, replica_id)}
        have = {h.revision_id: h.name for h in s.exec(select(HostedAdapter).where(HostedAdapter.replica_id == replica_id))}
        for revision_id in have.keys() - wanted.keys():  # out of rotation first, then unloaded
            s.delete(s.get(HostedAdapter, (replica_id, revision_id)))
    for revision_id in have.keys() - wanted.keys():
        httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": have[revision_id]}, timeout=60)
        log.info("unloaded adapter %s", have[revision_id])
    for revision_id in wanted.keys() - have.keys() - refused:
        w = wanted[revision_id]
        folder = stack.enter_context(storage.local(w.storage_key))
        r = httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": w.name, "lora_path": str(folder)}, timeout=120)
        if r.status_code != 200:
            log.warning("could not load adapter %s: %s", w.name, r.text[:500])
            refused.add(revision_id)
            continue
        with session_scope() as s:
            s.add(HostedAdapter(replica_id=replica_id, revision_id=revision_id, name=w.name))
        log.info("serving adapter %s (revision %s) beside the base", w.name, revision_id)


@flow(name=WorkflowName.SERVE_REPLICA.value, log_prints=True,
      flow_run_name=names.run_name(names.param("endpoint_id", Endpoint),
                                   names.param("replica_id", label="replica")))
def serve_replica(endpoint_id: str, replica_id: str) -> None:
    """Resolve model files → start the server → register URL and health → heartbeat while it lives."""
    log = get_run_logger()
    settings = get_settings()
    with session_scope() as s:
        endpoint, replica = s.get(Endpoint, endpoint_id), s.get(Replica, replica_id)
        revision = s.get(Revision, replica.revision_id) if replica.revision_id else None
        model = s.get(Model, revision.model_id if revision else endpoint.model_id)
        adapter = s.get(Adapter, model.details.get("adapter_id")) if model.provider_type == "adapter" else None
        base_key = f"models/{adapter.base_model_id}" if adapter else f"models/{model.id}"
        adapter_key, name = (adapter.storage_key if adapter else None), endpoint.slug or endpoint.name
        planned = revision.engine if revision else endpoint.engine
        max_batch = int(((revision.plan if revision else endpoint.plan) or {}).get("per_replica_concurrency")
                        or replica.max_concurrency)
        classic = ((dict(model.details), {"memory_mb": endpoint.memory_mb, "timeout_seconds": endpoint.timeout_seconds})
                   if planned == launch.CLASSIC_ENGINE else None)  # PATCH changes the limits of new replicas
    mark(replica_id, flow_run_id=str(flow_run.id), state=ReplicaState.STARTING)
    try:  # the engine the plan chose (what the endpoint reports), or a clear failure where it cannot run
        engine = launch.CLASSIC_ENGINE if classic else placement.choose_engine(planned, placement.local_device()[0])
    except placement.PlacementError as exc:
        mark(replica_id, state=ReplicaState.UNHEALTHY, reason=str(exc))
        raise
    with ExitStack() as stack:
        storage = get_storage()
        host, port = settings.replica_host, free_port("0.0.0.0")
        url = f"http://{host}:{port}"
        log_file = settings.home_dir / "logs" / "replicas" / f"{replica_id}.log"
        log.info("starting %s server for %s on %s (log %s)", engine, name, url, log_file)
        adapter_dir = None
        if classic:
            try:
                proc = classic_replica.start(stack, *classic, host, port, log_file)
            except Exception as exc:  # its environment could not be built here
                mark(replica_id, state=ReplicaState.UNHEALTHY, reason=str(exc)[:2000])
                raise
        else:
            model_dir = stack.enter_context(storage.local(base_key))
            adapter_dir = stack.enter_context(storage.local(adapter_key)) if adapter_key else None
            spec = launch.ServerSpec(model_dir=str(model_dir), served_name=name, host=host, port=port,
                                     adapter_dir=str(adapter_dir) if adapter_dir else None, engine=engine,
                                     max_batch=max_batch)
            proc = launch.start(spec, log_file)
        try:
            launch.wait_ready(proc, url, settings.replica_start_timeout_seconds, log_file)
        except RuntimeError as exc:
            mark(replica_id, state=ReplicaState.UNHEALTHY, reason=str(exc)[:2000])
            raise
        batch = launch.reported_batch(url) or max_batch
        state = mark(replica_id, url=url, engine=engine, max_concurrency=batch, state=ReplicaState.HEALTHY,
                     last_seen=utcnow(), reason=None)
        hosts_adapters, refused = adapter_dir is None and engine in hosting.HOSTING_ENGINES, set()
        log.info("replica %s is healthy at %s (%s, up to %d requests at once)", replica_id, url, engine, batch)
        while state != ReplicaState.STOPPED:
            time.sleep(settings.replica_heartbeat_seconds)
            if proc.poll() is not None:
                reason = f"the server exited with {proc.returncode}: {launch.tail(log_file, 500)}"
                mark(replica_id, state=ReplicaState.UNHEALTHY, reason=reason[:2000])
                raise RuntimeError(reason)
            if launch.healthy(url, timeout=settings.replica_heartbeat_seconds):
                state = mark(replica_id, last_seen=utcnow())
                if hosts_adapters:
                    try:
                        host_adapters(replica_id, url, stack, storage, refused, log)
                    except httpx.HTTPError as exc:  # the next heartbeat tries again
                        log.warning("could not update the adapters served here: %s", exc)
            else:
                log.warning("replica %s missed a health check", replica_id)
                state = mark(replica_id)
        log.info("replica %s stopped by the endpoint controller", replica_id)
        proc.terminate()
        proc.wait(timeout=30)
