"""What a generation takes and gives: its parameters, its result, per-position logprobs."""

from __future__ import annotations

from dataclasses import dataclass, replace

DEFAULT_MAX_BATCH = 16  # sequences weft's server decodes together (a replica's concurrency)

# for each position of prompt + completion after the first: (token id, its logprob, top-k [(id, logprob)])
PositionLogprobs = list[tuple[int, float, list[tuple[int, float]]]]


@dataclass
class GenParams:
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None = None

    def for_choice(self, j: int) -> GenParams:
        """The parameters of the j-th choice of a request: a given seed moves on by `j` so choices differ."""
        return self if self.seed is None else replace(self, seed=self.seed + j)


@dataclass
class GenResult:
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" | "length"
