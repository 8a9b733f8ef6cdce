"""Export tasks: resolve the model, merge its adapter into its base, write a GGUF, verify it, record it."""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from tasks.common import step_options
from weft.clock import utcnow
from weft.db import session_scope
from weft.export.formats import DEGRADED
from weft.registry.layout import GGUF, MERGED, adapter_of, export_key, gguf_name, storage_key
from weft.specs.export import ExportSpec
from weft.storage import get_storage
from weft.tables import Model

DEFAULT_PROMPT = "The quick brown fox"


class ExportInputs(BaseModel):
    model_id: str
    name: str
    weights_key: str | None  # the model's own Hugging Face folder (no adapter)
    base_key: str | None  # with an adapter: its base's folder
    adapter_key: str | None
    prompt: str


class Merged(BaseModel):
    key: str
    adapter_check: dict[str, Any] | None  # merged vs base + adapter: the adapter's effect survived


class Gguf(BaseModel):
    key: str
    quantization: str
    size_bytes: int
    tensor_count: int


@task(**step_options("resolve_export"))
def resolve_export(spec: ExportSpec) -> ExportInputs:
    """The model's folders: its adapter and base, or its own weights."""
    storage = get_storage()
    with session_scope() as s:
        model = s.get(Model, spec.model_id)
        adapter = adapter_of(s, model)
        base = s.get(Model, adapter.base_model_id) if adapter else None
        inputs = ExportInputs(model_id=model.id, name=model.name,
                              weights_key=None if adapter else storage_key(storage, model),
                              base_key=storage_key(storage, base) if base else None,
                              adapter_key=adapter.storage_key if adapter else None,
                              prompt=spec.prompt or DEFAULT_PROMPT)
    if (inputs.base_key or inputs.weights_key) is None:
        raise ValueError(f"model {spec.model_id} has no Hugging Face weights in weft's storage to export")
    return inputs


@task(**step_options("merge_weights", log_prints=False))
def merge_weights(inputs: ExportInputs) -> Merged:
    """Fold the adapter into its base (`merge_and_unload`), check the merged model answers like base + adapter,
    and store it as safetensors; a model without an adapter is its own merged folder."""
    from weft.export.merge import merge_adapter
    from weft.export.verify import verify_merge

    log = get_run_logger()
    if inputs.adapter_key is None:
        log.info("%s has no adapter: its own weights are converted", inputs.name)
        return Merged(key=inputs.weights_key, adapter_check=None)
    storage = get_storage()
    key = export_key(inputs.model_id, MERGED)
    with ExitStack() as stack:
        base_dir = stack.enter_context(storage.local(inputs.base_key))
        adapter_dir = stack.enter_context(storage.local(inputs.adapter_key))
        out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="weft-merge-"))) / "merged"
        merge_adapter(base_dir, adapter_dir, out)
        check = verify_merge(base_dir, adapter_dir, out, inputs.prompt)
        log.info("merged model vs base + adapter on %r: max |Δlogit| %.3g, greedy tokens %s", inputs.prompt,
                 check.max_abs_logit_delta, "equal" if check.greedy_equal else "DIFFERENT")
        if not check.argmax_equal:
            raise ValueError(f"the merged model does not answer like base + adapter (max |Δlogit| "
                             f"{check.max_abs_logit_delta:.3g}): the merge is wrong, refusing to store it")
        size = storage.put_dir(out, key)
    log.info("stored the merged model (%d bytes) at %s", size, storage.url(key))
    return Merged(key=key, adapter_check=check.model_dump())


@task(**step_options("convert_gguf", log_prints=False))
def convert_gguf(inputs: ExportInputs, merged: Merged, quantization: str) -> Gguf:
    """Write the merged model as GGUF (the `gguf` package's writer; K-quants through llama-quantize)."""
    from weft.export.gguf_writer import write_gguf

    log = get_run_logger()
    if quantization in DEGRADED:
        log.warning("%s: %s", quantization, DEGRADED[quantization])
    storage = get_storage()
    key = f"{export_key(inputs.model_id, GGUF)}/{gguf_name(quantization)}"
    with storage.local(merged.key) as hf_dir, tempfile.TemporaryDirectory(prefix="weft-gguf-") as tmp:
        written = write_gguf(Path(hf_dir), Path(tmp) / gguf_name(quantization), quantization)
        with written.path.open("rb") as f:
            storage.write_stream(key, f)
    log.info("wrote %s: %d tensors, %d bytes", storage.url(key), written.tensor_count, written.size_bytes)
    return Gguf(key=key, quantization=quantization, size_bytes=written.size_bytes, tensor_count=written.tensor_count)


@task(**step_options("verify_gguf", log_prints=False))
def verify_gguf(inputs: ExportInputs, merged: Merged, gguf: Gguf) -> dict[str, Any]:
    """Reload the GGUF with transformers and compare logits and greedy tokens with the merged model."""
    from weft.export.verify import verify_gguf as compare

    storage = get_storage()
    with storage.local(merged.key) as hf_dir, storage.local(gguf.key) as gguf_file:
        result = compare(Path(hf_dir), Path(gguf_file), inputs.prompt)
    log = get_run_logger()
    log.info("GGUF %s vs merged model on %r: max |Δlogit| %.3g, argmax %s, greedy tokens %s", gguf.quantization,
             inputs.prompt, result.max_abs_logit_delta, "equal" if result.argmax_equal else "DIFFERENT",
             "equal" if result.greedy_equal else "DIFFERENT")
    if not result.argmax_equal and gguf.quantization not in DEGRADED:
        log.warning("the %s GGUF changes the most likely token on %r", gguf.quantization, inputs.prompt)
    return result.model_dump()


@task(**step_options("record_export"))
def record_export(inputs: ExportInputs, format: str, merged: Merged, gguf: Gguf | None,
                  verification: dict[str, Any] | None) -> dict[str, Any]:
    """Record the export (where, what, how faithful) on the model: `details.exports.<format>`."""
    storage = get_storage()
    entry: dict[str, Any] = {"at": utcnow().isoformat(), "prompt": inputs.prompt, "merged_key": merged.key,
                             "adapter_check": merged.adapter_check}
    if gguf is not None:
        entry.update(key=gguf.key, quantization=gguf.quantization, size_bytes=gguf.size_bytes,
                     tensor_count=gguf.tensor_count, verification=verification,
                     max_abs_logit_delta=verification["max_abs_logit_delta"] if verification else None,
                     degraded=DEGRADED.get(gguf.quantization))
    with session_scope() as s:
        model = s.get(Model, inputs.model_id)
        exports = dict((model.details or {}).get("exports") or {})
        exports[format] = entry
        model.details = {**(model.details or {}), "exports": exports}
        model.updated_at = utcnow()
        s.add(model)
    lines = [f"# Export of {inputs.name}: {format}", "", f"- stored at `{storage.url(entry.get('key', merged.key))}`"]
    if gguf is not None and verification:
        lines += [f"- {gguf.quantization}, {gguf.tensor_count} tensors, {gguf.size_bytes} bytes",
                  f"- reloaded with transformers: max |Δlogit| {verification['max_abs_logit_delta']:.4g}, argmax "
                  f"{'equal' if verification['argmax_equal'] else 'different'}, greedy tokens "
                  f"{'equal' if verification['greedy_equal'] else 'different'} on `{inputs.prompt}`"]
    if merged.adapter_check:
        lines.append(f"- merged vs base + adapter: max |Δlogit| {merged.adapter_check['max_abs_logit_delta']:.3g}")
    create_markdown_artifact("\n".join(lines), key=f"export-{inputs.model_id[:8]}", description="export summary")
    return entry
