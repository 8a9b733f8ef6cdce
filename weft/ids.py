"""Every id scheme of weft's records, in one place.

Rows created by a flow get a uuid5 of their workflow id, so a step that runs again (retry, resume)
writes the same row instead of a second one; rows created by a request get a random uuid4.
"""

from __future__ import annotations

import re
import uuid


def new_id() -> str:
    """A fresh random id (uuid4)."""
    return str(uuid.uuid4())


def _stable(kind: str, *parts: object) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, ":".join([f"weft-{kind}", *map(str, parts)])))


def model_id_of(workflow_id: str) -> str:
    """The model an onboarding workflow registers."""
    return _stable("model", workflow_id)


def adapter_id_of(workflow_id: str) -> str:
    """The adapter a fine-tune workflow trains."""
    return _stable("adapter", workflow_id)


def finetuned_model_id_of(workflow_id: str) -> str:
    """The model (base + adapter) a fine-tune workflow registers."""
    return _stable("finetuned", workflow_id)


def endpoint_id_of(workflow_id: str) -> str:
    """The endpoint a deploy workflow creates."""
    return _stable("endpoint", workflow_id)


def recommendation_id_of(endpoint_id: str, kind: str) -> str:
    """An optimization recommendation: one per endpoint and kind (`opt_` + 12 hex digits)."""
    return f"opt_{uuid.uuid5(uuid.NAMESPACE_URL, f'{endpoint_id}:{kind}').hex[:12]}"


def slug_of(name: str) -> str:
    """A URL-safe form of a display name: lower case, runs of anything else than [a-z0-9] as one `-`."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "endpoint"
