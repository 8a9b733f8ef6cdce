"""Token-length distribution of records with a registered model's tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

BATCH = 512


class TokenStats(BaseModel):
    model_id: str
    context_length: int | None
    records: int  # how many records were tokenized
    sampled: bool  # True: a uniform sample of the dataset, not every record
    chat_template: bool
    p50: float
    p95: float
    max: int
    mean: float
    over_context: int  # records longer than the context (in the tokenized set)
    over_context_share: float


def token_lengths(tokenizer_dir: Path, sample: list[Any], *, chat: bool) -> tuple[np.ndarray, bool]:
    """Token counts of each sampled record (chat records go through the model's chat template)."""
    fast = Path(tokenizer_dir) / "tokenizer.json"
    if not chat and fast.exists():  # the Rust tokenizer alone: same ids, without importing transformers
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(fast))
        counts = [len(e.ids) for start in range(0, len(sample), BATCH)
                  for e in tokenizer.encode_batch(list(sample[start:start + BATCH]))]
        return np.array(counts, dtype=np.int64), False
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    templated = chat and bool(getattr(tokenizer, "chat_template", None))
    counts: list[int] = []
    for start in range(0, len(sample), BATCH):  # encodings are large: keep only their lengths
        part = sample[start:start + BATCH]
        if templated:
            texts = [tokenizer.apply_chat_template(messages, tokenize=False) for messages in part]
            ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        else:
            texts = ["\n".join(m.get("content", "") for m in s) if chat else s for s in part]
            ids = tokenizer(texts)["input_ids"]
        counts += [len(x) for x in ids]
    return np.array(counts, dtype=np.int64), templated


def token_stats(model_id: str, tokenizer_dir: Path, sample: list[Any], *, chat: bool, context_length: int | None,
                sampled: bool) -> TokenStats:
    lengths, templated = token_lengths(tokenizer_dir, sample, chat=chat)
    if not len(lengths):
        lengths = np.zeros(1, np.int64)
    over = int((lengths > context_length).sum()) if context_length else 0
    return TokenStats(model_id=model_id, context_length=context_length, records=len(sample), sampled=sampled,
                      chat_template=templated, p50=float(np.percentile(lengths, 50)),
                      p95=float(np.percentile(lengths, 95)), max=int(lengths.max()), mean=float(lengths.mean()),
                      over_context=over, over_context_share=round(over / max(1, len(sample)), 6))
