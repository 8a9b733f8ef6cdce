"""Recommendations computed from the analysis numbers (each one cites the figure behind it)."""

from __future__ import annotations

from typing import Any

IMBALANCE_SHARE = 0.5  # a category holding more than half the records
MAX_CATEGORIES = 50  # only low-cardinality string fields are treated as categories


def recommendations(analysis: dict[str, Any]) -> list[str]:
    out: list[str] = []
    quality = analysis["quality_issues"]
    n = analysis["record_count"]
    dups = analysis["duplicates"]
    if dups["exact"]:
        out.append(f"Remove {dups['exact']} duplicate records")
    if dups["near"]:
        out.append(f"Review {dups['near']} near-duplicate records (estimated Jaccard >= {dups['threshold']})")
    for field, missing in sorted(analysis["missing_by_field"].items(), key=lambda kv: -kv[1]):
        out.append(f"Fill missing values in '{field}' field ({missing} of {n} records)")
    if quality["outliers"]:
        o = analysis["outliers"]
        out.append(f"Inspect {quality['outliers']} length outliers (text longer than {o['upper_fence']:.0f} or "
                   f"shorter than {max(0, o['lower_fence']):.0f} characters)")
    tokens = analysis.get("token_lengths")
    if tokens and tokens["over_context"]:
        out.append(f"{tokens['over_context_share']:.1%} of records ({tokens['over_context']}"
                   f"{' in the sample' if tokens['sampled'] else ''}) exceed the model context of "
                   f"{tokens['context_length']} tokens: truncate or split them")
    for field, stats in analysis["field_stats"].items():
        uniques = stats.get("unique_values")
        if stats["type"] == "string" and stats.get("most_common") and uniques and 1 < uniques <= MAX_CATEGORIES:
            top, count = stats["top_count"]
            if count / max(1, stats["present"]) > IMBALANCE_SHARE:
                out.append(f"Consider balancing {field} distribution: '{top}' is {count / stats['present']:.0%} "
                           f"of records with a value")
    expectations = analysis.get("expectations")
    if expectations and not expectations["success"]:
        failed = [r for r in expectations["results"] if not r["success"]]
        out.append(f"Fix {len(failed)} failed data checks: " + ", ".join(
            f"{r['expectation']}({r['column']}): {r['unexpected_count']} rows" for r in failed[:5]))
    if analysis["format"] == "custom":
        out.append("No instruction format detected (prompt/completion, instruction/output or chat messages): "
                   "map the fields to one before fine-tuning")
    return out
