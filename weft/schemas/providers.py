"""The seeded cloud-provider catalog and the models each provider serves."""

from __future__ import annotations

from weft.schemas.common import Out


class ProviderOut(Out):
    id: str
    name: str
    provider_type: str
    description: str | None
    base_url: str | None
    icon: str | None


class CloudModelOut(Out):
    id: str
    provider_id: str
    name: str
    uri: str
    modality: str
    context_length: int | None
    description: str | None
