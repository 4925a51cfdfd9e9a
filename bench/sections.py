"""Sections of the page beyond the main table: the durable path, Dask, the big shared input,
and nbqueue's own workloads."""

from __future__ import annotations

from bench.entries import DURABLE
from bench.figures import (
    DASH,
    Result,
    X,
    footnote,
    footnote_lines,
    label,
    num,
    per_round,
    ratio,
)

#: The durable-path rows that are nbqueue's (the ratio matrix's rows).
NBQUEUE_DURABLE = ("nbqueue-sqlite", "nbqueue-postgresql", "nbqueue-postgresql-flush")


def _rounds_cell(r: Result, workload: str) -> str:
    each = per_round(r, workload, "tasks_per_s")
    median = r.get("results", {}).get(workload, {}).get("tasks_per_s")
    if median is None:
        return DASH
    if len(each) < 2:
        return num(median)
    return " / ".join(DASH if x is None else num(x) for x in each) + f" (**{num(median)}**)"


def durable(results: list[Result]) -> list[str]:
    """W1/W3 of the durable-path systems, round by round, how each makes a task durable,
    and nbqueue's W3 against each peer (median of the per-round ratios)."""
    rows = [r for r in results if r.get("group") == DURABLE]
    if not rows:
        return []
    rounds = max(int(r.get("rounds", 1)) for r in rows)
    lines = [
        "## The durable path",
        "",
        (f"These systems ran in {rounds} interleaved rounds (one W1 and one W3 run each per "
         "round, a fresh database or file for every run); a cell is round 1 / 2 / ... "
         "(**median**)." if rounds > 1 else "These systems ran once each.")
        + " They do not make a task durable at the same moment, so the second column says "
        "when each one commits. Every W3 clock stops once every task's final state is stored "
        "where the producer reads it: nbqueue's rows, read back over a connection of its own "
        "(a count of the rows not completed yet, polled every 2 ms; each row is checked "
        "after the clock); "
        "the job's final status for pgqueuer and procrastinate (they keep no return values); "
        "the result in SQLite for Huey, in Redis for Celery.",
        "",
        "| System | When an enqueued task is committed | W1 tasks/s | W3 tasks/s |",
        "|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        enqueue = r.get("settings", {}).get("enqueue", DASH)
        lines.append(f"| {label(r)} | {enqueue} | {_rounds_cell(r, 'w1')} | "
                     f"{_rounds_cell(r, 'w3')} |")  # fmt: skip
    by_key = {r["key"]: r for r in rows}
    mine = [k for k in NBQUEUE_DURABLE if k in by_key]
    peers = [r["key"] for r in rows if r["key"] not in NBQUEUE_DURABLE]
    if mine and peers:
        lines += ["", f"W3 of nbqueue {X} each peer (median of the per-round ratios):", "",
                  "| nbqueue row | " + " | ".join(peers) + " |",
                  "|---|" + "---|" * len(peers)]  # fmt: skip
        for k in mine:
            cells = []
            for p in peers:
                x, _ = ratio(by_key[k], by_key[p], "w3", "tasks_per_s")
                cells.append(DASH if x is None else f"{x:.2f}{X}")
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def cluster(by_key: dict[str, Result]) -> list[str]:
    """nbqueue's Dask backend against plain Dask futures under the same cap, and the big
    shared input against Ray and Dask."""
    lines: list[str] = []
    dask_rows = [by_key[k] for k in ("nbqueue-dask", "dask-capped") if k in by_key]
    if dask_rows:
        n = next((r["results"]["wdask"]["n"] for r in dask_rows if "wdask" in r["results"]), 0)
        lines += ["## On a Dask cluster", "",
                  f"{n} tasks `inc(i)` on a LocalCluster of 2 processes x 1 thread, at most as "
                  "many in flight as the cluster has threads on both sides.", "",
                  "| System | tasks/s |", "|---|---|"]  # fmt: skip
        footnotes: list[str] = []
        for r in dask_rows:
            mark = footnote(r, footnotes)
            lines.append(f"| {label(r)}{mark} | {_rounds_cell(r, 'wdask')} |")
        lines += ["", *footnote_lines(footnotes)]
    big_rows = [by_key[k] for k in ("nbqueue-big", "ray-big", "dask-big") if k in by_key]
    if big_rows:
        first = next((r["results"]["wbig"] for r in big_rows if "wbig" in r["results"]), None)
        size = f"{first['object_mb']:.0f} MB" if first else "big"
        tasks = first["n"] if first else "several"
        lines += ["## A big shared input", "",
                  f"One {size} DataFrame passed to {tasks} tasks. RSS growth: the peak resident "
                  "memory of the process that holds the object (the kernel's place) above its "
                  "level before sharing, in multiples of the object's size; shared memory the "
                  "process wrote (Ray's object store) counts. tasks/s: from sharing the object "
                  "to the last result.", "",
                  "| System | how it is shared | RSS growth | tasks/s |",
                  "|---|---|---|---|"]  # fmt: skip
        footnotes = []
        for r in big_rows:
            mark = footnote(r, footnotes)
            w = r.get("results", {}).get("wbig")
            growth = f"{w['rss_growth_x']:.2f}{X} ({w['rss_growth_mb']:.0f} MB)" if w else DASH
            lines.append(f"| {label(r)}{mark} | {r.get('what') or DASH} | {growth} | "
                         f"{_rounds_cell(r, 'wbig')} |")  # fmt: skip
        lines += ["", *footnote_lines(footnotes)]
    return lines


def nbqueue_only(by_key: dict[str, Result]) -> list[str]:
    lines = ["## nbqueue only: W4 and W5", ""]
    w4 = by_key.get("nbqueue-w4", {}).get("results", {}).get("w4")
    w5 = by_key.get("nbqueue-w5", {}).get("results", {}).get("w5")
    lines += ["| Workload | Measure | Value |", "|---|---|---|"]
    if w4:
        n = w4["n"]
        lines += [
            f"| W4 {n:,} pending tasks | controller RSS above the baseline "
            f"({w4['baseline_rss_mb']:.0f} MB after import and init) | "
            f"{w4['rss_above_baseline_mb']:.0f} MB ({w4['bytes_per_task']:,.0f} bytes/task) |",
            f"| | time to create and add them | {w4['add_s']:.2f} s "
            f"({w4['adds_per_s']:,.0f} adds/s) |",
            f"| | `status_frame()` | {w4['status_frame_s']:.2f} s "
            f"(RSS {w4['rss_above_baseline_with_frame_mb']:.0f} MB above the baseline while "
            "the frame is alive) |",
        ]
    else:
        lines.append(f"| W4 | {DASH} | not measured |")
    if w5:
        n, steps = w5["n"], w5["steps"]
        lines += [
            f"| W5 {n:,} tasks {X} {steps} progress reports, dashboard attached "
            f"({w5['seconds']:.1f} s) | controller CPU | {w5['controller_cpu_s']:.2f} s "
            f"({w5['controller_cpu_pct']:.0f} % of one core; "
            f"{w5['controller_cpu_s_without_dashboard']:.2f} s without the dashboard) |",
            f"| | widget updates: {w5.get('counted', '')} | "
            f"{w5.get('widget_updates', DASH)} in all, "
            f"{w5.get('widget_updates_per_s', 0):.1f}/s"
            + (f", at most {w5['widget_updates_max_1s']} in any 1 s"
               if "widget_updates_max_1s" in w5 else "")
            + " |",
        ]  # fmt: skip
        if "widget_messages" in w5:
            lines.append(
                f"| | comm messages sent by those updates | {w5['widget_messages']:,} "
                f"({w5['widget_messages_per_s']:.0f}/s) |"
            )
        lines.append(
            f"| | progress events reaching the controller | {w5['progress_events']:,} for "
            f"{w5['progress_reports']:,} reports (the workers coalesce them) |"
        )
    else:
        lines.append(f"| W5 | {DASH} | not measured |")
    lines.append("")
    return lines
