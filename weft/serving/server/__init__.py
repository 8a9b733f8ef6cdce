"""weft's own OpenAI-compatible inference server on transformers (used where vLLM is not available, e.g. CPU).

One process serves one base model plus optional PEFT/LoRA adapters (request `model` = adapter name). Routes:
`GET /health`, `GET /v1/models`, `POST /v1/completions`, `POST /v1/chat/completions` (SSE streaming),
and vLLM's tokenizer routes `POST /tokenize`, `POST /detokenize`, `GET /tokenizer_info` (lm-eval's
`local-completions` uses these as its "remote" tokenizer, so it never needs the hub).

Generation is batched (`batching`): one thread decodes up to `--max-batch` concurrent sequences together,
joining and leaving between steps; stop strings are applied to the decoded text. `max_tokens` is clamped
to the context left after the prompt (finish_reason "length").

Modules: `protocol` (request/response bodies), `types` (generation parameters and results), `engine`
(model, tokenizer, adapters), `batching` (the decode loop), `stops` (stop strings),
`logprobs` (OpenAI logprob formats), `errors` (OpenAIError), `state` (what routes share), `streaming` (SSE),
`app` (FastAPI app and routes: `create_app`), `__main__` (CLI).

CLI: python -m weft.serving.server --model DIR --name NAME [--host H] [--port P]
                                   [--adapter name=DIR ...] [--default-adapter name] [--max-batch N]
"""

# Nothing is imported here: the API imports `protocol` alone for its response models.
