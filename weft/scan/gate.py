"""The deploy gate: a model may be deployed when its last scan is SAFE or a user overrode it."""

from __future__ import annotations

from weft.tables import Model


class NotDeployable(Exception):
    pass


def check_deployable(model: Model) -> str:
    """Why the model may be deployed ("scan SAFE" / "override by ..."), else NotDeployable with the reason."""
    if model.scan is None:
        raise NotDeployable(f"model {model.id} has not been security-scanned; run POST /api/v1/models/security-scan")
    if model.scan_verified:
        return "scan SAFE"
    if model.scan_override:
        o = model.scan_override
        return f"scan {model.scan['status']} overridden by {o['username']} ({o['user_id']}) at {o['at']}: {o['reason']}"
    raise NotDeployable(f"model {model.id} scan status is {model.scan['status']} "
                        f"({model.scan['total_issues']} issues); record an override to deploy it anyway")
