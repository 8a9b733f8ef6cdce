"""Scores of a base-vs-fine-tuned comparison: per-example correctness and ROUGE-L, task metrics
(accuracy, precision, recall, F1 for labelled tasks; exact match and ROUGE-L for generation),
the document-002 improvement strings and a paired bootstrap interval of the improvement."""

from __future__ import annotations

import re
import string
from functools import lru_cache
from typing import Any

import numpy as np
from pydantic import BaseModel

LABEL_SET_MAX = 20  # at most this many distinct expected answers (and repeats): a labelled task


def normalize(text: str) -> str:
    """Case, punctuation and whitespace folded, as exact-match metrics usually do."""
    text = text.strip().casefold()
    text = text.translate(str.maketrans("", "", string.punctuation))
    return re.sub(r"\s+", " ", text).strip()


def is_labelled(expected: list[str]) -> bool:
    labels = {normalize(e) for e in expected}
    return len(labels) <= min(LABEL_SET_MAX, max(2, len(expected) // 2))


@lru_cache(maxsize=1)
def _rouge() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"])


def rouge_l(prediction: str, reference: str) -> float:
    return _rouge().score(reference, prediction)["rougeL"].fmeasure


class SideMetrics(BaseModel):
    """One model's scores over the test set (document 002's keys, plus the generation metrics)."""

    accuracy: float
    f1_score: float | None = None
    precision: float | None = None
    recall: float | None = None
    exact_match: float
    rouge_l: float
    avg_response_time_ms: float


def side_metrics(outputs: list[str], expected: list[str], times_ms: list[float], labelled: bool) -> SideMetrics:
    correct = [normalize(o) == normalize(e) for o, e in zip(outputs, expected)]
    rouge = [rouge_l(o, e) for o, e in zip(outputs, expected)]
    metrics: dict[str, Any] = {"accuracy": float(np.mean(correct)), "exact_match": float(np.mean(correct)),
                               "rouge_l": float(np.mean(rouge)), "avg_response_time_ms": float(np.mean(times_ms))}
    if labelled:
        from sklearn.metrics import precision_recall_fscore_support

        labels = sorted({normalize(e) for e in expected})  # macro over the true labels; other outputs count as wrong
        p, r, f, _ = precision_recall_fscore_support([normalize(e) for e in expected], [normalize(o) for o in outputs],
                                                     labels=labels, average="macro", zero_division=0)
        metrics.update(precision=float(p), recall=float(r), f1_score=float(f))
    return SideMetrics(**metrics)


def delta_text(base: float | None, tuned: float | None) -> str | None:
    """`+23.6%`: the relative change, as document 002 reports it (absolute points when base is 0)."""
    if base is None or tuned is None:
        return None
    if base == 0:
        return f"{(tuned - base) * 100:+.1f}pp"
    return f"{(tuned - base) / base * 100:+.1f}%"


class Interval(BaseModel):
    metric: str
    mean: float
    low: float
    high: float
    confidence: float
    resamples: int


def paired_bootstrap(base: list[float], tuned: list[float], *, metric: str, confidence: float = 0.95,
                     resamples: int = 10_000, seed: int = 0) -> Interval:
    """Confidence interval of mean(tuned - base) over examples, resampling examples with replacement."""
    diff = np.asarray(tuned, dtype=float) - np.asarray(base, dtype=float)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    return Interval(metric=metric, mean=float(diff.mean()), low=float(np.quantile(means, alpha)),
                    high=float(np.quantile(means, 1 - alpha)), confidence=confidence, resamples=resamples)


def winner(base_correct: bool, tuned_correct: bool, base_rouge: float, tuned_rouge: float) -> str:
    if base_correct != tuned_correct:
        return "fine_tuned" if tuned_correct else "base_model"
    if base_correct or abs(base_rouge - tuned_rouge) < 1e-9:
        return "tie"
    return "fine_tuned" if tuned_rouge > base_rouge else "base_model"


class Outcome(BaseModel):
    results: dict[str, Any]  # document 002: base_model, fine_tuned, improvement (+ confidence_interval, task)
    examples: list[dict[str, Any]]
    interval: Interval


def score(examples: list, base: Any, tuned: Any, *, confidence: float = 0.95) -> Outcome:
    """Everything document 002 reports, from the two models' answers to the same examples."""
    expected = [e.expected for e in examples]
    labelled = is_labelled(expected)
    base_m = side_metrics(base.outputs, expected, base.times_ms, labelled)
    tuned_m = side_metrics(tuned.outputs, expected, tuned.times_ms, labelled)
    rows, base_scores, tuned_scores = [], [], []
    for example, b, t in zip(examples, base.outputs, tuned.outputs):
        b_ok, t_ok = normalize(b) == normalize(example.expected), normalize(t) == normalize(example.expected)
        b_rouge, t_rouge = rouge_l(b, example.expected), rouge_l(t, example.expected)
        base_scores.append(float(b_ok))
        tuned_scores.append(float(t_ok))
        rows.append({"input": example.input, "expected": example.expected, "base_model_output": b,
                     "base_model_correct": b_ok, "fine_tuned_output": t, "fine_tuned_correct": t_ok,
                     "winner": winner(b_ok, t_ok, b_rouge, t_rouge)})
    interval = paired_bootstrap(base_scores, tuned_scores, metric="accuracy", confidence=confidence)
    keys = ("accuracy", "f1_score", "precision", "recall", "exact_match", "rouge_l")
    improvement = {f"{k}_delta": d for k in keys
                   if (d := delta_text(getattr(base_m, k), getattr(tuned_m, k))) is not None}
    wins = {w: sum(r["winner"] == w for r in rows) for w in ("fine_tuned", "base_model", "tie")}
    return Outcome(results={"task": "classification" if labelled else "generation",
                            "base_model": base_m.model_dump(exclude_none=True),
                            "fine_tuned": tuned_m.model_dump(exclude_none=True),
                            "improvement": {**improvement, "accuracy_change": interval.mean,
                                            "confidence_interval": interval.model_dump(), "wins": wins},
                            "examples_count": len(rows)},
                   examples=rows, interval=interval)


class Gate(BaseModel):
    promoted: bool
    reason: str
    min_improvement: float
    max_regression: float
    worst_regression: dict[str, Any] | None = None


def promotion_gate(interval: Interval, benchmarks: list[dict[str, Any]], *, min_improvement: float,
                   max_regression: float) -> Gate:
    """Promote only when the improvement's lower bound clears `min_improvement` and no benchmark
    metric dropped by more than `max_regression`."""
    drops = [row for row in benchmarks if isinstance(row.get("delta"), (int, float))]
    worst = min(drops, key=lambda row: row["delta"], default=None)
    common = {"min_improvement": min_improvement, "max_regression": max_regression, "worst_regression": worst}
    if interval.low <= min_improvement:
        return Gate(promoted=False, reason=f"the accuracy gain's {interval.confidence:.0%} lower bound "
                    f"{interval.low:+.3f} is not above {min_improvement:+.3f}", **common)
    if worst is not None and -worst["delta"] > max_regression:
        return Gate(promoted=False, reason=f"{worst['task']} {worst['metric']} fell by {-worst['delta']:.3f} "
                    f"(limit {max_regression:.3f})", **common)
    return Gate(promoted=True, reason=f"accuracy gain {interval.mean:+.3f} (lower bound {interval.low:+.3f}) and no "
                f"benchmark fell by more than {max_regression:.3f}", **common)
