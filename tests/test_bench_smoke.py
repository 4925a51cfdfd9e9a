"""The benchmark harness (bench/) runs end to end at tiny sizes, so it cannot rot.

Benchmarks are not tests: nothing here asserts on a timing, only that every workload ran
and produced its figures, that workloads the installed nbqueue cannot run yet are skipped
with a reason, and that the page renders. Only nbqueue, ProcessPoolExecutor and Dask run
(the `dev` extra); the peers of the `bench` extra (pgqueuer, procrastinate, Ray, ...) are
not needed: a peer that is missing is skipped with a note.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench/ is not part of the installed package
    sys.path.insert(0, str(ROOT))

from bench import entries, environment, run  # noqa: E402

SYSTEMS = ["ppe", "nbqueue", "nbqueue-notebook", "nbqueue-sqlite", "nbqueue-w4", "nbqueue-w5",
           "nbqueue-big"]  # fmt: skip
DASK = ["dask-capped", "nbqueue-dask"]
X = "\u00d7"


def test_quick_run_measures_every_workload(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    out, raw = tmp_path / "results.md", tmp_path / "raw"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", ",".join(SYSTEMS + DASK),
         "--output", str(out), "--raw-dir", str(raw), "--timeout", "90"],
        cwd=ROOT, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = {r["key"]: r for r in json.loads((raw / "results.json").read_text())}
    for key in SYSTEMS + DASK:
        assert res[key]["errors"] == [], (key, res[key]["errors"])

    for key in ("ppe", "nbqueue", "nbqueue-notebook"):
        w1, w2 = res[key]["results"]["w1"], res[key]["results"]["w2"]
        assert w1["n"] == int(run.QUICK_SIZES["BENCH_W1_N"]) and w1["tasks_per_s"] > 0
        assert w2["n"] == int(run.QUICK_SIZES["BENCH_W2_N"]) and 0 < w2["p50_ms"] <= w2["p99_ms"]
    assert res["nbqueue"]["settings"]["tasks_per_worker"] is None  # the library's default

    sqlite = res["nbqueue-sqlite"]
    for workload in ("w1", "w3"):  # measured once Queue(db=...) works, skipped with a reason before
        assert workload in sqlite["results"] or sqlite["skipped"][workload]
    assert "add() returns before" in sqlite["settings"]["enqueue"]

    w4 = res["nbqueue-w4"]["results"]["w4"]
    assert w4["n"] == int(run.QUICK_SIZES["BENCH_W4_N"])
    assert w4["add_s"] > 0 and w4["status_frame_s"] > 0 and "rss_above_baseline_mb" in w4

    w5 = res["nbqueue-w5"]["results"]["w5"]
    assert w5["n"] == int(run.QUICK_SIZES["BENCH_W5_N"])
    assert w5["controller_cpu_s"] >= 0 and w5["progress_events"] > 0
    assert "widget_updates" in w5

    big = res["nbqueue-big"]  # measured once queue.put() exists, skipped until then
    if "wbig" in big["results"]:
        wbig = big["results"]["wbig"]
        assert wbig["object_mb"] == pytest.approx(int(run.QUICK_SIZES["BENCH_BIG_MB"]), rel=0.01)
        assert wbig["tasks_per_s"] > 0 and "rss_growth_x" in wbig
    else:
        assert big["skipped"]["wbig"].startswith("needs queue.put()")

    for key in DASK:
        wdask = res[key]["results"]["wdask"]
        assert wdask["n"] == int(run.QUICK_SIZES["BENCH_WD_N"]) and wdask["tasks_per_s"] > 0
        assert wdask["cap"] == 2

    table = out.read_text()
    assert "| ProcessPoolExecutor (spawn) | " in table
    assert "## Targets" in table and "W4 status_frame() < 1 s" in table
    assert "## On a Dask cluster" in table and "## A big shared input" in table
    assert f"Dask backend ≥ 0.8{X} plain Dask futures under the same cap | " in table


def _result(key: str, **workloads: dict[str, object]) -> dict[str, object]:
    return {"key": key, "label": key, "skipped": {}, "errors": [], "notes": [],
            "results": workloads}  # fmt: skip


INFO = {"date": "today", "cores": 2, "cpu": "cpu", "memory_gb": 1, "kernel": "k",
        "python": "3", "loadavg": 0.0, "versions": {"nbqueue": "0"}}  # fmt: skip


def test_table_renders_skipped_and_missing_systems() -> None:
    ppe = _result("ppe", w1={"tasks_per_s": 1000.0}, w2={"p50_ms": 0.2, "p99_ms": 0.4})
    nbq = _result("nbqueue", w1={"tasks_per_s": 2000.0}, w2={"p50_ms": 0.1, "p99_ms": 0.5})
    entry = next(e for e in entries.ENTRIES if e.key == "celery")
    gone = run.skipped_entry(entry, 'not installed (celery): pip install -e ".[bench]"')
    table = run.render([ppe, nbq, gone], INFO, {"BENCH_W1_N": "5000"})
    assert f"| nbqueue | 2,000 (2.00{X}) | 0.100 (0.50{X}) | 0.500 (1.25{X}) |" in table
    assert "not installed (celery)" in table
    assert (
        f"| W1 in memory, default options, ≥ 2{X} ProcessPoolExecutor (floor 1.5{X}) "
        f"| 2.00{X} | yes |"
    ) in table


def test_a_missing_peer_is_skipped_not_run() -> None:
    for key in ("pgqueuer", "pgqueuer-batch", "procrastinate", "ray", "ray-big"):
        entry = next(e for e in entries.ENTRIES if e.key == key)
        assert entry.requires, key  # checked before the run: skipped where not installed
    absent = entries.Entry("absent", "bench.sys_absent", "w1", requires=("no_such_peer_xyz",))
    reason = environment.unavailable(absent)
    assert reason == 'not installed (no_such_peer_xyz): pip install -e ".[bench]"'


def test_rounds_give_medians_and_per_round_ratios() -> None:
    rounds = [_result("nbqueue-postgresql", w3={"tasks_per_s": x}) for x in (100.0, 300.0, 200.0)]
    peer = [_result("pgqueuer-batch", w3={"tasks_per_s": x}) for x in (50.0, 300.0, 400.0)]
    mine, theirs = run.merge_rounds(rounds), run.merge_rounds(peer)
    assert mine["results"]["w3"]["tasks_per_s"] == 200.0
    assert mine["results"]["w3"]["rounds"]["tasks_per_s"] == [100.0, 300.0, 200.0]
    table = run.render([mine, theirs], INFO, {})
    # per round 2.00, 1.00, 0.50: the median of the ratios, not the ratio of the medians
    assert (f"| W3 on PostgreSQL, default options, ≥ 1{X} pgqueuer's batch drain "
            f"| 1.00{X} (rounds: 2.00, 1.00, 0.50) | yes |") in table  # fmt: skip
