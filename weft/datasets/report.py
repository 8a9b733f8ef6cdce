"""The analysis document (document 000's `analysis` object plus the detail behind each number) and
its Prefect artifacts: a markdown report and a field-statistics table."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from weft.clock import utcnow
from weft.datasets.profile import Profile


def assemble(fingerprint: str, profile: Profile, fmt: BaseModel, tokens: BaseModel | None, dups: BaseModel,
             outliers: BaseModel, expectations: dict[str, Any]) -> dict[str, Any]:
    """Everything but the recommendations (which are derived from this)."""
    stats = {name: s.model_dump(exclude_none=True) for name, s in profile.field_stats.items()}
    return {
        "record_count": profile.record_count,
        "fingerprint": fingerprint,
        "format": profile.format,
        "format_info": fmt.model_dump(),
        "field_stats": stats,
        "quality_issues": {"missing_values": profile.missing_values, "duplicates": dups.exact,
                           "near_duplicates": dups.near, "outliers": outliers.count},
        "missing_by_field": profile.missing_by_field,
        "duplicates": dups.model_dump(),
        "outliers": outliers.model_dump(),
        "token_lengths": tokens.model_dump() if tokens else None,
        "expectations": expectations,
        "analyzed_at": utcnow().isoformat(),
    }


def markdown(name: str, analysis: dict[str, Any]) -> str:
    q = analysis["quality_issues"]
    lines = [f"# Dataset analysis: {name}", "",
             f"**{analysis['record_count']:,} records**, format `{analysis['format']}`, sha256 "
             f"`{analysis['fingerprint'][:16]}…`", "",
             "| missing values | duplicates | near duplicates | outliers |", "| --- | --- | --- | --- |",
             f"| {q['missing_values']} | {q['duplicates']} | {q['near_duplicates']} | {q['outliers']} |", ""]
    tokens = analysis.get("token_lengths")
    if tokens:
        lines += [f"Tokens ({'sample of ' if tokens['sampled'] else ''}{tokens['records']} records): p50 "
                  f"{tokens['p50']:.0f}, p95 {tokens['p95']:.0f}, max {tokens['max']}; "
                  f"{tokens['over_context_share']:.1%} over the {tokens['context_length']}-token context", ""]
    checks = analysis.get("expectations") or {}
    if checks:
        lines += [f"Data checks (`{checks['suite']}`): {'passed' if checks['success'] else 'FAILED'}", ""]
        lines += [f"- {'✅' if r['success'] else '❌'} {r['expectation']} `{r['column']}`: "
                  f"{r['unexpected_count']} of {r['element_count']} unexpected" for r in checks["results"]]
        lines.append("")
    lines += ["## Recommendations", ""] + [f"- {r}" for r in analysis["recommendations"]]
    return "\n".join(lines)


def field_table(analysis: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"field": name, "type": s["type"], "present": s["present"], "missing": s["missing"],
             "unique_values": s.get("unique_values"), "most_common": ", ".join(map(str, s.get("most_common") or [])),
             "avg_length": s.get("avg_length"), "min_length": s.get("min_length"), "max_length": s.get("max_length")}
            for name, s in analysis["field_stats"].items()]


def publish_report(name: str, analysis: dict[str, Any]) -> None:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_markdown_artifact(markdown(name, analysis), key="dataset-analysis", description=f"analysis of {name}")
    create_table_artifact(field_table(analysis), key="dataset-field-stats", description=f"field statistics of {name}")
