"""A Hugging Face model card (README.md) for a model leaving the platform, rendered by `huggingface_hub`."""

from __future__ import annotations

import json
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from weft.tables import Adapter, Model


def _table(rows: dict[str, Any]) -> str:
    if not rows:
        return "_none recorded_"
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in sorted(rows.items())]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "–" if value is None else str(value)


def _eval_table(evaluation: dict[str, Any]) -> str:
    base, tuned = evaluation.get("base_model") or {}, evaluation.get("fine_tuned") or {}
    if not tuned:
        return "_not evaluated on weft yet_"
    lines = ["| metric | base model | fine-tuned |", "|---|---|---|"]
    lines += [f"| {name} | {_cell(base.get(name))} | {_cell(tuned[name])} |" for name in sorted(tuned)]
    return "\n".join(lines)


def model_card(model: Model, adapter: Adapter | None, base: Model | None, metrics: dict[str, Any],
               exports: list[str]) -> str:
    """README.md: YAML front matter (base_model, license, tags, library_name) and the model's lineage, training
    configuration, evaluation table, exported files and intended use."""
    details = model.details or {}
    license_ = (base.details or {}).get("license") if base else details.get("license")
    method = adapter.method if adapter else None
    tags = ["weft", *([method, "peft"] if adapter else []), *(["gguf"] if any(e.endswith(".gguf") for e in exports)
                                                              else [])]
    data = ModelCardData(
        base_model=(base.uri or base.name) if base else model.base_model,
        license=license_ or "other",
        tags=tags,
        library_name="peft" if adapter else "transformers",
        pipeline_tag="text-generation" if model.modality == "llm" else None,
    )
    training = metrics.get("training") or {}
    config = adapter.config if adapter else {}
    lines = [
        f"# {model.name}",
        "",
        model.description or (f"A {method} adapter of {model.base_model}, fine-tuned on weft." if adapter
                              else f"{model.name}, exported from weft."),
        "",
        "## Lineage",
        f"- weft model id: `{model.id}`",
        f"- base model: `{model.base_model or '–'}`",
    ]
    if adapter:
        lines += [f"- adapter: `{adapter.id}` ({method})",
                  f"- training job: `{adapter.workflow_id or 'uploaded'}`",
                  f"- dataset: `{adapter.dataset_id or '–'}` (sha256 fingerprint `{adapter.dataset_fingerprint or '–'}`)"]
    lines += ["", "## Training configuration", "```json", json.dumps(config, indent=2, sort_keys=True, default=str),
              "```", "", "## Training metrics", _table(training), "",
              "## Evaluation", _eval_table(metrics.get("evaluation") or {}), ""]
    if exports:
        lines += ["## Files", *(f"- `{name}`" for name in exports), ""]
    use = (f"Specialised for {model.specialization}." if model.specialization else
           "Text generation in the domain of its training data; check the evaluation above before relying on it.")
    lines += [
        "## Intended use",
        use,
        "Load the adapter with `peft.PeftModel.from_pretrained(base, 'lora_adapters')`, the merged folder with "
        "`transformers`, or the GGUF file with llama.cpp / Ollama.",
        "",
        "## Limitations",
        "Fine-tuning on a narrow dataset can reduce quality outside it; the evaluation covers only its test set "
        "and benchmarks.",
    ]
    return str(ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n{{ body }}\n",
                                       body="\n".join(lines)))
