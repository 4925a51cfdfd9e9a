"""The runner: every system in a subprocess of its own, one after the other, then one
markdown table with absolute figures and ratios against ProcessPoolExecutor.

    python -m bench                      # everything (~5-10 min), writes bench/results.md
    python -m bench --quick              # tiny sizes, a smoke run (does not touch results.md
                                         # unless --output is given)
    python -m bench --only ppe,nbqueue   # a subset (names: python -m bench --list)

Peers that are not installed (``pip install -e ".[bench]"``), and Redis-based peers when
the local Redis does not answer, are skipped with a note in the table. After each system
the runner kills whatever that system left running: the processes of its process group and
the workers it recorded (pid and start time) in its pid file.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any
from urllib.parse import urlparse

import psutil

from bench.common import PG_URL, REDIS_URL, ROOT, child_env

RESULTS_MD = os.path.join(ROOT, "bench", "results.md")
X = "\u00d7"  # multiplication sign
DASH = "\u2013"  # en dash: no figure

QUICK_SIZES = {
    "BENCH_W1_N": "300",
    "BENCH_W2_N": "30",
    "BENCH_W3_N": "200",
    "BENCH_W4_N": "5000",
    "BENCH_W5_N": "40",
    "BENCH_W5_STEPS": "10",
    "BENCH_REPEATS": "1",
    "BENCH_WARMUP": "20",
}


@dataclasses.dataclass(frozen=True)
class Entry:
    key: str
    module: str
    workloads: str
    args: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()  # importable modules
    redis: bool = False
    timeout: float = 300.0
    what: str = ""
    #: Run in every round (interleaved with ProcessPoolExecutor, median of the rounds):
    #: the sub-millisecond figures the targets compare are the noise-sensitive ones.
    rounds: bool = False


NBQ = "bench.sys_nbqueue"
ENTRIES = [
    Entry("ppe", "bench.sys_ppe", "w1,w2", what="the reference", rounds=True),
    Entry("nbqueue", NBQ, "w1,w2", ("--store", "memory", "--tasks-per-worker", "16"),
          what="headline: in memory, tasks_per_worker=16", rounds=True),
    Entry("nbqueue-tpw3", NBQ, "w1,w2", ("--store", "memory", "--tasks-per-worker", "3"),
          what="the default tasks_per_worker=3", rounds=True),
    Entry("nbqueue-notebook", NBQ, "w1,w2",
          ("--store", "memory", "--tasks-per-worker", "16", "--mode", "notebook"),
          what="controller on the caller's asyncio loop, as in Jupyter", rounds=True),
    Entry("nbqueue-sqlite", NBQ, "w1,w3", ("--store", "sqlite", "--tasks-per-worker", "16")),
    Entry("nbqueue-postgresql", NBQ, "w1,w3",
          ("--store", "postgresql", "--tasks-per-worker", "16"), requires=("psycopg",)),
    Entry("nbqueue-w4", NBQ, "w4", ("--store", "memory", "--tasks-per-worker", "16"),
          what="100,000 pending tasks, a fresh process"),
    Entry("nbqueue-w5", NBQ, "w5", ("--store", "memory", "--tasks-per-worker", "16"),
          what="progress with the dashboard attached"),
    Entry("loky", "bench.sys_loky", "w1,w2", requires=("loky",)),
    Entry("dask", "bench.sys_dask", "w1,w2", requires=("distributed",)),
    Entry("huey", "bench.sys_huey", "w1,w2,w3", requires=("huey",)),
    Entry("huey-tuned", "bench.sys_huey", "w1,w2,w3", ("--tuned",), requires=("huey",)),
    Entry("rq", "bench.sys_rq", "w1,w2,w3", requires=("rq", "redis"), redis=True),
    Entry("celery", "bench.sys_celery", "w1,w2,w3", requires=("celery", "redis"), redis=True),
]  # fmt: skip


# -- environment checks -------------------------------------------------------------------
def redis_answers(url: str = REDIS_URL, timeout: float = 2.0) -> str | None:
    """None when the Redis at ``url`` answers PING, else why not."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            if not sock.recv(64).startswith(b"+PONG"):
                return f"Redis at {host}:{port} did not answer PING"
    except OSError as exc:
        return f"no Redis at {host}:{port} ({exc})"
    return None


def missing(entry: Entry) -> list[str]:
    return [m for m in entry.requires if importlib.util.find_spec(m) is None]


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("nbqueue", "cloudpickle", "pandas", "ipywidgets", "loky", "dask", "distributed",
                 "huey", "rq", "celery", "kombu", "redis", "psutil", "pyinstrument"):  # fmt: skip
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    commit = dirty = None
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            check=True,
        ).stdout.strip()  # fmt: skip
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--", "nbqueue"], cwd=ROOT,
                capture_output=True, text=True, check=True,
            ).stdout.strip()
        )  # fmt: skip
    return {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "loadavg": round(os.getloadavg()[0], 2),
        "versions": versions,
        "commit": commit,
        "nbqueue_dirty": dirty,
    }


# -- running one system -------------------------------------------------------------------
def _reap(pgid: int, started: float, pidfile: str) -> list[str]:
    """Kill what a finished system left alive: members of its process group started after
    it, and the processes it recorded in its pid file (same pid and start time)."""
    victims: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["pid", "create_time"]):
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(p.pid) == pgid and p.info["create_time"] >= started - 1:
                victims[p.pid] = p
    with contextlib.suppress(OSError), open(pidfile) as f:
        for line in f:
            parts = line.split(" ", 2)
            if len(parts) < 2:
                continue
            with contextlib.suppress(psutil.Error, ValueError):
                p = psutil.Process(int(parts[0]))
                if abs(p.create_time() - float(parts[1])) < 0.05:
                    victims[p.pid] = p
    # resource trackers and the like exit by themselves once their parent has gone
    _, alive = psutil.wait_procs(list(victims.values()), timeout=3)
    killed = []
    for p in alive:
        with contextlib.suppress(psutil.Error):
            if p.status() != psutil.STATUS_ZOMBIE:
                killed.append(" ".join(p.cmdline())[:100])
                p.kill()
    psutil.wait_procs(alive, timeout=5)
    return killed


def run_entry(
    entry: Entry, raw: str, env: dict[str, str], timeout: float | None, tag: str = ""
) -> dict[str, Any]:
    out = os.path.join(raw, f"{entry.key}{tag}.json")
    for stale in (out, out + ".pids"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(stale)
    cmd = [sys.executable, "-m", entry.module, "--out", out, "--workloads", entry.workloads]
    cmd += list(entry.args)
    started = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
    limit = timeout or entry.timeout
    timed_out = False
    try:
        proc.wait(limit)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    except BaseException:  # Ctrl-C: stop the system, then go
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
        _reap(proc.pid, started, out + ".pids")
        raise
    killed = _reap(proc.pid, started, out + ".pids")
    try:
        with open(out) as f:
            result: dict[str, Any] = json.load(f)
    except (OSError, ValueError):
        result = {"system": entry.key, "label": entry.key, "results": {}, "skipped": {},
                  "notes": [], "errors": []}  # fmt: skip
    result["key"] = entry.key
    if timed_out:
        result.setdefault("errors", []).append(f"hard time-out after {limit:.0f} s")
    elif proc.returncode:
        result.setdefault("errors", []).append(f"exit status {proc.returncode}")
    if killed:
        result.setdefault("notes", []).append(
            f"the runner killed {len(killed)} leftover process(es): {'; '.join(killed)}"
        )
    result["what"] = entry.what
    return result


#: Figures kept per round when rounds are merged.
ROUND_KEYS = ("tasks_per_s", "p50_ms", "p99_ms")


def merge_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from several rounds of one system: the median of each figure, with the
    per-round values of the headline figures under ``rounds``."""
    if len(runs) == 1:
        return runs[0]
    merged = dict(runs[0])
    merged["results"] = {}
    for workload in runs[0].get("results", {}):
        values = [r["results"][workload] for r in runs if workload in r.get("results", {})]
        one: dict[str, Any] = {}
        for key, first in values[0].items():
            numbers = [v.get(key) for v in values]
            if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in numbers):
                one[key] = statistics.median(numbers)
            else:
                one[key] = first
        one["rounds"] = {k: [v[k] for v in values] for k in ROUND_KEYS if k in values[0]}
        merged["results"][workload] = one
    for field in ("notes", "errors"):
        merged[field] = list(dict.fromkeys(x for r in runs for x in r.get(field, [])))
    merged["rounds"] = len(runs)
    merged["loadavg_end"] = runs[-1].get("loadavg_end")
    return merged


def skipped_entry(entry: Entry, reason: str) -> dict[str, Any]:
    return {
        "key": entry.key, "system": entry.key, "label": entry.key, "results": {},
        "skipped": dict.fromkeys(entry.workloads.split(","), reason), "notes": [], "errors": [],
    }  # fmt: skip


# -- the table ----------------------------------------------------------------------------
def _num(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def _ratio(x: float | None) -> str:
    return "" if x is None else f" ({x:.2f}{X})"


def _get(r: dict[str, Any] | None, workload: str, key: str) -> float | None:
    if r is None:
        return None
    value = r.get("results", {}).get(workload, {}).get(key)
    return None if value is None else float(value)


def _label(r: dict[str, Any]) -> str:
    return str(r.get("label") or r.get("key"))


def render(results: list[dict[str, Any]], info: dict[str, Any], sizes: dict[str, str]) -> str:
    by_key = {r["key"]: r for r in results}
    ppe = by_key.get("ppe")
    ppe_w1 = _get(ppe, "w1", "tasks_per_s")
    ppe_p50 = _get(ppe, "w2", "p50_ms")
    ppe_p99 = _get(ppe, "w2", "p99_ms")
    rounds = max((int(r.get("rounds", 1)) for r in results), default=1)

    def div(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else a / b

    lines = ["# nbqueue benchmark", ""]
    v = info["versions"]
    peers = ", ".join(
        f"{k} {v[k]}" for k in ("loky", "distributed", "huey", "rq", "celery", "redis") if v.get(k)
    )
    lines += [
        f"Run {info['date']} on {info['cores']} cores ({info['cpu']}), {info['memory_gb']} GB, "
        f"{info['kernel']}, Python {info['python']}; load average {info['loadavg']} at the "
        f"start. nbqueue {v.get('nbqueue')} at commit {info.get('commit') or '?'}"
        + (" (with uncommitted changes in nbqueue/)" if info.get("nbqueue_dirty") else "")
        + f"; {peers or 'no peers installed'}.",
        "",
        "Sizes: "
        + ", ".join(f"{k.removeprefix('BENCH_')}={val}" for k, val in sizes.items())
        + ". Every system runs with 2 worker processes and the task `inc(x) = x + 1` from an "
        "importable module. Ratios are against ProcessPoolExecutor measured in the same run "
        "(for W2, a ratio below 1 is faster)."
        + (
            f" ProcessPoolExecutor and the in-memory nbqueue rows ran in {rounds} interleaved "
            "rounds (PPE, nbqueue, ..., PPE, nbqueue, ...); their figures are the medians of "
            "the rounds, so slow drift in the machine's load hits both sides alike."
            if rounds > 1
            else ""
        )
        + " Reproduce with `python -m bench`.",
        "",
        f"| System | W1 tasks/s ({X} PPE) | W2 p50 ms ({X} PPE) | W2 p99 ms ({X} PPE) "
        f"| W3 tasks/s ({X} PPE W1) |",
        "|---|---|---|---|---|",
    ]
    footnotes: list[str] = []
    for r in results:
        if r["key"] in ("nbqueue-w4", "nbqueue-w5"):
            continue
        cells = []
        w1 = _get(r, "w1", "tasks_per_s")
        p50 = _get(r, "w2", "p50_ms")
        p99 = _get(r, "w2", "p99_ms")
        w3 = _get(r, "w3", "tasks_per_s")
        cells.append(DASH if w1 is None else _num(w1) + _ratio(div(w1, ppe_w1)))
        cells.append(DASH if p50 is None else _num(p50) + _ratio(div(p50, ppe_p50)))
        cells.append(DASH if p99 is None else _num(p99) + _ratio(div(p99, ppe_p99)))
        cells.append(DASH if w3 is None else _num(w3) + _ratio(div(w3, ppe_w1)))
        marks = ""
        reasons = sorted(set(r.get("skipped", {}).values())) + list(r.get("errors", []))
        if reasons:
            footnotes.append(
                f"{_label(r)}: "
                + "; ".join(f"{', '.join(w.upper() for w, why in r['skipped'].items() if why == x)}"
                            f" skipped: {x}" for x in sorted(set(r.get("skipped", {}).values())))
                + "".join(f"; error: {e.strip().splitlines()[-1]}" for e in r.get("errors", []))
            )  # fmt: skip
            marks = f" [{len(footnotes)}]"
        lines.append(f"| {_label(r)}{marks} | " + " | ".join(cells) + " |")
    lines.append("")
    for i, text in enumerate(footnotes, 1):
        lines.append(f"[{i}] {text.removeprefix(': ')}  ")
    if footnotes:
        lines.append("")

    lines += _nbqueue_only(by_key)
    lines += _targets(by_key, ppe_w1, ppe_p50)
    lines += _notes(results)
    return "\n".join(lines).rstrip() + "\n"


def _nbqueue_only(by_key: dict[str, dict[str, Any]]) -> list[str]:
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


def _targets(
    by_key: dict[str, dict[str, Any]], ppe_w1: float | None, ppe_p50: float | None
) -> list[str]:
    def best(keys: list[str], workload: str) -> tuple[float | None, str]:
        found = [(_get(by_key.get(k), workload, "tasks_per_s"), k) for k in keys]
        found = [(x, k) for x, k in found if x is not None]
        if not found:
            return None, ""
        x, k = max(found)
        return x, _label(by_key[k])

    def why_not(key: str, workload: str) -> str:
        r = by_key.get(key)
        if r is None:
            return "not run"
        reason = r.get("skipped", {}).get(workload)
        if reason:
            return "skipped: " + reason.split(": ", 1)[-1]
        return "not measured"

    rows = []

    def ratio_row(target: str, a: float | None, b: float | None, need: float, miss_a: str,
                  miss_b: str, higher: bool = True,
                  per_round: tuple[list[float], list[float]] | None = None) -> None:  # fmt: skip
        if a is None or b is None:
            rows.append(f"| {target} | {miss_a if a is None else miss_b} | {DASH} |")
            return
        x = a / b
        ok = x >= need if higher else x <= need
        detail = ""
        if per_round and len(per_round[0]) == len(per_round[1]) > 1:
            each = ", ".join(f"{p / q:.2f}" for p, q in zip(*per_round, strict=True))
            detail = f" (rounds: {each})"
        rows.append(f"| {target} | {x:.2f}{X}{detail} | {'yes' if ok else '**no**'} |")

    def rounds_of(key: str, workload: str, figure: str) -> list[float]:
        w = by_key.get(key, {}).get("results", {}).get(workload, {})
        return list(w.get("rounds", {}).get(figure, []))

    nbq = by_key.get("nbqueue")
    ratio_row(
        f"W1 in memory ≥ 1.5{X} ProcessPoolExecutor",
        _get(nbq, "w1", "tasks_per_s"),
        ppe_w1,
        1.5,
        why_not("nbqueue", "w1"),
        why_not("ppe", "w1"),
        per_round=(
            rounds_of("nbqueue", "w1", "tasks_per_s"),
            rounds_of("ppe", "w1", "tasks_per_s"),
        ),
    )
    ratio_row(
        "W2 p50 ≤ ProcessPoolExecutor's (ratio ≤ 1)",
        _get(nbq, "w2", "p50_ms"),
        ppe_p50,
        1.0,
        why_not("nbqueue", "w2"),
        why_not("ppe", "w2"),
        higher=False,
        per_round=(rounds_of("nbqueue", "w2", "p50_ms"), rounds_of("ppe", "w2", "p50_ms")),
    )
    huey_w1, _ = best(["huey", "huey-tuned"], "w1")
    huey_w3, _ = best(["huey", "huey-tuned"], "w3")
    sq = by_key.get("nbqueue-sqlite")
    ratio_row(
        f"W1 on SQLite ≥ 5{X} Huey on SQLite (its better row)",
        _get(sq, "w1", "tasks_per_s"),
        huey_w1,
        5.0,
        why_not("nbqueue-sqlite", "w1"),
        why_not("huey", "w1"),
    )
    ratio_row(
        f"W3 on SQLite ≥ 5{X} Huey on SQLite (its better row)",
        _get(sq, "w3", "tasks_per_s"),
        huey_w3,
        5.0,
        why_not("nbqueue-sqlite", "w3"),
        why_not("huey", "w3"),
    )
    ratio_row(
        f"W3 on PostgreSQL ≥ 5{X} Celery on Redis",
        _get(by_key.get("nbqueue-postgresql"), "w3", "tasks_per_s"),
        _get(by_key.get("celery"), "w3", "tasks_per_s"),
        5.0,
        why_not("nbqueue-postgresql", "w3"),
        why_not("celery", "w3"),
    )
    w4 = by_key.get("nbqueue-w4", {}).get("results", {}).get("w4")
    if w4:
        mb, fs = w4["rss_above_baseline_mb"], w4["status_frame_s"]
        rows.append(f"| W4 RSS < 150 MB above the baseline | {mb:.0f} MB | "
                    f"{'yes' if mb < 150 else '**no**'} |")  # fmt: skip
        rows.append(f"| W4 status_frame() < 1 s | {fs:.2f} s | {'yes' if fs < 1 else '**no**'} |")
    else:
        rows.append(f"| W4 | {why_not('nbqueue-w4', 'w4')} | {DASH} |")
    w5 = by_key.get("nbqueue-w5", {}).get("results", {}).get("w5")
    if w5 and "widget_updates_max_1s" in w5:
        peak = w5["widget_updates_max_1s"]
        rows.append(f"| W5 ≤ 10 widget updates per second | {w5['widget_updates_per_s']:.1f}/s "
                    f"on average, {peak} in the busiest second | "
                    f"{'yes' if peak <= 10 else '**no**'} |")  # fmt: skip
    elif w5:
        rows.append(f"| W5 ≤ 10 widget updates per second | {w5.get('counted')} | {DASH} |")
    else:
        rows.append(f"| W5 | {why_not('nbqueue-w5', 'w5')} | {DASH} |")
    return ["## Targets (ratios from this run)", "", "| Target | Measured | Met |",
            "|---|---|---|", *rows, ""]  # fmt: skip


def _notes(results: list[dict[str, Any]]) -> list[str]:
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
        lines.append(f"- **{_label(r)}**{what}: " + "; ".join(dict.fromkeys(bits)) + ".")
    lines.append("")
    return lines


# -- main ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated systems to run (see --list)")
    parser.add_argument("--skip", default="", help="comma-separated systems not to run")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--output", help=f"write the table here (default {RESULTS_MD}; "
                        "with --quick, nowhere)")  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--raw-dir", help="keep each system's JSON and logs here")
    parser.add_argument("--timeout", type=float, help="hard time-out per system, seconds")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="interleaved rounds of ProcessPoolExecutor and the in-memory nbqueue rows "
        "(median of the rounds; default 5, 1 with --quick)",
    )
    parser.add_argument("--list", action="store_true", help="list the systems and exit")
    args = parser.parse_args(argv)

    if args.list:
        for e in ENTRIES:
            print(f"{e.key:20} {e.workloads:9} {e.what}")
        return 0
    known = {e.key for e in ENTRIES}
    only = [x for x in (args.only or "").split(",") if x]
    skip = [x for x in args.skip.split(",") if x]
    unknown = [x for x in only + skip if x not in known]
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; see --list")
    entries = [e for e in ENTRIES if (not only or e.key in only) and e.key not in skip]

    env = child_env()
    env["PYTHONUNBUFFERED"] = "1"
    if args.quick:
        for k, val in QUICK_SIZES.items():
            env.setdefault(k, val)
    sizes = {}
    for k in ("BENCH_W1_N", "BENCH_W2_N", "BENCH_W3_N", "BENCH_W4_N", "BENCH_W5_N",
              "BENCH_W5_STEPS", "BENCH_W5_PAUSE", "BENCH_REPEATS"):  # fmt: skip
        if env.get(k):
            sizes[k] = env[k]
    from bench import common

    defaults = {"BENCH_W1_N": common.N_W1, "BENCH_W2_N": common.N_W2, "BENCH_W3_N": common.N_W3,
                "BENCH_W4_N": common.N_W4, "BENCH_W5_N": common.N_W5,
                "BENCH_W5_STEPS": common.W5_STEPS, "BENCH_W5_PAUSE": common.W5_PAUSE,
                "BENCH_REPEATS": common.REPEATS}  # fmt: skip
    sizes = {k: str(sizes.get(k, defaults[k])) for k in defaults}

    raw = args.raw_dir or tempfile.mkdtemp(prefix="nbqueue-bench-")
    os.makedirs(raw, exist_ok=True)
    info = machine()
    redis_problem = redis_answers() if any(e.redis for e in entries) else None
    print(f"nbqueue benchmark: {len(entries)} system(s); raw results in {raw}", flush=True)
    if args.quick and not any(a.startswith("--rounds") for a in (argv or sys.argv[1:])):
        args.rounds = 1
    t0 = time.monotonic()
    runnable = []
    by_key: dict[str, dict[str, Any]] = {}
    for entry in entries:
        gone = missing(entry)
        if gone:
            reason = f'not installed ({", ".join(gone)}): pip install -e ".[bench]"'
            print(f"[{entry.key}] skipped: {reason}", flush=True)
            by_key[entry.key] = skipped_entry(entry, reason)
        elif entry.redis and redis_problem:
            print(f"[{entry.key}] skipped: {redis_problem}", flush=True)
            by_key[entry.key] = skipped_entry(entry, redis_problem)
        else:
            runnable.append(entry)
    # The round systems first, interleaved round by round; then every other system once.
    rounds = max(1, args.rounds)
    runs: dict[str, list[dict[str, Any]]] = {}
    interleaved = [e for e in runnable if e.rounds]
    for n in range(rounds if interleaved else 0):
        if rounds > 1:
            print(f"--- round {n + 1}/{rounds}", flush=True)
        for entry in interleaved:
            tag = f"-round{n + 1}" if rounds > 1 else ""
            runs.setdefault(entry.key, []).append(run_entry(entry, raw, env, args.timeout, tag))
    for entry in runnable:
        if not entry.rounds:
            runs[entry.key] = [run_entry(entry, raw, env, args.timeout)]
    for key, done in runs.items():
        by_key[key] = merge_rounds(done)
    results = [by_key[e.key] for e in entries if e.key in by_key]
    with open(os.path.join(raw, "machine.json"), "w") as f:
        json.dump(info, f, indent=1)
    table = render(results, info, sizes)
    print()
    print(table)
    print(f"(all systems: {time.monotonic() - t0:.0f} s)")
    output = args.output or (None if args.quick else RESULTS_MD)
    if output and not args.no_write:
        with open(output, "w") as f:
            f.write(table)
        print(f"wrote {output}")
    errors = [r for r in results if r.get("errors")]
    return 1 if errors else 0


__all__ = ["ENTRIES", "PG_URL", "main", "render"]
