"""Spec of the export workflow: a model's merged safetensors, or a GGUF for llama.cpp / Ollama."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from weft import pools
from weft.export.formats import QUANTIZATIONS
from weft.specs.base import Stage, StepDef, StepModel, StoredModelId, WorkflowType, register
from weft.specs.names import WorkflowName

ExportFormat = Literal["gguf", "merged"]


class ExportOptions(StepModel):
    """What to export (also a fine-tune job config's `export`, run when training is done)."""

    format: ExportFormat = Field(default="gguf", description="gguf | merged (safetensors of base + adapter)")
    quantization: str = Field(default="q8_0", description=f"GGUF type: {', '.join(QUANTIZATIONS)}")
    prompt: str | None = Field(default=None, max_length=2000,
                               description="prompt the verification compares outputs on (a trained prompt shows "
                                           "the adapter's effect survived)")

    @field_validator("quantization")
    @classmethod
    def known_quantization(cls, value: str) -> str:
        value = value.lower()
        if value not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}")
        return value


class ExportSpec(ExportOptions):
    model_id: StoredModelId = Field(description="the model to export (fine-tuned: merged with its base first)")


EXPORT_MODEL = register(
    WorkflowType(
        name=WorkflowName.EXPORT_MODEL,
        title="Export",
        steps=(StepDef(1, "Model and format", ExportSpec),),
        spec=ExportSpec,
        flow_name=WorkflowName.EXPORT_MODEL,
        pools=pools.GPU_FIRST,
        stages=(
            Stage("resolve_export", "Resolve the model, its base and adapter"),
            Stage("merge_weights", "Merge the adapter into its base and check the adapter's effect survived"),
            Stage("convert_gguf", "Write the GGUF"),
            Stage("verify_gguf", "Reload the GGUF and compare logits and greedy tokens"),
            Stage("record_export", "Record the export on the model"),
        ),
    )
)
