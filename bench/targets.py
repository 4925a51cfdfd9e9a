"""The "Targets" section: each target a ratio between two systems of the same run."""

from __future__ import annotations

from typing import Any

from bench.figures import DASH, Result, X, get, per_round, ratio, why_not


class _Rows:
    def __init__(self, by_key: dict[str, Result]) -> None:
        self.by_key = by_key
        self.lines: list[str] = []

    def ratio(
        self, target: str, a: str, b: str, workload: str, key: str, need: float | None, *,
        higher: bool = True, floor: float | None = None, workload_b: str | None = None,
        key_b: str | None = None,
    ) -> None:  # fmt: skip
        """A row for ``a / b`` (system keys) against ``need`` (None: no target, the ratio
        only; ``floor``: a lower bar that must hold even when the target is missed)."""
        x, each = ratio(self.by_key.get(a), self.by_key.get(b), workload, key,
                        key_b=key_b, workload_b=workload_b)  # fmt: skip
        if x is None:
            missing = a if get(self.by_key.get(a), workload, key) is None else b
            why = why_not(
                self.by_key, missing, workload if missing == a else workload_b or workload
            )
            self.lines.append(f"| {target} | {why} | {DASH} |")
            return
        met = DASH
        if need is not None:
            ok = x >= need if higher else x <= need
            met = "yes" if ok else "**no**"
            if not ok and floor is not None and x >= floor:
                met = f"floor only ({floor:g}{X})"
        detail = f" (rounds: {', '.join(f'{v:.2f}' for v in each)})" if each else ""
        self.lines.append(f"| {target} | {x:.2f}{X}{detail} | {met} |")

    def plain(self, target: str, measured: str, met: str = DASH) -> None:
        self.lines.append(f"| {target} | {measured} | {met} |")

    def best(self, keys: list[str], workload: str) -> str:
        """Of several rows of one peer, the key of the fastest (the first when none ran)."""
        found = [(get(self.by_key.get(k), workload, "tasks_per_s") or 0.0, -i, k)
                 for i, k in enumerate(keys)]  # fmt: skip
        return max(found)[2]


def section(by_key: dict[str, Result]) -> list[str]:
    t = _Rows(by_key)
    t.ratio(f"W1 in memory, default options, ≥ 2{X} ProcessPoolExecutor (floor 1.5{X})",
            "nbqueue", "ppe", "w1", "tasks_per_s", 2.0, floor=1.5)  # fmt: skip
    t.ratio("W2 p50, default options, ≤ ProcessPoolExecutor's (ratio ≤ 1)",
            "nbqueue", "ppe", "w2", "p50_ms", 1.0, higher=False)  # fmt: skip
    huey_w1 = t.best(["huey", "huey-tuned"], "w1")
    huey_w3 = t.best(["huey", "huey-tuned"], "w3")
    t.ratio(f"W1 on SQLite ≥ 5{X} Huey on SQLite (its better row)",
            "nbqueue-sqlite", huey_w1, "w1", "tasks_per_s", 5.0)  # fmt: skip
    t.ratio(f"W3 on SQLite ≥ 5{X} Huey on SQLite (its better row)",
            "nbqueue-sqlite", huey_w3, "w3", "tasks_per_s", 5.0)  # fmt: skip
    t.ratio(f"W3 on PostgreSQL, default options, ≥ 1{X} pgqueuer's batch drain",
            "nbqueue-postgresql", "pgqueuer-batch", "w3", "tasks_per_s", 1.0)  # fmt: skip
    t.ratio(f"W3 on PostgreSQL, clock includes flush(), ≥ 1{X} pgqueuer's batch drain",
            "nbqueue-postgresql-flush", "pgqueuer-batch", "w3", "tasks_per_s", 1.0)  # fmt: skip
    t.ratio(f"W3 on PostgreSQL ≥ 5{X} Celery on Redis",
            "nbqueue-postgresql", "celery", "w3", "tasks_per_s", 5.0)  # fmt: skip
    t.ratio(f"Dask backend ≥ 0.8{X} plain Dask futures under the same cap",
            "nbqueue-dask", "dask-capped", "wdask", "tasks_per_s", 0.8)  # fmt: skip
    _big(t, by_key)
    _w4_w5(t, by_key)
    return ["## Targets (ratios from this run)", "", "| Target | Measured | Met |",
            "|---|---|---|", *t.lines, ""]  # fmt: skip


def _big(t: _Rows, by_key: dict[str, Result]) -> None:
    """The big shared input: the kernel's RSS growth (a multiple of the object's size, no
    peer needed) and tasks/s against Ray and Dask (no target: shown side by side)."""
    mine = by_key.get("nbqueue-big")
    growth = get(mine, "wbig", "rss_growth_x")
    target = f"Big shared input: kernel RSS growth ≤ 1.2{X} the object"
    if growth is None:
        t.plain(target, why_not(by_key, "nbqueue-big", "wbig"))
    else:
        each = [x for x in per_round(mine, "wbig", "rss_growth_x") if x is not None]
        detail = f" (rounds: {', '.join(f'{v:.2f}' for v in each)})" if len(each) > 1 else ""
        t.plain(target, f"{growth:.2f}{X}{detail}", "yes" if growth <= 1.2 else "**no**")
    for peer, name in (("ray-big", "Ray (ray.put)"), ("dask-big", "Dask (client.scatter)")):
        t.ratio(f"Big shared input: tasks/s against {name}", "nbqueue-big", peer, "wbig",
                "tasks_per_s", None)  # fmt: skip


def _w4_w5(t: _Rows, by_key: dict[str, Result]) -> None:
    w4: dict[str, Any] | None = by_key.get("nbqueue-w4", {}).get("results", {}).get("w4")
    if w4:
        mb, fs = w4["rss_above_baseline_mb"], w4["status_frame_s"]
        t.plain(
            "W4 RSS < 150 MB above the baseline", f"{mb:.0f} MB", "yes" if mb < 150 else "**no**"
        )
        t.plain("W4 status_frame() < 1 s", f"{fs:.2f} s", "yes" if fs < 1 else "**no**")
    else:
        t.plain("W4", why_not(by_key, "nbqueue-w4", "w4"))
    w5: dict[str, Any] | None = by_key.get("nbqueue-w5", {}).get("results", {}).get("w5")
    if w5 and "widget_updates_max_1s" in w5:
        peak = w5["widget_updates_max_1s"]
        t.plain("W5 ≤ 10 widget updates per second",
                f"{w5['widget_updates_per_s']:.1f}/s on average, {peak} in the busiest second",
                "yes" if peak <= 10 else "**no**")  # fmt: skip
    elif w5:
        t.plain("W5 ≤ 10 widget updates per second", str(w5.get("counted")))
    else:
        t.plain("W5", why_not(by_key, "nbqueue-w5", "w5"))
