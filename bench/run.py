"""The runner: every system in a subprocess of its own, then one markdown page with absolute
figures, ratios against ProcessPoolExecutor, and the targets.

    python -m bench                      # everything (~25 min), writes bench/results.md
    python -m bench --quick              # tiny sizes, a smoke run (does not touch results.md
                                         # unless --output is given)
    python -m bench --only ppe,nbqueue   # a subset (names: python -m bench --list)

Systems of one group (``bench/entries.py``) run in interleaved rounds, one after the other
in each round; the others once. Peers that are not installed (``pip install -e ".[bench]"``),
Redis-based peers when the local Redis does not answer, and PostgreSQL-based ones when the
local PostgreSQL does not, are skipped with a note in the table. After each system the
runner kills whatever that system left running: the processes of its process group and the
workers it recorded (pid and start time) in its pid file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import psutil

from bench.common import ROOT, child_env
from bench.entries import DURABLE, ENTRIES, GROUPS, MEMORY, Entry
from bench.environment import machine, unavailable
from bench.table import render

RESULTS_MD = os.path.join(ROOT, "bench", "results.md")

QUICK_SIZES = {
    "BENCH_W1_N": "300",
    "BENCH_W2_N": "30",
    "BENCH_W3_N": "200",
    "BENCH_W4_N": "5000",
    "BENCH_W5_N": "40",
    "BENCH_W5_STEPS": "10",
    "BENCH_REPEATS": "1",
    "BENCH_WARMUP": "20",
    "BENCH_WD_N": "40",
    "BENCH_BIG_MB": "8",
}
#: The sizes the table's header reports.
SIZE_VARS = ("BENCH_W1_N", "BENCH_W2_N", "BENCH_W3_N", "BENCH_W4_N", "BENCH_W5_N",
             "BENCH_W5_STEPS", "BENCH_W5_PAUSE", "BENCH_WD_N", "BENCH_BIG_MB", "BENCH_BIG_TASKS",
             "BENCH_REPEATS")  # fmt: skip


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
    entry: Entry,
    raw: str,
    env: dict[str, str],
    timeout: float | None,
    workloads: str,
    tag: str = "",
) -> dict[str, Any]:
    """Run one system's ``workloads`` in a subprocess; its result, with errors noted."""
    out = os.path.join(raw, f"{entry.key}{tag}.json")
    for stale in (out, out + ".pids"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(stale)
    cmd = [sys.executable, "-m", entry.module, "--out", out, "--workloads", workloads]
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


#: Figures kept per round when rounds are merged (None for a round that lacks one).
ROUND_KEYS = ("tasks_per_s", "p50_ms", "p99_ms", "rss_growth_x")


def merge_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from several rounds of one system: the median of each figure, with the
    per-round values of the headline figures under ``rounds``."""
    if len(runs) == 1:
        return runs[0]
    merged = dict(runs[0])
    merged["results"] = {}
    workloads = dict.fromkeys(w for r in runs for w in r.get("results", {}))
    for workload in workloads:
        each = [r.get("results", {}).get(workload) for r in runs]
        values = [v for v in each if v is not None]
        one: dict[str, Any] = {}
        for key, first in values[0].items():
            numbers = [v.get(key) for v in values]
            if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in numbers):
                one[key] = statistics.median(numbers)
            else:
                one[key] = first
        one["rounds"] = {
            k: [None if v is None else v.get(k) for v in each] for k in ROUND_KEYS if k in one
        }
        merged["results"][workload] = one
    merged["skipped"] = {
        w: why for r in runs for w, why in r.get("skipped", {}).items() if w not in workloads
    }
    for field in ("notes", "errors"):
        merged[field] = list(dict.fromkeys(x for r in runs for x in r.get(field, [])))
    merged["rounds"] = len(runs)
    merged["loadavg_end"] = runs[-1].get("loadavg_end")
    return merged


def combine(rounds: dict[str, Any] | None, once: dict[str, Any] | None) -> dict[str, Any]:
    """A system's workloads run in rounds and those run once, as one result."""
    if rounds is None or once is None:
        result = rounds or once
        assert result is not None
        return result
    merged = dict(rounds)
    merged["results"] = {**once.get("results", {}), **rounds.get("results", {})}
    merged["skipped"] = {**once.get("skipped", {}), **rounds.get("skipped", {})}
    for field in ("notes", "errors"):
        merged[field] = list(dict.fromkeys([*rounds.get(field, []), *once.get(field, [])]))
    return merged


def skipped_entry(entry: Entry, reason: str) -> dict[str, Any]:
    return {
        "key": entry.key, "system": entry.key, "label": entry.key, "results": {},
        "skipped": dict.fromkeys(entry.workloads.split(","), reason), "notes": [], "errors": [],
        "what": entry.what, "group": entry.group, "workloads": entry.workloads,
    }  # fmt: skip


def run_all(
    runnable: list[Entry], rounds: dict[str, int], raw: str, env: dict[str, str],
    timeout: float | None,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Each group's members in interleaved rounds, then what each entry runs once; one
    result per entry."""
    in_rounds: dict[str, list[dict[str, Any]]] = {}
    for group in GROUPS:
        members = [e for e in runnable if e.group == group]
        n = rounds[group] if members else 0
        genv = dict(env)
        if group != MEMORY and n > 1:
            genv.setdefault("BENCH_REPEATS", "1")  # the rounds are the repeats
        for i in range(n):
            if n > 1:
                print(f"--- {group} round {i + 1}/{n}", flush=True)
            for entry in members:
                tag = f"-round{i + 1}" if n > 1 else ""
                in_rounds.setdefault(entry.key, []).append(
                    run_entry(entry, raw, genv, timeout, entry.in_rounds(), tag)
                )
    once: dict[str, dict[str, Any]] = {}
    for entry in runnable:
        if entry.once():
            tag = "-once" if entry.group else ""
            once[entry.key] = run_entry(entry, raw, env, timeout, entry.once(), tag)
    out = {}
    for entry in runnable:
        merged = merge_rounds(in_rounds[entry.key]) if entry.key in in_rounds else None
        out[entry.key] = combine(merged, once.get(entry.key)) | {
            "group": entry.group,
            "workloads": entry.workloads,
        }
    return out


# -- main ---------------------------------------------------------------------------------
def _sizes(env: dict[str, str]) -> dict[str, str]:
    """The sizes in effect (the environment's, else the defaults), for the header."""
    from bench import common

    defaults = {"BENCH_W1_N": common.N_W1, "BENCH_W2_N": common.N_W2, "BENCH_W3_N": common.N_W3,
                "BENCH_W4_N": common.N_W4, "BENCH_W5_N": common.N_W5,
                "BENCH_W5_STEPS": common.W5_STEPS, "BENCH_W5_PAUSE": common.W5_PAUSE,
                "BENCH_WD_N": common.N_WD, "BENCH_BIG_MB": common.BIG_MB,
                "BENCH_BIG_TASKS": common.BIG_TASKS, "BENCH_REPEATS": common.REPEATS}  # fmt: skip
    return {k: str(env.get(k) or defaults[k]) for k in SIZE_VARS}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated systems to run (see --list)")
    parser.add_argument("--skip", default="", help="comma-separated systems not to run")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--output", help=f"write the table here (default {RESULTS_MD}; "
                        "with --quick, nowhere)")  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--raw-dir", help="keep each system's JSON and logs here")
    parser.add_argument("--timeout", type=float, help="hard time-out per system, seconds")
    parser.add_argument("--rounds", type=int, help=f"interleaved rounds of the {MEMORY} group "
                        "(sub-millisecond W1/W2; default 5, 1 with --quick)")  # fmt: skip
    parser.add_argument("--slow-rounds", type=int, help=f"interleaved rounds of the {DURABLE} "
                        "and cluster groups (default 3, 1 with --quick)")  # fmt: skip
    parser.add_argument("--list", action="store_true", help="list the systems and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        for e in ENTRIES:
            print(f"{e.key:26} {e.group or 'once':8} {e.workloads:10} {e.what}")
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
    sizes = _sizes(env)
    rounds = {MEMORY: args.rounds, **{g: args.slow_rounds for g in GROUPS if g != MEMORY}}
    rounds = {g: max(1, n if n is not None else 1 if args.quick else 5 if g == MEMORY else 3)
              for g, n in rounds.items()}  # fmt: skip

    raw = args.raw_dir or tempfile.mkdtemp(prefix="nbqueue-bench-")
    os.makedirs(raw, exist_ok=True)
    print(f"nbqueue benchmark: {len(entries)} system(s); raw results in {raw}", flush=True)
    t0 = time.monotonic()
    by_key: dict[str, dict[str, Any]] = {}
    runnable = []
    for entry in entries:
        reason = unavailable(entry)
        if reason:
            print(f"[{entry.key}] skipped: {reason}", flush=True)
            by_key[entry.key] = skipped_entry(entry, reason)
        else:
            runnable.append(entry)
    in_use = {e.group for e in runnable}
    info = machine() | {"rounds": {g: n for g, n in rounds.items() if g in in_use}}

    by_key |= run_all(runnable, rounds, raw, env, args.timeout)
    results = [by_key[e.key] for e in entries]
    with open(os.path.join(raw, "machine.json"), "w") as f:
        json.dump(info, f, indent=1)
    with open(os.path.join(raw, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
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


__all__ = ["ENTRIES", "main", "render"]
