"""Drift checks as pure functions: text descriptors of prompts, evidently's DataDriftPreset over them
(Kolmogorov-Smirnov p-values) plus its text-content drift score, latency drift, and the HTML report.

Nothing here touches the database or Prefect; tasks/monitoring.py feeds it prompts and stores what
it returns.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")  # evidently sends usage telemetry unless told not to

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

DESCRIPTORS = ("length", "word_count", "oov_share", "unigram_perplexity")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
MAX_ROWS = 5000  # per side: more rows buy no power for these tests and cost seconds in the text check


@dataclass(frozen=True)
class DriftThresholds:
    """When a check gives a verdict and how bad it is."""

    p_value: float = 0.05  # a descriptor drifts when its KS p-value is below this
    strong_p_value: float = 0.001  # ... and drifts strongly below this
    high_share: float = 0.5  # high: at least this share of descriptors drift strongly
    medium_share: float = 0.5  # medium: at least this share drift, one of them strongly
    low_share: float = 0.5  # low: at least this share drift, or the text content alone drifts
    min_reference: int = 20  # fewer reference prompts: no verdict
    min_current: int = 50  # fewer prompts in the current window: no verdict
    text_drift: bool = True  # also run evidently's text-content drift on the raw prompts
    text_min_score: float = 0.75  # evidently's text drift counts only with a classifier ROC AUC this high
    # latency (performance_drift): the current window's p95 over the previous week's, with a KS p-value
    latency_p_value: float = 0.01
    latency_low_ratio: float = 1.2
    latency_medium_ratio: float = 1.5
    latency_high_ratio: float = 3.0


@dataclass
class DriftResult:
    """The verdict of one data-drift check. `severity` is None when there was too little data."""

    severity: str | None
    reference_count: int
    current_count: int
    p_values: dict[str, float] = field(default_factory=dict)
    drifted: list[str] = field(default_factory=list)
    drift_share: float = 0.0
    dataset_drift_share: float | None = None  # evidently's DriftedColumnsCount share (text column included)
    text_drift_score: float | None = None
    text_drift_detected: bool | None = None
    text_drift_note: str | None = None
    reference_means: dict[str, float] = field(default_factory=dict)
    current_means: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    html: str | None = None

    @property
    def drift(self) -> bool:
        return self.severity not in (None, "none")

    def metrics(self) -> dict[str, Any]:
        """The alert's `metrics` (JSON): everything but the HTML."""
        return {"p_values": self.p_values, "drifted_descriptors": self.drifted, "drift_share": self.drift_share,
                "dataset_drift_share": self.dataset_drift_share, "text_drift_score": self.text_drift_score,
                "text_drift_detected": self.text_drift_detected, "text_drift_note": self.text_drift_note,
                "reference_count": self.reference_count, "current_count": self.current_count,
                "reference_means": self.reference_means, "current_means": self.current_means,
                "stat_test": "ks"}


@dataclass
class LatencyResult:
    severity: str | None
    previous_count: int
    current_count: int
    p_value: float | None = None
    previous_p50_ms: float | None = None
    previous_p95_ms: float | None = None
    current_p50_ms: float | None = None
    current_p95_ms: float | None = None
    p95_ratio: float | None = None
    reason: str = ""

    @property
    def drift(self) -> bool:
        return self.severity not in (None, "none")

    def metrics(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("p_value", "previous_count", "current_count", "previous_p50_ms",
                                              "previous_p95_ms", "current_p50_ms", "current_p95_ms", "p95_ratio")} \
            | {"stat_test": "ks"}


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def vocabulary(texts: Iterable[str]) -> Counter:
    """Word counts of the reference texts (the vocabulary OOV share and perplexity are measured against)."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(words(text))
    return counts


def text_descriptors(texts: Sequence[str], reference_vocab: Counter | set[str] | dict[str, int]) -> pd.DataFrame:
    """One row per text: characters, words, share of words outside the reference vocabulary, and the
    perplexity of its words under the reference's add-one-smoothed unigram model (a cheap language model)."""
    counts = reference_vocab if isinstance(reference_vocab, (Counter, dict)) else {w: 1 for w in reference_vocab}
    total, size = sum(counts.values()), len(counts) + 1
    rows = []
    for text in texts:
        tokens = words(text)
        n = len(tokens)
        oov = sum(1 for t in tokens if t not in counts)
        if n:
            log_prob = sum(math.log((counts.get(t, 0) + 1) / (total + size)) for t in tokens)
            perplexity = math.exp(-log_prob / n)
        else:
            perplexity = float(size)
        rows.append({"length": float(len(text)), "word_count": float(n), "oov_share": oov / n if n else 0.0,
                     "unigram_perplexity": perplexity})
    return pd.DataFrame(rows, columns=list(DESCRIPTORS))


def descriptor_frames(reference: Sequence[str], current: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Descriptors of both sides, measured out of sample on both: the reference is split in two folds,
    each fold is measured against the other fold's vocabulary, and current rows alternate between the
    two vocabularies (a text measured against a vocabulary built from itself has no OOV words at all)."""
    folds = (list(reference[0::2]), list(reference[1::2]))
    vocabs = (vocabulary(folds[0]), vocabulary(folds[1]))
    ref_parts = [text_descriptors(folds[0], vocabs[1]), text_descriptors(folds[1], vocabs[0])]
    ref_df = pd.concat(ref_parts, ignore_index=True)
    ref_df["prompt"] = folds[0] + folds[1]
    cur_parts = [text_descriptors(list(current[0::2]), vocabs[0]), text_descriptors(list(current[1::2]), vocabs[1])]
    cur_df = pd.concat(cur_parts, ignore_index=True)
    cur_df["prompt"] = list(current[0::2]) + list(current[1::2])
    return ref_df, cur_df


def _sample(texts: Sequence[str], limit: int) -> list[str]:
    texts = [t for t in texts if isinstance(t, str)]
    if len(texts) <= limit:
        return texts
    idx = np.random.default_rng(0).choice(len(texts), size=limit, replace=False)
    return [texts[i] for i in sorted(idx)]


def _is_tiny_vocabulary_error(exc: Exception) -> bool:
    message = str(exc).lower()
    return isinstance(exc, ValueError) and ("no terms remain" in message or "empty vocabulary" in message)


def _run_report(reference: pd.DataFrame, current: pd.DataFrame, text: bool, thresholds: DriftThresholds):
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=list(DESCRIPTORS), text_columns=["prompt"] if text else [])
    columns = list(DESCRIPTORS) + (["prompt"] if text else [])
    report = Report([DataDriftPreset(columns=columns, num_method="ks", num_threshold=thresholds.p_value)])
    return report.run(Dataset.from_pandas(current[columns], data_definition=definition),
                      Dataset.from_pandas(reference[columns], data_definition=definition))


def _severity(p_values: dict[str, float], text_detected: bool | None, t: DriftThresholds) -> tuple[str, str]:
    """high: most descriptors drift strongly; medium: most drift and one strongly; low: most drift
    weakly, or the text content alone drifts; none otherwise (one weak p-value out of four is noise)."""
    n = len(p_values)
    drifted = [k for k, p in p_values.items() if p < t.p_value]
    strong = [k for k, p in p_values.items() if p < t.strong_p_value]
    share, strong_share = len(drifted) / n, len(strong) / n
    if strong_share >= t.high_share:
        return "high", f"{len(strong)}/{n} descriptors drift with p < {t.strong_p_value} ({', '.join(strong)})"
    if share >= t.medium_share and strong:
        return "medium", (f"{len(drifted)}/{n} descriptors drift with p < {t.p_value} ({', '.join(drifted)}), "
                          f"{len(strong)} with p < {t.strong_p_value}")
    if share >= t.low_share or text_detected:
        extra = "; the text content drifts too" if text_detected else ""
        return "low", f"{len(drifted)}/{n} descriptors drift with p < {t.p_value}{extra}"
    return "none", f"no drift: {len(drifted)}/{n} descriptors with p < {t.p_value}, text content stable"


def detect_drift(reference_texts: Sequence[str], current_texts: Sequence[str], *,
                 thresholds: DriftThresholds = DriftThresholds(), html: bool = True) -> DriftResult:
    """Compare current prompts with reference prompts. Severity None means no verdict (too few prompts)."""
    reference, current = _sample(reference_texts, MAX_ROWS), _sample(current_texts, MAX_ROWS)
    if len(reference) < thresholds.min_reference or len(current) < thresholds.min_current:
        reason = (f"no verdict: {len(current)} current prompts (minimum {thresholds.min_current}) and "
                  f"{len(reference)} reference prompts (minimum {thresholds.min_reference})")
        log.info(reason)
        return DriftResult(severity=None, reference_count=len(reference), current_count=len(current), reason=reason)

    ref_df, cur_df = descriptor_frames(reference, current)

    note = None
    text = thresholds.text_drift
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn convergence and numpy divide warnings of the text check
        try:
            snapshot = _run_report(ref_df, cur_df, text, thresholds)
        except ValueError as exc:  # sklearn's vectorizer on a tiny vocabulary: "After pruning, no terms remain"
            if not (text and _is_tiny_vocabulary_error(exc)):
                raise
            note = f"text-content drift skipped: the vocabulary is too small ({exc})"
            log.info(note)
            text = False
            snapshot = _run_report(ref_df, cur_df, text, thresholds)

    p_values: dict[str, float] = {}
    text_score, dataset_share, drifted_count = None, None, None
    for metric in snapshot.dict()["metrics"]:
        config, value = metric["config"], metric["value"]
        if config["type"].endswith("DriftedColumnsCount"):
            dataset_share, drifted_count = float(value["share"]), int(value["count"])
        elif config["type"].endswith("ValueDrift"):
            if config["column"] == "prompt":
                text_score = float(value)
            else:
                p = float(value)
                p_values[config["column"]] = 1.0 if math.isnan(p) else p  # constant columns: no evidence
    drifted = [k for k in DESCRIPTORS if p_values.get(k, 1.0) < thresholds.p_value]
    text_detected = None
    if text and drifted_count is not None:  # evidently counts the text column when its content drifts
        text_detected = drifted_count - len(drifted) >= 1 and (text_score or 0.0) >= thresholds.text_min_score
    severity, reason = _severity(p_values, text_detected, thresholds)
    return DriftResult(
        severity=severity, reference_count=len(reference), current_count=len(current), p_values=p_values,
        drifted=drifted, drift_share=len(drifted) / len(DESCRIPTORS), dataset_drift_share=dataset_share,
        text_drift_score=text_score, text_drift_detected=text_detected, text_drift_note=note,
        reference_means={k: round(float(ref_df[k].mean()), 4) for k in DESCRIPTORS},
        current_means={k: round(float(cur_df[k].mean()), 4) for k in DESCRIPTORS},
        reason=reason, html=snapshot.get_html_str(as_iframe=False) if html else None)


def latency_drift(previous_week_ms: Sequence[float], current_ms: Sequence[float], *,
                  thresholds: DriftThresholds = DriftThresholds()) -> LatencyResult:
    """Current latencies against the previous week's: KS p-value and the p95 ratio decide the severity
    (slower only; a faster endpoint is no alert)."""
    from scipy.stats import ks_2samp

    prev = np.asarray([x for x in previous_week_ms if x is not None], dtype=float)
    cur = np.asarray([x for x in current_ms if x is not None], dtype=float)
    if len(prev) < thresholds.min_reference or len(cur) < thresholds.min_current:
        reason = (f"no verdict: {len(cur)} current requests (minimum {thresholds.min_current}) and {len(prev)} "
                  f"in the previous week (minimum {thresholds.min_reference})")
        log.info(reason)
        return LatencyResult(severity=None, previous_count=len(prev), current_count=len(cur), reason=reason)
    p = float(ks_2samp(prev, cur).pvalue)
    p50p, p95p = float(np.percentile(prev, 50)), float(np.percentile(prev, 95))
    p50c, p95c = float(np.percentile(cur, 50)), float(np.percentile(cur, 95))
    ratio = p95c / p95p if p95p > 0 else float("inf")
    t = thresholds
    if p >= t.latency_p_value or ratio < t.latency_low_ratio:
        severity = "none"
    elif ratio >= t.latency_high_ratio:
        severity = "high"
    elif ratio >= t.latency_medium_ratio:
        severity = "medium"
    else:
        severity = "low"
    reason = (f"p95 latency {p95c:.0f} ms vs {p95p:.0f} ms in the previous week (x{ratio:.2f}), "
              f"KS p-value {p:.2g}")
    return LatencyResult(severity=severity, previous_count=len(prev), current_count=len(cur), p_value=p,
                         previous_p50_ms=round(p50p, 2), previous_p95_ms=round(p95p, 2), current_p50_ms=round(p50c, 2),
                         current_p95_ms=round(p95c, 2), p95_ratio=round(ratio, 3), reason=reason)
