"""The platform catalog (weft/catalog/platforms.yaml) with the settings' URL and price overrides."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field

from weft.errors import NotFound
from weft.settings import get_settings

CATALOG = Path(__file__).parent.parent / "catalog" / "platforms.yaml"


class Pricing(BaseModel):
    """A resource's price; `hourly_rate` is None where nothing prices it."""

    hourly_rate: float | None = None
    currency: str = "USD"
    billing_increment: int = Field(default=1, ge=1, description="seconds a run's time is rounded up to")
    minimum_charge: float = 0.0


class ResourceDef(BaseModel):
    id: str
    name: str
    gpu_type: str | None = None
    gpu_count: int = 0
    vram_gb: float | None = None
    cpu_cores: int | None = None
    ram_gb: float | None = None
    storage_gb: float | None = None
    pricing: Pricing = Field(default_factory=Pricing)


class PlatformApi(BaseModel):
    base_url: str
    verify_path: str


class PlatformDef(BaseModel):
    name: str
    display_name: str
    kind: Literal["local", "kubernetes", "cloud"]
    features: list[str]
    api: PlatformApi | None = None
    pool_type: str = "process"
    resources: list[ResourceDef] = []


@lru_cache(maxsize=1)
def _catalog() -> dict[str, PlatformDef]:
    data = yaml.safe_load(CATALOG.read_text())
    return {p["name"]: PlatformDef.model_validate(p) for p in data["platforms"]}


def platforms() -> list[PlatformDef]:
    """Every platform of the catalog, in its order."""
    return list(_catalog().values())


def get_platform(name: str) -> PlatformDef:
    """The catalog's platform `name`; `NotFound` for any other name."""
    try:
        return _catalog()[name]
    except KeyError:
        raise NotFound(f"platform {name} not found: one of {', '.join(_catalog())}",
                       {"resource": "platform", "id": name}) from None


def api_url(platform: PlatformDef) -> str:
    """The cloud's API base URL: the settings' override, else the catalog's."""
    assert platform.api is not None, f"{platform.name} has no API"
    return get_settings().platform_urls.get(platform.name, platform.api.base_url).rstrip("/")


def priced(provider: str, resource_id: str, pricing: Pricing) -> Pricing:
    """`pricing` with the settings' hourly rate for provider/resource_id, where one is set."""
    override = get_settings().resource_prices.get(f"{provider}/{resource_id}")
    return pricing if override is None else pricing.model_copy(update={"hourly_rate": override})
