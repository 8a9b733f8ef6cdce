"""Time in one zone: every stored and returned time is UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, timezone-aware, in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """`value` as an aware UTC time (SQLite hands back naive datetimes; every stored time is UTC)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
