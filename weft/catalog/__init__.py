"""The seeded provider catalog (providers.yaml), kept in the database so steps can validate ids."""

from __future__ import annotations

from pathlib import Path

import yaml

from weft.tables import CloudModel, Provider

CATALOG = Path(__file__).parent / "providers.yaml"


def seed_catalog() -> None:
    """Insert or update every catalog provider and cloud model (idempotent)."""
    from weft.db import session_scope

    data = yaml.safe_load(CATALOG.read_text())
    with session_scope() as s:
        for p in data["providers"]:
            models = p.pop("models", [])
            s.merge(Provider(**p))
            for m in models:
                s.merge(CloudModel(provider_id=p["id"], **m))
