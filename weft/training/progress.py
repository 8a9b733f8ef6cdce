"""Training progress as log lines: one format written by the fine-tune task and read back by the
jobs API (WebSocket metrics), so the Prefect server's logs stay the only store of progress."""

from __future__ import annotations

import base64
import io
import re
from typing import Any

KEYS = ("loss", "eval_loss", "learning_rate", "epoch", "grad_norm", "mean_token_accuracy", "tokens_per_second",
        "eta_seconds")
LINE = re.compile(r"^step (\d+)/(\d+) (.*)$")


def format_line(line: dict[str, Any]) -> str:
    """`step 5/60 loss=1.234 learning_rate=0.0002 epoch=0.25 tokens_per_second=812 eta_seconds=41`."""
    fields = " ".join(f"{k}={line[k]:.6g}" for k in KEYS if isinstance(line.get(k), (int, float)))
    return f"step {line['step']}/{line.get('max_steps') or '?'} {fields}"


def parse_line(message: str) -> dict[str, float] | None:
    """The metrics of a progress line, or None for any other log line."""
    match = LINE.match(message)
    if not match:
        return None
    metrics: dict[str, float] = {"step": int(match.group(1)), "max_steps": int(match.group(2))}
    for pair in match.group(3).split():
        key, _, value = pair.partition("=")
        try:
            metrics[key] = float(value)
        except ValueError:
            continue
    return metrics


def loss_curve_png(log_history: list[dict[str, Any]]) -> bytes:
    """Training (and evaluation) loss against step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.add_subplot()
    for key, label in (("loss", "train loss"), ("eval_loss", "eval loss")):
        points = [(h["step"], h[key]) for h in log_history if key in h and "step" in h]
        if points:
            ax.plot(*zip(*points), marker="." if len(points) < 50 else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def summary_markdown(name: str, method: str, metrics: dict[str, float], png: bytes,
                     fallback_reason: str | None, resumed_from_step: int | None) -> str:
    """The final-metrics artifact: a table and the loss curve inline."""
    rows = "\n".join(f"| {k} | {v:.6g} |" for k, v in sorted(metrics.items()))
    notes = [f"- method: **{method}**"]
    if fallback_reason:
        notes.append(f"- qlora fell back to lora: {fallback_reason}")
    if resumed_from_step is not None:
        notes.append(f"- resumed from checkpoint at step {resumed_from_step}")
    image = base64.b64encode(png).decode()
    return (f"# Fine-tune {name}\n\n" + "\n".join(notes) + "\n\n| metric | value |\n|---|---|\n" + rows +
            f"\n\n![loss curve](data:image/png;base64,{image})\n")
