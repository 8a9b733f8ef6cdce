"""Model search and details (document 003's `GET /models/search` and `GET /models/{source}/{model_id}`).

Sources, a fixed set: `registry` (the caller's models), `huggingface` (the local Hugging Face cache, and the Hub's
API when it can be reached), `catalog` (the cloud providers' models weft knows). Nothing is invented: sizes,
licenses and architectures come from files on disk, the database or the Hub's own answer; what could not be
reached is said in `notes`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from sqlmodel import Session, col, or_, select

from weft import hardware
from weft.errors import NotFound, Unavailable
from weft.tables import CloudModel, Model, Provider

SOURCES = ("registry", "huggingface", "catalog")
HUB_TIMEOUT_SECONDS = 5.0


class Found(BaseModel):
    """One search result (document 003's item)."""

    id: str
    name: str
    source: str
    size_gb: float | None = None
    license: str | None = None
    downloads: int | None = Field(default=None, description="the Hub's count; null where not known")
    tags: list[str] = Field(default_factory=list)
    where: str = Field(description="registry | local cache | hub | catalog")


class Searched(BaseModel):
    models: list[Found]
    total: int
    page: int = 1
    notes: list[str] = Field(default_factory=list, description="sources that could not be searched, and why")


def _gb(nbytes: int | float | None) -> float | None:
    return hardware.gb(nbytes) if nbytes else None


def _registry(session: Session, user_id: str, q: str) -> list[Found]:
    stmt = select(Model).where(Model.user_id == user_id, or_(col(Model.name).icontains(q, autoescape=True),
                                                             col(Model.uri).icontains(q, autoescape=True)))
    return [Found(id=m.id, name=m.name, source="registry", size_gb=_gb((m.details or {}).get("size_bytes")),
                  license=(m.details or {}).get("license"), tags=[t["name"] for t in m.tags or []] + [m.type],
                  where="registry") for m in session.exec(stmt.order_by(col(Model.created_at).desc()))]


def _card(folder: Path) -> dict[str, Any]:
    """The YAML front matter of a model card in `folder`, if any."""
    readme = folder / "README.md"
    if not readme.is_file():
        return {}
    from huggingface_hub import ModelCard

    try:
        return ModelCard(readme.read_text(errors="replace")).data.to_dict()
    except Exception:  # a card without valid front matter tells nothing
        return {}


def cached_models() -> dict[str, tuple[Path, int]]:
    """The model repositories in the local Hugging Face cache: repo id → (latest snapshot folder, bytes)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir()
    except CacheNotFound:
        return {}
    out = {}
    for repo in info.repos:
        if repo.repo_type == "model" and repo.revisions:
            latest = max(repo.revisions, key=lambda r: r.last_modified)
            out[repo.repo_id] = (Path(latest.snapshot_path), repo.size_on_disk)
    return out


def _cache(q: str) -> list[Found]:
    found = []
    for repo_id, (folder, size) in sorted(cached_models().items()):
        if q.lower() in repo_id.lower():
            card = _card(folder)
            tags = card.get("tags") or []
            found.append(Found(id=repo_id, name=repo_id.rsplit("/", 1)[-1], source="huggingface", size_gb=_gb(size),
                               license=card.get("license"), tags=tags if isinstance(tags, list) else [str(tags)],
                               where="local cache"))
    return found


def hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hub(q: str, limit: int) -> list[Found]:
    """The Hub's own search (raises when it cannot be reached)."""
    from huggingface_hub import HfApi

    models = HfApi().list_models(search=q, limit=limit, cardData=True)
    return [Found(id=m.id, name=m.id.rsplit("/", 1)[-1], source="huggingface", downloads=m.downloads,
                  license=(m.card_data or {}).get("license") if m.card_data else None, tags=list(m.tags or []),
                  where="hub") for m in models]


def _catalog(session: Session, q: str) -> list[Found]:
    stmt = select(CloudModel, Provider).join(Provider, col(Provider.id) == col(CloudModel.provider_id)).where(
        or_(col(CloudModel.name).icontains(q, autoescape=True), col(CloudModel.uri).icontains(q, autoescape=True)))
    return [Found(id=cm.uri, name=cm.name, source="catalog", tags=[provider.name, cm.modality], where="catalog")
            for cm, provider in session.exec(stmt.order_by(col(CloudModel.name)))]


def search(session: Session, user_id: str, q: str, source: str | None, limit: int) -> Searched:
    """Every source (or the one named) searched for `q`, the caller's registry first."""
    sources = [source] if source else list(SOURCES)
    found: list[Found] = []
    notes: list[str] = []
    if "registry" in sources:
        found += _registry(session, user_id, q)
    if "huggingface" in sources:
        local = _cache(q)
        found += local
        if hub_offline():
            notes.append("the Hugging Face Hub was not reached: HF_HUB_OFFLINE is set, so only the local cache was "
                         "searched")
        else:
            try:
                cached = {f.id for f in local}
                found += [f for f in _hub(q, limit) if f.id not in cached]
            except Exception as exc:  # unreachable, DNS, timeouts: the local results still stand
                notes.append(f"the Hugging Face Hub was not reached ({type(exc).__name__}): only the local cache "
                             "was searched")
    if "catalog" in sources:
        found += _catalog(session, q)
    return Searched(models=found[:limit], total=len(found), notes=notes)


def _algorithms() -> list[str]:
    from weft.training.trainer import four_bit_unavailable

    return ["lora", "dora"] + ([] if four_bit_unavailable() else ["qlora"])


def _requirements(meta: dict[str, Any]) -> dict[str, float | None]:
    """`min_vram_gb`: serving in int4; `recommended_vram_gb`: LoRA training in fp16 (weft.hardware)."""
    if not meta.get("parameter_count"):
        return {"min_vram_gb": None, "recommended_vram_gb": None}
    est = hardware.estimate(meta["parameter_count"], num_layers=meta.get("num_layers"),
                            hidden_size=meta.get("hidden_size"), num_attention_heads=meta.get("num_attention_heads"),
                            num_key_value_heads=meta.get("num_key_value_heads"),
                            context_length=meta.get("context_length"))
    return {"min_vram_gb": est.serve_int4_gb, "recommended_vram_gb": est.train_lora_gb}


def _described(model_id: str, name: str, source: str, meta: dict[str, Any], license_: str | None,
               description: str | None) -> dict[str, Any]:
    return {"id": model_id, "name": name, "source": source, "description": description,
            "size_gb": _gb(meta.get("size_bytes")), "license": license_ or meta.get("license"),
            "architecture": meta.get("architecture"), "context_length": meta.get("context_length"),
            "parameter_count": meta.get("parameter_count"), "hardware_requirements": _requirements(meta),
            "compatible_algorithms": _algorithms()}


def details(session: Session, user_id: str, source: str, model_id: str) -> dict[str, Any]:
    """Document 003's model details from the named source; `NotFound` where it has no such model."""
    from weft.model_metadata import ModelMetadataError, extract_metadata

    if source == "registry":
        model = session.get(Model, model_id)
        if model is None or model.user_id != user_id:
            raise NotFound.of("model", model_id)
        return _described(model.id, model.name, source, model.details or {}, None, model.description)
    if source == "catalog":
        row = session.exec(select(CloudModel).where(CloudModel.uri == model_id)).first()
        if row is None:
            raise NotFound.of("catalog model", model_id)
        return {**_described(row.uri, row.name, source, {"context_length": row.context_length}, None,
                             row.description), "hardware_requirements": {"min_vram_gb": 0, "recommended_vram_gb": 0},
                "compatible_algorithms": []}  # served by its provider: nothing to run or train here
    cached = cached_models().get(model_id)
    if cached is None:
        if hub_offline():
            raise Unavailable(f"{model_id} is not in the local Hugging Face cache and the Hub was not reached "
                              "(HF_HUB_OFFLINE is set)", {"source": source, "model_id": model_id})
        return _hub_details(model_id)
    folder, size = cached
    try:
        meta = extract_metadata(folder).model_dump()
    except ModelMetadataError as exc:
        raise NotFound(f"{model_id} is in the local cache but has no model weights: {exc}",
                       {"source": source, "model_id": model_id}) from exc
    card = _card(folder)
    return _described(model_id, model_id.rsplit("/", 1)[-1], source, {**meta, "size_bytes": size},
                      card.get("license"), None)


def _hub_details(model_id: str) -> dict[str, Any]:
    """Details from the Hub's API (its config and safetensors index), when it can be reached."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        info = HfApi().model_info(model_id, files_metadata=False)
    except RepositoryNotFoundError as exc:
        raise NotFound.of("Hugging Face model", model_id) from exc
    except Exception as exc:
        raise Unavailable(f"the Hugging Face Hub was not reached ({type(exc).__name__})",
                          {"source": "huggingface", "model_id": model_id}) from exc
    config = (info.config or {}) if isinstance(info.config, dict) else {}
    text = config.get("text_config") or config
    meta = {"architecture": (config.get("architectures") or [None])[0],
            "parameter_count": info.safetensors.total if info.safetensors else None,
            "num_layers": text.get("num_hidden_layers"), "hidden_size": text.get("hidden_size"),
            "num_attention_heads": text.get("num_attention_heads"),
            "num_key_value_heads": text.get("num_key_value_heads"),
            "context_length": text.get("max_position_embeddings")}
    license_ = (info.card_data or {}).get("license") if info.card_data else None
    return _described(model_id, model_id.rsplit("/", 1)[-1], "huggingface", meta, license_, None)
