"""Dataset records as chat conversations: the form training (trl applies the model's chat template to
conversational records) and evaluation (the same template for the prompt) both use."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def training_record(record: dict[str, Any]) -> dict[str, Any]:
    """A dataset record as trl trains on it: `messages`, or a conversational prompt/completion pair
    (so the chat template applies), or raw `text` for plain language-model data."""
    if isinstance(record.get("messages"), list):
        return {"messages": record["messages"]}
    prompt, completion = record.get("prompt"), record.get("completion")
    if prompt is None and record.get("instruction") is not None:
        prompt = record["instruction"] + (f"\n\n{record['input']}" if record.get("input") else "")
        completion = record.get("output")
    if prompt is not None and completion is not None:
        return {"prompt": prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}],
                "completion": completion if isinstance(completion, list)
                else [{"role": "assistant", "content": str(completion)}]}
    if isinstance(record.get("text"), str):
        return {"text": record["text"]}
    raise ValueError(f"record has none of messages, prompt/completion, instruction/output or text: {sorted(record)}")


class Example(BaseModel):
    """A test example: the prompt conversation and the answer expected after it."""

    messages: list[dict[str, Any]]
    expected: str

    @property
    def input(self) -> str:
        return self.messages[-1]["content"]


def example_of(record: dict[str, Any]) -> Example:
    """Split a record into prompt and expected answer (the last assistant turn)."""
    row = training_record(record)
    if "messages" in row:
        turns = row["messages"]
        last = max((i for i, t in enumerate(turns) if t.get("role") == "assistant"), default=None)
        if last is None or last == 0:
            raise ValueError("a test conversation needs a user turn followed by an assistant answer")
        return Example(messages=turns[:last], expected=str(turns[last]["content"]))
    if "prompt" in row:
        return Example(messages=row["prompt"], expected=" ".join(str(t["content"]) for t in row["completion"]))
    raise ValueError("a test record needs an expected answer: messages, prompt/completion or instruction/output")
