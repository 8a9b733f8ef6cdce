"""The engine's per-position logprobs in OpenAI's two formats (legacy completions and chat)."""

from __future__ import annotations

from collections.abc import Callable

from weft.serving.server.protocol import ChatLogprobs, CompletionLogprobs, TokenLogprob, TopLogprob
from weft.serving.server.types import PositionLogprobs


def completion_logprobs(lps: PositionLogprobs, prompt_ids: list[int], gen_ids: list[int], echo: bool,
                        token_str: Callable[[int], str]) -> CompletionLogprobs:
    """Legacy logprobs for the echoed prompt (its first token: None) and/or the completion.
    `lps[t - 1]` is the entry of position t of prompt + completion."""
    full = prompt_ids + gen_ids
    first = 0 if echo else len(prompt_ids)
    tokens: list[str] = []
    token_lps: list[float | None] = []
    top_lps: list[dict[str, float] | None] = []
    offsets: list[int] = []
    pos = 0
    for t in range(first, len(full)):
        tstr = token_str(full[t])
        tokens.append(tstr)
        offsets.append(pos)
        pos += len(tstr)
        if t == 0:
            token_lps.append(None)
            top_lps.append(None)
            continue
        _, lp, top = lps[t - 1]
        token_lps.append(lp)
        d = {token_str(i): v for i, v in top}
        d.setdefault(tstr, lp)
        top_lps.append(d)
    return CompletionLogprobs(tokens=tokens, token_logprobs=token_lps, top_logprobs=top_lps, text_offset=offsets)


def chat_logprobs(lps: PositionLogprobs, prompt_len: int, gen_ids: list[int],
                  token_str: Callable[[int], str]) -> ChatLogprobs:
    """Chat logprobs of the completion's tokens, each with its top-k alternatives."""
    def top(token_id: int, logprob: float) -> TopLogprob:
        t = token_str(token_id)
        return TopLogprob(token=t, logprob=logprob, bytes=list(t.encode()))

    content = []
    for tid, lp, alternatives in lps[prompt_len - 1:prompt_len - 1 + len(gen_ids)]:
        content.append(TokenLogprob(**top(tid, lp).model_dump(),
                                    top_logprobs=[top(i, v) for i, v in alternatives]))
    return ChatLogprobs(content=content)
