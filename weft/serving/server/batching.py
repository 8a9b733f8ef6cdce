"""Continuous batching: the sequences of concurrent requests are decoded together, one forward pass per
step for all of them. Between steps, waiting sequences join the running batch (their prompts are
prefilled together, left-padded, and their KV cache is padded onto the batch's) and finished ones leave.

Written here rather than taken from transformers: its `ContinuousBatchingManager` (`generate_batch`)
does run on CPU, but took 29.6 s for 3 prompts × 8 tokens of the tiny test model on this 2-core machine
(2026-12-06; plain `generate` takes milliseconds), and it has no per-request LoRA adapter (peft's
`adapter_names`), stop strings or streaming. vLLM is the path where a GPU is present.

Each step: one forward of the batch's pending tokens with its 2-D padding mask and per-row positions,
then for each row the next token (greedy, or sampled with the row's own generator), its stop checks
(EOS, stop strings on the decoded text, `max_tokens`, a cancelled client) and its streamed text.
Sequences that asked for logprobs are scored after they finish, in batches of their own. Callers are
answered at the end of the iteration, once their sequence has left the batch."""

from __future__ import annotations

import concurrent.futures
import logging
import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from weft.serving.server.stops import cut_at_stop, held_back
from weft.serving.server.types import GenParams, GenResult, PositionLogprobs

log = logging.getLogger(__name__)

BASE = "__base__"  # peft's name for "no adapter" in a mixed-adapter batch
SCORE_TOKENS = 8192  # padded tokens per logprob forward (its logits are tokens × vocabulary floats)
PREFILL_TOKENS = 16384  # padded prompt tokens prefilled together; more prompts wait for the next step


@dataclass(eq=False)
class Sequence:
    """One choice being generated: its request's inputs, its progress, and the future its caller awaits."""

    prompt_ids: list[int]
    params: GenParams
    adapter: str | None
    logprobs: int | None = None
    on_text: Callable[[str], None] | None = None
    cancel: threading.Event | None = None
    future: concurrent.futures.Future[tuple[GenResult, PositionLogprobs | None]] = field(
        default_factory=concurrent.futures.Future)
    gen_ids: list[int] = field(default_factory=list)
    result: GenResult | None = None
    sent: int = 0  # characters of text already streamed
    generator: torch.Generator | None = None

    @property
    def sampled(self) -> bool:
        return bool(self.params.temperature and self.params.temperature > 0)


class Batcher:
    """Owns the model: one scheduler thread runs every forward pass, for at most `max_batch` sequences at
    once (`max_batch=1` serves one sequence at a time). `submit` is thread-safe."""

    def __init__(self, model: Any, eos_ids: list[int], pad_id: int, decode: Callable[[list[int]], str],
                 max_batch: int, mixed_adapters: bool, device: str) -> None:
        self.model, self.eos_ids, self.pad_id, self.decode = model, set(eos_ids), pad_id, decode
        self.max_batch, self.device = max(1, max_batch), device
        # peft mixes adapters in one batch through `adapter_names` (not for DoRA): otherwise a batch holds
        # the sequences of one adapter, and the others wait until it has drained
        self.mixed_adapters = mixed_adapters
        self.has_adapters = hasattr(model, "peft_config")
        self.waiting: deque[Sequence] = deque()
        self.chores: deque[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = deque()  # see `between_steps`
        self.running: list[Sequence] = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # [batch, cached tokens]: 1 for real tokens, 0 for left padding
        self.next_ids: torch.Tensor | None = None  # [batch]: the sampled tokens not yet in the cache
        self.joinable = True  # False when the cache has layers this module cannot pad (sliding windows)
        self.finished: list[Sequence] = []  # out of the batch this iteration, answered at its end
        self.wake = threading.Condition()
        self.stopped = False
        self.thread = threading.Thread(target=self._loop, name="weft-batcher", daemon=True)
        self.thread.start()

    # ---- callers

    def submit(self, seq: Sequence) -> concurrent.futures.Future[tuple[GenResult, PositionLogprobs | None]]:
        with self.wake:
            if self.stopped:
                raise RuntimeError("the batcher is stopped")
            self.waiting.append(seq)
            self.wake.notify()
        return seq.future

    def between_steps(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        """Run `fn` in the scheduler thread between two steps (e.g. load an adapter: no forward runs then)."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self.wake:
            self.chores.append((fn, future))
            self.wake.notify()
        return future

    def close(self) -> None:
        with self.wake:
            self.stopped = True
            self.wake.notify()
        self.thread.join(timeout=30)

    @property
    def load(self) -> int:
        """Sequences running or waiting."""
        return len(self.running) + len(self.waiting)

    # ---- the scheduler thread

    def _loop(self) -> None:
        while True:
            with self.wake:
                while not self.stopped and not self.waiting and not self.running and not self.chores:
                    self.wake.wait()
                if self.stopped:
                    break
                chores, joining = list(self.chores), self._admit() if self.waiting else []
                self.chores.clear()
            for fn, future in chores:
                try:
                    future.set_result(fn())
                except Exception as exc:
                    future.set_exception(exc)
            try:
                with torch.inference_mode():
                    if joining:
                        self._prefill(joining)
                    if self.running:
                        self._step()
                    scored = self._score([s for s in self.finished if s.logprobs is not None])
                for seq in self.finished:
                    assert seq.result is not None
                    _resolve(seq, (seq.result, scored.get(id(seq))))
            except Exception as exc:  # a failed forward fails the sequences in it, not the server
                log.exception("generation failed")
                for seq in [*self.running, *joining, *self.finished]:
                    _resolve(seq, exc)
                self._reset()
            self.finished = []
        for seq in [*self.running, *self.waiting]:
            _resolve(seq, RuntimeError("the server is shutting down"))

    def _group(self, seq: Sequence) -> str | None:
        return None if self.mixed_adapters else seq.adapter or BASE

    def _admit(self) -> list[Sequence]:
        """The waiting sequences that join now: up to the free slots, of the batch's adapter group."""
        if self.running and not self.joinable:
            return []
        group = self._group(self.running[0] if self.running else self.waiting[0]) if self.waiting else None
        joining: list[Sequence] = []
        kept: deque[Sequence] = deque()
        width = 0
        while self.waiting and len(self.running) + len(joining) < self.max_batch:
            seq = self.waiting.popleft()
            wider = max(width, len(seq.prompt_ids))
            if self._group(seq) != group or (joining and (len(joining) + 1) * wider > PREFILL_TOKENS):
                kept.append(seq)
                continue
            joining.append(seq)
            width = wider
        self.waiting.extendleft(reversed(kept))
        return joining

    def _reset(self) -> None:
        self.running, self.cache, self.mask, self.next_ids = [], None, None, None

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, seqs: list[Sequence],
                 cache: DynamicCache | None, logits_to_keep: int = 1) -> torch.Tensor:
        kwargs: dict[str, Any] = {}
        if self.has_adapters and self.mixed_adapters:
            kwargs["adapter_names"] = [s.adapter or BASE for s in seqs]
        elif self.has_adapters:
            if seqs[0].adapter is None:
                with self.model.disable_adapter():
                    return self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                      cache=cache, use_cache=cache is not None,
                                      logits_to_keep=logits_to_keep).logits
            self.model.set_adapter(seqs[0].adapter)
        return self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                          use_cache=cache is not None, logits_to_keep=logits_to_keep, **kwargs).logits

    def _prefill(self, joining: list[Sequence]) -> None:
        """Prefill the joining prompts together and choose each one's first token; those still going join."""
        for seq in joining:
            if seq.params.seed is not None or seq.sampled:
                seq.generator = torch.Generator(device=self.device)
                seq.generator.manual_seed(seq.params.seed if seq.params.seed is not None else random.getrandbits(63))
        ready = [s for s in joining if s.params.max_tokens <= 0 or _cancelled(s)]
        for seq in ready:
            self._finish(seq, "length")
        joining = [s for s in joining if s not in ready]
        if not joining:
            return
        ids, mask = _left_pad([s.prompt_ids for s in joining], self.pad_id, self.device)
        cache = DynamicCache()
        logits = self._forward(ids, mask, _positions(mask), joining, cache)[:, -1]
        tokens = self._choose(logits, joining)
        keep = [i for i, (seq, tok) in enumerate(zip(joining, tokens)) if not self._advance(seq, tok)]
        if not keep:
            return
        if not all(type(layer) is DynamicLayer for layer in cache.layers):
            self.joinable = False
        index = torch.tensor(keep, device=self.device)
        if len(keep) < len(joining):
            cache.batch_select_indices(index)
        new_mask, new_next = mask[index], torch.tensor([tokens[i] for i in keep], device=self.device)
        if self.cache is None:
            self.cache, self.mask, self.next_ids = cache, new_mask, new_next
        else:
            self._merge(cache, new_mask, new_next)
        self.running += [joining[i] for i in keep]

    def _merge(self, cache: DynamicCache, mask: torch.Tensor, next_ids: torch.Tensor) -> None:
        """Append the joining rows to the batch, left-padding whichever cache is shorter."""
        assert self.cache is not None and self.mask is not None and self.next_ids is not None
        old_len, new_len = self.mask.shape[1], mask.shape[1]
        width = max(old_len, new_len)
        for old, new in zip(self.cache.layers, cache.layers):
            old.keys = torch.cat([_pad_left(old.keys, width), _pad_left(new.keys, width)])
            old.values = torch.cat([_pad_left(old.values, width), _pad_left(new.values, width)])
        self.mask = torch.cat([_pad_left(self.mask, width, dim=1), _pad_left(mask, width, dim=1)])
        self.next_ids = torch.cat([self.next_ids, next_ids])

    def _step(self) -> None:
        """One decode step for every running sequence; the finished ones leave the batch."""
        assert self.cache is not None and self.mask is not None and self.next_ids is not None
        positions = self.mask.sum(dim=1, keepdim=True)  # the new token comes after the row's real ones
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        logits = self._forward(self.next_ids[:, None], self.mask, positions, self.running, self.cache)[:, -1]
        tokens = self._choose(logits, self.running)
        keep = [i for i, (seq, tok) in enumerate(zip(self.running, tokens)) if not self._advance(seq, tok)]
        if not keep:
            self._reset()
            return
        self.next_ids = torch.tensor([tokens[i] for i in keep], device=self.device)
        if len(keep) < len(self.running):
            index = torch.tensor(keep, device=self.device)
            self.running = [self.running[i] for i in keep]
            self.cache.batch_select_indices(index)
            self.mask = self.mask[index]
            first = int((self.mask.sum(dim=0) > 0).nonzero()[0])  # columns of padding only can go
            if first > 0:
                self.mask = self.mask[:, first:]
                for layer in self.cache.layers:
                    layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]

    def _choose(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
        """Each row's next token: the argmax, or a sample at its temperature and top-p."""
        tokens = logits.argmax(dim=-1).tolist()
        for i, seq in enumerate(seqs):
            if seq.sampled:
                tokens[i] = _sample(logits[i].float(), seq.params.temperature, seq.params.top_p, seq.generator)
        return tokens

    def _advance(self, seq: Sequence, token: int) -> bool:
        """Add `token` to `seq`, stream what is safe to show, and finish it when it is done (returns True)."""
        seq.gen_ids.append(token)
        params, finish = seq.params, None
        if params.stop or seq.on_text is not None:
            text = self.decode(seq.gen_ids)
            cut, hit = cut_at_stop(text, params.stop)
            if hit:
                finish, safe = "stop", cut
            elif token in self.eos_ids:
                safe = text
            else:
                safe = text[: len(text) - held_back(text, params.stop)]
            if seq.on_text is not None and len(safe) > seq.sent:
                seq.on_text(safe[seq.sent:])
                seq.sent = len(safe)
        if finish is None and token in self.eos_ids:
            finish = "stop"
        if finish is None and (len(seq.gen_ids) >= params.max_tokens or _cancelled(seq)):
            finish = "length"
        if finish is None:
            return False
        self._finish(seq, finish)
        return True

    def _finish(self, seq: Sequence, finish: str) -> None:
        text, hit = cut_at_stop(self.decode(seq.gen_ids), seq.params.stop)
        if seq.on_text is not None and len(text) > seq.sent:  # what was held back
            seq.on_text(text[seq.sent:])
            seq.sent = len(text)
        seq.result = GenResult(token_ids=seq.gen_ids, text=text, finish_reason="stop" if hit else finish)
        self.finished.append(seq)

    def _score(self, seqs: list[Sequence]) -> dict[int, PositionLogprobs]:
        """Logprobs of prompt + completion for each sequence (by `id`), in padded batches of similar lengths."""
        scored: dict[int, PositionLogprobs] = {}
        chunk: list[Sequence] = []
        for seq in sorted(seqs, key=lambda s: len(s.prompt_ids) + len(s.gen_ids)):
            if chunk and (len(chunk) + 1) * (len(seq.prompt_ids) + len(seq.gen_ids)) > SCORE_TOKENS:
                scored.update(self._score_batch(chunk))
                chunk = []
            chunk.append(seq)
        if chunk:
            scored.update(self._score_batch(chunk))
        return scored

    def _score_batch(self, seqs: list[Sequence]) -> dict[int, PositionLogprobs]:
        rows = [seq.prompt_ids + seq.gen_ids for seq in seqs]
        ids, mask = _left_pad(rows, self.pad_id, self.device)
        lp = torch.log_softmax(self._forward(ids, mask, _positions(mask), seqs, None, logits_to_keep=0).float(), -1)
        width, scored = ids.shape[1], {}
        for row, (seq, full) in enumerate(zip(seqs, rows)):
            start = width - len(full)  # the row's first real column
            target = ids[row, start + 1:]
            row_lp = lp[row, start:width - 1]
            chosen = row_lp.gather(1, target[:, None])[:, 0].tolist()
            tops: list[list[tuple[int, float]]] = [[] for _ in chosen]
            if seq.logprobs:
                top_v, top_i = row_lp.topk(seq.logprobs, dim=-1)
                tops = [list(zip(i_row, v_row)) for i_row, v_row in zip(top_i.tolist(), top_v.tolist())]
            scored[id(seq)] = [(int(t), float(v), [(int(i), float(x)) for i, x in top])
                               for t, v, top in zip(target.tolist(), chosen, tops)]
        return scored


def _cancelled(seq: Sequence) -> bool:
    """The client has gone (a streaming client set `cancel`; a waiting caller cancelled its future)."""
    return seq.future.cancelled() or (seq.cancel is not None and seq.cancel.is_set())


def _resolve(seq: Sequence, value: tuple[GenResult, PositionLogprobs | None] | BaseException) -> None:
    try:
        if isinstance(value, BaseException):
            seq.future.set_exception(value)
        else:
            seq.future.set_result(value)
    except concurrent.futures.InvalidStateError:  # its caller cancelled it meanwhile
        pass


def _left_pad(rows: list[list[int]], pad_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Each real token's position within its own row (padding gets 0)."""
    return (mask.cumsum(dim=1) - 1).clamp(min=0)


def _pad_left(t: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p and top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        outside = sorted_p.cumsum(-1) - sorted_p > top_p  # keep the smallest prefix reaching top_p
        sorted_p[outside] = 0.0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=generator))
