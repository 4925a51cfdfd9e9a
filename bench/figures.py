"""Reading figures out of the systems' results, and writing them into markdown."""

from __future__ import annotations

import statistics
from typing import Any

X = "\u00d7"  # multiplication sign
DASH = "\u2013"  # en dash: no figure

Result = dict[str, Any]


def num(x: float) -> str:
    """A figure with about three significant digits."""
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def times(x: float | None) -> str:
    """A ratio in brackets after a figure, or nothing."""
    return "" if x is None else f" ({x:.2f}{X})"


def get(r: Result | None, workload: str, key: str) -> float | None:
    """One figure (the median of the rounds for a system that ran in rounds)."""
    if r is None:
        return None
    value = r.get("results", {}).get(workload, {}).get(key)
    return None if value is None else float(value)


def per_round(r: Result | None, workload: str, key: str) -> list[float | None]:
    """A figure's value in each round, None where a round lacks it ([] when run once)."""
    if r is None:
        return []
    w = r.get("results", {}).get(workload, {})
    return [None if x is None else float(x) for x in w.get("rounds", {}).get(key, [])]


def label(r: Result) -> str:
    return str(r.get("label") or r.get("key"))


def ratio(
    a: Result | None, b: Result | None, workload: str, key: str, key_b: str | None = None,
    workload_b: str | None = None,
) -> tuple[float | None, list[float]]:  # fmt: skip
    """``a / b`` for one figure: the median of the per-round ratios when both ran in the
    same rounds (each pair measured in the same minutes), else the ratio of the figures.
    Returns the ratio and the per-round ratios ([] when there were no rounds)."""
    key_b = key_b or key
    workload_b = workload_b or workload
    ra, rb = per_round(a, workload, key), per_round(b, workload_b, key_b)
    if len(ra) == len(rb) > 1:
        each = [x / y for x, y in zip(ra, rb, strict=True) if x is not None and y]
        if each:
            return statistics.median(each), each
    x, y = get(a, workload, key), get(b, workload_b, key_b)
    return (None if x is None or not y else x / y), []


def why_not(by_key: dict[str, Result], key: str, workload: str) -> str:
    """Why a system has no figure for a workload."""
    r = by_key.get(key)
    if r is None:
        return f"{key} not run"
    reason = r.get("skipped", {}).get(workload)
    if reason:
        return f"{key} skipped: {reason}"
    if r.get("errors"):
        return f"{key}: error ({r['errors'][-1].strip().splitlines()[-1][:80]})"
    return f"{key}: not measured"


def footnote(r: Result, footnotes: list[str]) -> str:
    """Append why a system has missing figures (skips, errors) to ``footnotes``; the mark."""
    skipped: dict[str, str] = r.get("skipped", {})
    reasons = sorted(set(skipped.values()))
    errors = [e.strip().splitlines()[-1] for e in r.get("errors", []) if e.strip()]
    if not reasons and not errors:
        return ""
    parts = [
        f"{', '.join(w.upper() for w, why in skipped.items() if why == x)} skipped: {x}"
        for x in reasons
    ]
    parts += [f"error: {e}" for e in errors]
    footnotes.append(f"{label(r)}: " + "; ".join(parts))
    return f" [{len(footnotes)}]"


def footnote_lines(footnotes: list[str]) -> list[str]:
    return [f"[{i}] {text}  " for i, text in enumerate(footnotes, 1)] + ([""] if footnotes else [])
