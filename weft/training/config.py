"""The training configuration of document 003, validated with ranges (errors name the field)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Quantizations a job config may name that weft cannot train, and why (refused rather than trained otherwise).
UNSUPPORTED_QUANTIZATION = {"int8": "weft's qlora trains on a 4-bit NF4 base only ('nf4'); 8-bit training is "
                                    "not implemented. Omit quantization for full-precision lora or dora"}


def quantization_refusal(value: object) -> str | None:
    """Why `value` is a quantization weft cannot train, or None."""
    why = UNSUPPORTED_QUANTIZATION.get(value) if isinstance(value, str) else None
    return f"quantization {value!r} is not supported: {why}" if why else None


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["lora", "qlora", "dora"] = "lora"
    rank: int = Field(default=16, ge=1, le=512)
    alpha: int = Field(default=32, ge=1, le=1024)
    dropout: float = Field(default=0.05, ge=0.0, le=0.5)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    quantization: Literal["none", "nf4"] | None = None
    learning_rate: float = Field(default=2e-4, gt=0.0, le=1e-2)
    batch_size: int = Field(default=4, ge=1, le=512)
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=512)
    num_epochs: float = Field(default=1.0, gt=0.0, le=100.0)
    max_steps: int | None = Field(default=None, ge=1, description="overrides num_epochs when set")
    warmup_steps: int = Field(default=0, ge=0, le=100_000)
    validation_split: float = Field(default=0.0, ge=0.0, le=0.5)
    checkpoint_steps: int = Field(default=50, ge=1, le=1_000_000)
    max_seq_length: int = Field(default=512, ge=16, le=131_072)
    logging_steps: int = Field(default=10, ge=1)
    seed: int = Field(default=42, ge=0)

    @field_validator("quantization", mode="before")
    @classmethod
    def _quantization_supported(cls, value):
        if refusal := quantization_refusal(value):
            raise ValueError(refusal)
        return value

    @model_validator(mode="after")
    def _quantization_matches_method(self):
        if self.method == "qlora" and self.quantization in (None, "none"):
            self.quantization = "nf4"
        if self.method != "qlora" and self.quantization not in (None, "none"):
            raise ValueError(f"quantization {self.quantization!r} needs method 'qlora'")
        return self
