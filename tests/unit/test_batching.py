"""The continuous-batching loop (weft.serving.server.batching) on the tiny Llama, without HTTP: a batch
mixing the base model and two LoRA adapters gives each row what a PeftModel loaded with only its adapter
gives; sequences join a running batch and leave it; batched logprobs equal a single forward pass; a
cancelled caller stops its sequence."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
import torch

from tests.unit.test_serving import make_adapter
from weft.serving.server.batching import Sequence
from weft.serving.server.engine import Engine
from weft.serving.server.types import GenParams
from weft.testing.polling import wait_for

PROMPTS = ["check the oil", "rotate the tires every", "a", "replace the brake pads before the winter"]


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {"one": make_adapter(tiny_model_dir, root / "one", seed=1, modules=["q_proj", "v_proj", "down_proj"]),
            "two": make_adapter(tiny_model_dir, root / "two", seed=2, modules=["k_proj", "o_proj", "up_proj"])}


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path, adapters: dict[str, Path]):
    engine = Engine(tiny_model_dir, adapters, device="cpu", max_batch=16)
    yield engine
    engine.close()


def greedy(max_tokens: int) -> GenParams:
    return GenParams(max_tokens=max_tokens, temperature=0.0, top_p=1.0, stop=[])


def reference(model_dir: Path, adapter: Path | None, prompt_ids: list[int], max_tokens: int) -> list[int]:
    """Greedy tokens from transformers' `generate` on the base, or a PeftModel with only `adapter` loaded."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                             do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt_ids):].tolist()


def submit_together(engine: Engine, seqs: list[Sequence]) -> list:
    """Queue every sequence before the batcher can look: they are admitted in one step, as one batch."""
    with engine.batcher.wake:
        futures = [engine.batcher.submit(s) for s in seqs]
    return [f.result(timeout=120) for f in futures]


def test_one_batch_mixes_the_base_and_two_adapters(engine, tiny_model_dir, adapters):
    rows = [(p, a) for p in PROMPTS[:3] for a in (None, "one", "two")]
    seqs = [Sequence(engine.encode(p, True), greedy(12), a) for p, a in rows]
    results = submit_together(engine, seqs)
    got = {(p, a): r.token_ids for (p, a), (r, _) in zip(rows, results)}
    for p, a in rows:
        engine_eos = set(engine.eos_ids)
        want = reference(tiny_model_dir, adapters.get(a or ""), engine.encode(p, True), 12)
        cut = next((i + 1 for i, t in enumerate(want) if t in engine_eos), len(want))  # the batcher stops at EOS
        assert got[(p, a)] == want[:cut], (p, a)
    assert len({tuple(got[(PROMPTS[0], a)]) for a in (None, "one", "two")}) == 3  # the adapters really differ


def test_sequences_join_a_running_batch_and_leave_it(engine):
    async def run() -> None:
        alone = [(await engine.submit(engine.encode(p, True), greedy(n), None))[0].token_ids
                 for p, n in zip(PROMPTS, [30, 4, 20, 9])]
        first = engine.submit(engine.encode(PROMPTS[0], True), greedy(30), None)
        while engine.batcher.load == 0 or not engine.batcher.running:  # the long one is decoding
            await asyncio.sleep(0.001)
        later = [engine.submit(engine.encode(p, True), greedy(n), None) for p, n in zip(PROMPTS[1:], [4, 20, 9])]
        together = [r.token_ids for r, _ in await asyncio.gather(first, *later)]
        assert together == alone

    asyncio.run(run())
    assert engine.batcher.load == 0 and engine.batcher.cache is None


def test_batched_logprobs_equal_one_forward_pass(engine, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    seqs = [Sequence(engine.encode(p, True), greedy(0), None, logprobs=2) for p in PROMPTS]
    for (res, lps), seq in zip(submit_together(engine, seqs), seqs):
        ids = seq.prompt_ids
        with torch.inference_mode():
            logits = model(torch.tensor([ids])).logits[0, :-1]
        want = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()
        assert res.token_ids == [] and [t for t, _, _ in lps] == ids[1:]
        assert [v for _, v, _ in lps] == pytest.approx(want, abs=1e-4)
        assert all(len(top) == 2 and top[0][1] >= v for _, v, top in lps)


def test_a_cancelled_sequence_stops_and_frees_its_slot(engine):
    cancel = threading.Event()
    texts: list[str] = []
    seq = Sequence(engine.encode(PROMPTS[1], True), greedy(200), None, on_text=texts.append, cancel=cancel)
    future = engine.batcher.submit(seq)
    cancel.set()
    result, _ = future.result(timeout=60)
    assert len(result.token_ids) < 200 and result.finish_reason == "length"
    assert engine.batcher.load == 0


def test_concurrent_streams_send_each_sequence_its_own_text(engine):
    from weft.serving.server.engine import generate_stream

    async def stream(prompt: str, params: GenParams) -> tuple[str, str]:
        deltas, final = [], None
        async for kind, value in generate_stream(engine, engine.encode(prompt, True), params, None):
            if kind == "text":
                deltas.append(value)
            else:
                final = value
        return "".join(deltas), final.text

    async def run() -> None:
        plain = [(await engine.submit(engine.encode(p, True), greedy(n), None))[0].text
                 for p, n in zip(PROMPTS, [20, 7, 30, 12])]
        streamed = await asyncio.gather(*(stream(p, greedy(n)) for p, n in zip(PROMPTS, [20, 7, 30, 12])))
        assert [joined for joined, _ in streamed] == [final for _, final in streamed] == plain

    asyncio.run(run())


def test_a_client_that_disconnects_stops_its_non_streamed_sequences(engine, monkeypatch):
    from weft.serving.server import app
    from weft.serving.server.app import _while_connected
    from weft.serving.server.errors import OpenAIError

    class GoneClient:  # what Starlette's Request answers once the client has closed the connection
        async def is_disconnected(self) -> bool:
            return True

    monkeypatch.setattr(app, "DISCONNECT_POLL_SECONDS", 0.01)

    seq = Sequence(engine.encode(PROMPTS[3], True), greedy(200), None)

    async def run() -> None:
        with pytest.raises(OpenAIError, match="disconnected"):
            await _while_connected(GoneClient(), [asyncio.wrap_future(engine.batcher.submit(seq))])

    asyncio.run(run())
    wait_for(lambda: engine.batcher.load == 0, "the cancelled sequence left the batch", timeout=10, poll=0.01)
    assert len(seq.gen_ids) < 200 and seq.result.finish_reason == "length"
