"""Which replicas serve traffic: healthy, with a URL, and heard from within
`replica_stale_seconds` (a replica whose heartbeat stopped leaves rotation without a state change)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_

from weft.clock import as_utc, utcnow
from weft.settings import get_settings
from weft.statuses import ReplicaState
from weft.tables import Replica


def fresh_after() -> datetime:
    """The oldest heartbeat that still counts."""
    return utcnow() - timedelta(seconds=get_settings().replica_stale_seconds)


def in_rotation() -> Any:
    """The SQL condition on `Replica` rows that may take requests now."""
    return and_(Replica.state == ReplicaState.HEALTHY, Replica.last_seen >= fresh_after(), Replica.url.is_not(None))


def observed_state(replica: Replica) -> str:
    """The state to report: a healthy replica that went silent is `unresponsive`."""
    if replica.state == ReplicaState.HEALTHY and (replica.last_seen is None
                                                  or as_utc(replica.last_seen) < fresh_after()):
        return ReplicaState.UNRESPONSIVE
    return replica.state
