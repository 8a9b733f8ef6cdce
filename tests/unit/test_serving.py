"""weft's OpenAI-compatible transformers server (weft.serving.server) on the tiny Llama, with two LoRA
adapters: the official openai client, streaming, adapters, errors, vLLM tokenizer routes, batched
concurrent requests equal to sequential ones, and lm-eval's `local-completions` using the server's remote
tokenizer (no hub)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from weft.net import free_port

NAME = "tiny"
ADAPTER = "tiny-lora"
ADAPTER_2 = "tiny-lora-2"


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir: Path, tmp_path_factory) -> Path:
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter") / ADAPTER, seed=1,
                        modules=["q_proj", "v_proj", "o_proj", "down_proj"])


@pytest.fixture(scope="module")
def adapter_2_dir(tiny_model_dir: Path, tmp_path_factory) -> Path:
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter") / ADAPTER_2, seed=2,
                        modules=["k_proj", "gate_proj", "up_proj"])


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, adapter_dir: Path, adapter_2_dir: Path):
    """The app under uvicorn in a background thread on a free port; yields the base URL."""
    import uvicorn

    from weft.serving.server.app import create_app

    app = create_app(tiny_model_dir, NAME, {ADAPTER: adapter_dir, ADAPTER_2: adapter_2_dir})
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield url
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def oai(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0, timeout=60)


def _tokens(server: str, **body) -> list[int]:
    r = httpx.post(f"{server}/tokenize", json=body)
    assert r.status_code == 200, r.text
    return r.json()["tokens"]


def test_health_and_models(server):
    h = httpx.get(f"{server}/health").json()
    assert h["status"] == "ok" and h["model"] == NAME
    assert {"active_requests", "served_requests"} <= h.keys()
    models = httpx.get(f"{server}/v1/models").json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == [NAME, ADAPTER, ADAPTER_2]
    assert models["data"][1]["parent"] == NAME
    assert h["max_batch"] == 16 and h["running_sequences"] == 0


def test_completion_with_openai_client(server, oai):
    served_before = httpx.get(f"{server}/health").json()["served_requests"]
    prompt = "check the oil"
    r = oai.completions.create(model=NAME, prompt=prompt, max_tokens=6, temperature=0)
    assert r.object == "text_completion" and r.id and r.created and r.model == NAME
    choice = r.choices[0]
    assert choice.finish_reason in ("stop", "length") and isinstance(choice.text, str)
    assert r.usage.prompt_tokens == len(_tokens(server, prompt=prompt))
    assert 1 <= r.usage.completion_tokens <= 6
    if choice.finish_reason == "length":
        assert r.usage.completion_tokens == 6
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # greedy is deterministic; a list of prompts gives one choice per prompt
    again = oai.completions.create(model=NAME, prompt=[prompt, "rotate"], max_tokens=6, temperature=0)
    assert [c.index for c in again.choices] == [0, 1] and again.choices[0].text == choice.text
    # stop strings cut the decoded text
    stop = next((c for c in choice.text[1:] if c.isalnum()), None)
    if stop is not None:
        cut = oai.completions.create(model=NAME, prompt=prompt, max_tokens=6, temperature=0, stop=["zzz", stop])
        assert cut.choices[0].text == choice.text[: choice.text.index(stop)]
        assert cut.choices[0].finish_reason == "stop"
    # sampling with a seed is reproducible
    s1 = oai.completions.create(model=NAME, prompt=prompt, max_tokens=8, temperature=1.0, top_p=0.9, seed=7)
    s2 = oai.completions.create(model=NAME, prompt=prompt, max_tokens=8, temperature=1.0, top_p=0.9, seed=7)
    assert s1.choices[0].text == s2.choices[0].text
    assert httpx.get(f"{server}/health").json()["served_requests"] >= served_before + 4


def test_echo_logprobs_for_loglikelihood(server, tiny_model_dir):
    ids = _tokens(server, prompt="rotate the tires", add_special_tokens=False)
    r = httpx.post(f"{server}/v1/completions", json={"model": NAME, "prompt": ids, "max_tokens": 0, "echo": True,
                                                      "logprobs": 1, "temperature": 0}).json()
    lp = r["choices"][0]["logprobs"]
    assert len(lp["token_logprobs"]) == len(ids) and lp["token_logprobs"][0] is None
    assert all(v <= 0 for v in lp["token_logprobs"][1:]) and r["usage"]["completion_tokens"] == 0
    assert all(max(top.values()) >= v for top, v in zip(lp["top_logprobs"][1:], lp["token_logprobs"][1:]))
    # the same numbers as the model's own forward pass
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1]
    expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()
    assert lp["token_logprobs"][1:] == pytest.approx(expected, abs=1e-4)
    # lm-eval's request shape: max_tokens=1, one generated token after the echoed prompt
    r1 = httpx.post(f"{server}/v1/completions", json={"model": NAME, "prompt": [ids], "max_tokens": 1, "echo": True,
                                                       "logprobs": 1, "temperature": 0}).json()
    lp1 = r1["choices"][0]["logprobs"]["token_logprobs"]
    assert len(lp1) == len(ids) + 1 and lp1[0] is None and lp1[1:-1] == pytest.approx(expected, abs=1e-4)


def test_chat_completion_and_stream(server, oai):
    messages = [{"role": "user", "content": "replace the brake pads"}]
    r = oai.chat.completions.create(model=NAME, messages=messages, max_tokens=8, temperature=0)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens == len(_tokens(server, messages=messages))
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

    stream = oai.chat.completions.create(model=NAME, messages=messages, max_tokens=8, temperature=0, stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == r.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    # stop strings apply to the stream too
    stop = next((c for c in r.choices[0].message.content[1:] if c.isalnum()), None)
    if stop is not None:
        cut = oai.chat.completions.create(model=NAME, messages=messages, max_tokens=8, temperature=0, stop=stop)
        streamed = oai.chat.completions.create(model=NAME, messages=messages, max_tokens=8, temperature=0,
                                               stop=stop, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == \
            cut.choices[0].message.content == r.choices[0].message.content.split(stop)[0]
    # raw SSE ends with [DONE]
    with httpx.stream("POST", f"{server}/v1/chat/completions",
                      json={"model": NAME, "messages": messages, "max_tokens": 3, "stream": True}) as resp:
        lines = [line for line in resp.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and json.loads(lines[0][6:])["choices"][0]["delta"]["role"] == "assistant"


def test_adapter_changes_greedy_output(oai):
    kw = dict(prompt="check the oil level", max_tokens=12, temperature=0)
    base = oai.completions.create(model=NAME, **kw)
    tuned = oai.completions.create(model=ADAPTER, **kw)
    assert tuned.model == ADAPTER
    assert tuned.choices[0].text != base.choices[0].text
    # the base is still served unchanged after an adapter request
    assert oai.completions.create(model=NAME, **kw).choices[0].text == base.choices[0].text


def test_unknown_model_is_404(server, oai):
    import openai

    r = httpx.post(f"{server}/v1/completions", json={"model": "nope", "prompt": "x"})
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "model_not_found" and err["message"]
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    bad = httpx.post(f"{server}/v1/completions", json={"model": NAME, "prompt": "x", "max_tokens": -1})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_tokenize_detokenize_and_tokenizer_info(server):
    text = "rotate the tires"
    r = httpx.post(f"{server}/tokenize", json={"prompt": text}).json()
    assert r["count"] == len(r["tokens"]) > 0 and r["max_model_len"] == 256
    assert httpx.post(f"{server}/detokenize", json={"tokens": r["tokens"]}).json()["prompt"] == text
    chat = httpx.post(f"{server}/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}).json()
    assert httpx.post(f"{server}/detokenize", json={"tokens": chat["tokens"]}).json()["prompt"] == \
        "<|user|>hi<|end|><|assistant|>"
    info = httpx.get(f"{server}/tokenizer_info").json()
    assert info["eos_token"] == "</s>" and info["bos_token"] == "<s>" and info["pad_token"] == "<pad>"
    assert info["chat_template"] and info["model_max_length"] == 256 and info["tokenizer_class"]
    # lm-eval's RemoteTokenizer reads the eos id as /tokenize(eos, add_special_tokens=False)[0]
    assert _tokens(server, prompt="</s>", add_special_tokens=False) == [1]


def test_concurrent_greedy_completions_equal_sequential_ones(server):
    """8 concurrent greedy completions of different lengths and stop strings are decoded together and give
    exactly the texts, token counts and finish reasons of the same 8 requests one after the other."""
    from concurrent.futures import ThreadPoolExecutor

    def complete(body: dict) -> dict:
        r = httpx.post(f"{server}/v1/completions", json={"model": NAME, "temperature": 0, **body}, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()

    prompts = ["check the oil", "rotate the tires every", "a", "replace the brake pads before the winter",
               "tighten", "the spare wheel is in the", "wipers", "align the wheels and balance them"]
    bodies = [{"prompt": p, "max_tokens": n} for p, n in zip(prompts, [5, 40, 12, 33, 3, 25, 17, 48])]
    for body in bodies[1::2]:  # half of them stop at a string from the middle of their own continuation
        text = complete(body)["choices"][0]["text"]
        body["stop"] = ["\u2603", text[len(text) // 2: len(text) // 2 + 2]]

    sequential = [complete(b) for b in bodies]
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(complete, b) for b in bodies]
        while not all(f.done() for f in futures):  # the event loop keeps answering while generating
            assert httpx.get(f"{server}/health", timeout=5).status_code == 200
        concurrent = [f.result() for f in futures]

    def outcome(r: dict) -> tuple:
        return r["choices"][0]["text"], r["choices"][0]["finish_reason"], r["usage"]["completion_tokens"]

    assert [outcome(r) for r in concurrent] == [outcome(r) for r in sequential]
    assert {outcome(r)[1] for r in sequential[1::2]} == {"stop"}
    for r, body in zip(sequential, bodies):
        assert outcome(r)[1] == "stop" or outcome(r)[2] == body["max_tokens"]
    assert httpx.get(f"{server}/health").json()["active_requests"] == 0


def test_adapters_load_and_unload_at_run_time(server, adapter_2_dir):
    """vLLM's runtime LoRA routes: an adapter loaded under a new name answers like the same adapter loaded
    at start; unloaded, its name is unknown again."""
    body = {"prompt": "check the oil level", "max_tokens": 12, "temperature": 0}
    r = httpx.post(f"{server}/v1/load_lora_adapter", json={"lora_name": "late", "lora_path": str(adapter_2_dir)})
    assert r.status_code == 200 and r.json() == {"lora_name": "late", "loaded": True}, r.text
    again = httpx.post(f"{server}/v1/load_lora_adapter", json={"lora_name": "late", "lora_path": str(adapter_2_dir)})
    assert again.status_code == 400 and "already been loaded" in again.json()["error"]["message"]
    late = httpx.post(f"{server}/v1/completions", json={"model": "late", **body}).json()["choices"][0]["text"]
    ours = httpx.post(f"{server}/v1/completions", json={"model": ADAPTER_2, **body}).json()["choices"][0]["text"]
    assert late == ours
    assert httpx.post(f"{server}/v1/unload_lora_adapter", json={"lora_name": "late"}).status_code == 200
    assert httpx.post(f"{server}/v1/completions", json={"model": "late", **body}).status_code == 404
    bad = httpx.post(f"{server}/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "/nowhere"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "lora_path"


def test_cli_default_adapter(tiny_model_dir, adapter_dir):
    """The CLI as weft.serving.launch starts it: the served name answers with the default adapter."""
    import subprocess
    import sys

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "weft.serving.server", "--model", str(tiny_model_dir),
                             "--name", "ft", "--host", "127.0.0.1", "--port", str(port),
                             "--adapter", f"ft-adapter={adapter_dir}", "--default-adapter", "ft-adapter",
                             "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
            assert time.monotonic() < deadline, "CLI server did not become healthy"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        body = {"prompt": "check the oil level", "max_tokens": 12, "temperature": 0}
        ft = httpx.post(f"{url}/v1/completions", json={"model": "ft", **body}).json()["choices"][0]["text"]
        ad = httpx.post(f"{url}/v1/completions", json={"model": "ft-adapter", **body}).json()["choices"][0]["text"]
        assert ft == ad
        assert [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]] == ["ft", "ft-adapter"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _eval_tasks(tmp_path: Path) -> tuple[object, list[str]]:
    """The project's weft_arith (generate_until) and weft_general_qa (multiple choice: loglikelihood through
    echo + logprobs) staged like weft.evaluation.harness does; else a tiny local generate_until task."""
    from lm_eval.tasks import TaskManager

    try:
        from weft.evaluation.harness import PROJECT_TASKS_DIR, stage_task_dirs

        if (PROJECT_TASKS_DIR / "weft_arith.yaml").is_file():
            staged = stage_task_dirs([PROJECT_TASKS_DIR], tmp_path / "staged")
            tasks = [t for t in ("weft_arith", "weft_general_qa") if (PROJECT_TASKS_DIR / f"{t}.yaml").is_file()]
            return TaskManager(include_path=[str(p) for p in staged], include_defaults=False), tasks
    except ImportError:
        pass
    data = tmp_path / "arith.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {a} + {a}?", "answer": str(2 * a)}) + "\n"
                            for a in range(1, 5)))
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "srv_arith.yaml").write_text(
        "task: srv_arith\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {json.dumps(str(data))}\noutput_type: generate_until\ntest_split: test\n"
        "doc_to_text: \"Question: {{question}}\\nAnswer:\"\ndoc_to_target: \"{{answer}}\"\n"
        "generation_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 8\n  do_sample: false\n  temperature: 0.0\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 1.0\n")
    return TaskManager(include_path=[str(folder)], include_defaults=False), ["srv_arith"]


def test_lm_eval_local_completions(server, tmp_path):
    pytest.importorskip("tenacity", reason="lm-eval's API models need lm-eval[api] (tenacity)")
    from lm_eval import simple_evaluate

    served_before = httpx.get(f"{server}/health").json()["served_requests"]
    manager, tasks = _eval_tasks(tmp_path)
    results = simple_evaluate(
        model="local-completions",
        model_args={"model": NAME, "base_url": f"{server}/v1/completions", "tokenizer_backend": "remote",
                    "num_concurrent": 4, "max_retries": 1, "max_length": 256},
        tasks=tasks, task_manager=manager, limit=4, log_samples=False, bootstrap_iters=0)
    assert 0.0 <= results["results"][tasks[0]]["exact_match,none"] <= 1.0
    if "weft_general_qa" in tasks:
        assert 0.0 <= results["results"]["weft_general_qa"]["acc,none"] <= 1.0
    assert httpx.get(f"{server}/health").json()["served_requests"] >= served_before + 4


def make_adapter(base_dir: Path, out: Path, seed: int, modules: list[str]) -> Path:
    """A LoRA adapter that really changes outputs (init_lora_weights=False: B is not zero)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(str(base_dir))
    cfg = LoraConfig(r=8, lora_alpha=32, target_modules=modules, init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(base, cfg).save_pretrained(str(out))
    return out
