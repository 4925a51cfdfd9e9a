"""The markdown the runner prints and writes to ``bench/results.md``."""

from __future__ import annotations

from typing import Any

from bench import sections, targets
from bench.entries import MEMORY
from bench.figures import DASH, Result, X, footnote, footnote_lines, get, label, num, times

#: The peers whose versions the header names.
PEER_DISTS = ("loky", "distributed", "huey", "rq", "celery", "redis", "pgqueuer", "procrastinate",
              "ray")  # fmt: skip


def render(results: list[Result], info: dict[str, Any], sizes: dict[str, str]) -> str:
    """The whole page: the main table, nbqueue's own workloads, the targets, the notes."""
    by_key = {r["key"]: r for r in results}
    lines = ["# nbqueue benchmark", ""]
    lines += _header(info, sizes)
    lines += _main_table(results, by_key.get("ppe"))
    lines += sections.durable(results)
    lines += sections.cluster(by_key)
    lines += sections.nbqueue_only(by_key)
    lines += targets.section(by_key)
    lines += _notes(results)
    return "\n".join(lines).rstrip() + "\n"


def _header(info: dict[str, Any], sizes: dict[str, str]) -> list[str]:
    v = info["versions"]
    peers = ", ".join(f"{k} {v[k]}" for k in PEER_DISTS if v.get(k))
    rounds = {g: n for g, n in info.get("rounds", {}).items() if n > 1}
    text = (
        "Sizes: "
        + ", ".join(f"{k.removeprefix('BENCH_')}={val}" for k, val in sizes.items())
        + ". Every system runs with 2 worker processes and the task `inc(x) = x + 1` from an "
        "importable module. Ratios are against ProcessPoolExecutor measured in the same run "
        "(for W2, a ratio below 1 is faster)."
    )
    if rounds:
        text += (
            " Systems of one group ran in interleaved rounds (each member once per round: "
            + ", ".join(f"{g} {n} rounds" for g, n in rounds.items())
            + "); their figures are the medians of the rounds, and a ratio between two of "
            "them is the median of the per-round ratios, so slow drift in the machine's load "
            "hits both sides alike."
        )
        if any(g != MEMORY for g in rounds):
            text += (" Outside the memory group each round runs each workload once "
                     "(REPEATS=1 there: the rounds are the repeats).")  # fmt: skip
    return [
        f"Run {info['date']} on {info['cores']} cores ({info['cpu']}), {info['memory_gb']} GB, "
        f"{info['kernel']}, Python {info['python']}; load average {info['loadavg']} at the "
        f"start. nbqueue {v.get('nbqueue')} at commit {info.get('commit') or '?'}"
        + (" (with uncommitted changes in nbqueue/)" if info.get("nbqueue_dirty") else "")
        + f"; {peers or 'no peers installed'}.",
        "",
        text + " Reproduce with `python -m bench`.",
        "",
    ]


def _in_main_table(r: Result) -> bool:
    workloads = set(r.get("workloads", "").split(",")) | set(r.get("results", {}))
    return bool(workloads & {"w1", "w2", "w3"})


def _main_table(results: list[Result], ppe: Result | None) -> list[str]:
    ppe_w1 = get(ppe, "w1", "tasks_per_s")
    ppe_p50 = get(ppe, "w2", "p50_ms")
    ppe_p99 = get(ppe, "w2", "p99_ms")

    def cell(x: float | None, ref: float | None) -> str:
        return DASH if x is None else num(x) + times(None if not ref else x / ref)

    lines = [
        f"| System | W1 tasks/s ({X} PPE) | W2 p50 ms ({X} PPE) | W2 p99 ms ({X} PPE) "
        f"| W3 tasks/s ({X} PPE W1) |",
        "|---|---|---|---|---|",
    ]
    footnotes: list[str] = []
    for r in results:
        if not _in_main_table(r):
            continue
        cells = [
            cell(get(r, "w1", "tasks_per_s"), ppe_w1),
            cell(get(r, "w2", "p50_ms"), ppe_p50),
            cell(get(r, "w2", "p99_ms"), ppe_p99),
            cell(get(r, "w3", "tasks_per_s"), ppe_w1),
        ]
        mark = footnote(r, footnotes)
        lines.append(f"| {label(r)}{mark} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines + footnote_lines(footnotes)


def _notes(results: list[Result]) -> list[str]:
    lines = ["## How each system was driven", ""]
    for r in results:
        if not r.get("results"):
            continue
        bits = list(r.get("notes", []))
        settings = r.get("settings", {})
        if settings.get("storage"):
            bits.insert(0, f"storage: {settings['storage']}")
        load = (r.get("loadavg_start"), r.get("loadavg_end"))
        if None not in load:
            bits.append(f"load average {load[0]} → {load[1]}")
        what = f" ({r['what']})" if r.get("what") else ""
        lines.append(f"- **{label(r)}**{what}: " + "; ".join(dict.fromkeys(bits)) + ".")
    lines.append("")
    return lines
