"""The benchmark harness (bench/) runs end to end at tiny sizes, so it cannot rot.

Benchmarks are not tests: nothing here asserts on a timing, only that every workload ran
and produced its figures, that unsupported stores are skipped with a reason, and that the
table renders. Only nbqueue and ProcessPoolExecutor run (no optional packages needed).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench/ is not part of the installed package
    sys.path.insert(0, str(ROOT))

from bench import run  # noqa: E402

SYSTEMS = ["ppe", "nbqueue", "nbqueue-notebook", "nbqueue-sqlite", "nbqueue-w4", "nbqueue-w5"]


def test_quick_run_measures_every_workload(tmp_path: Path) -> None:
    out, raw = tmp_path / "results.md", tmp_path / "raw"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", ",".join(SYSTEMS),
         "--output", str(out), "--raw-dir", str(raw), "--timeout", "90"],
        cwd=ROOT, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = {key: json.loads((raw / f"{key}.json").read_text()) for key in SYSTEMS}
    for key in SYSTEMS:
        assert res[key]["errors"] == [], (key, res[key]["errors"])

    for key in ("ppe", "nbqueue", "nbqueue-notebook"):
        w1, w2 = res[key]["results"]["w1"], res[key]["results"]["w2"]
        assert w1["n"] == int(run.QUICK_SIZES["BENCH_W1_N"]) and w1["tasks_per_s"] > 0
        assert w2["n"] == int(run.QUICK_SIZES["BENCH_W2_N"]) and 0 < w2["p50_ms"] <= w2["p99_ms"]

    sqlite = res["nbqueue-sqlite"]
    for workload in ("w1", "w3"):  # measured once Queue(db=...) works, skipped with a reason before
        assert workload in sqlite["results"] or sqlite["skipped"][workload]

    w4 = res["nbqueue-w4"]["results"]["w4"]
    assert w4["n"] == int(run.QUICK_SIZES["BENCH_W4_N"])
    assert w4["add_s"] > 0 and w4["status_frame_s"] > 0 and "rss_above_baseline_mb" in w4

    w5 = res["nbqueue-w5"]["results"]["w5"]
    assert w5["n"] == int(run.QUICK_SIZES["BENCH_W5_N"])
    assert w5["controller_cpu_s"] >= 0 and w5["progress_events"] > 0
    assert "widget_updates" in w5

    table = out.read_text()
    assert "| ProcessPoolExecutor (spawn) | " in table
    assert "## Targets" in table and "W4 status_frame() < 1 s" in table


def test_table_renders_skipped_and_missing_systems() -> None:
    ppe = {
        "key": "ppe", "label": "ProcessPoolExecutor (spawn)", "skipped": {}, "errors": [],
        "notes": [], "results": {"w1": {"tasks_per_s": 1000.0}, "w2": {"p50_ms": 0.2,
                                                                       "p99_ms": 0.4}},
    }  # fmt: skip
    nbq = {
        "key": "nbqueue", "label": "nbqueue", "skipped": {}, "errors": [], "notes": [],
        "results": {"w1": {"tasks_per_s": 2000.0}, "w2": {"p50_ms": 0.1, "p99_ms": 0.5}},
    }  # fmt: skip
    entry = next(e for e in run.ENTRIES if e.key == "celery")
    gone = run.skipped_entry(entry, 'not installed (celery): pip install -e ".[bench]"')
    info = {"date": "today", "cores": 2, "cpu": "cpu", "memory_gb": 1, "kernel": "k",
            "python": "3", "loadavg": 0.0, "versions": {"nbqueue": "0"}}  # fmt: skip
    table = run.render([ppe, nbq, gone], info, {"BENCH_W1_N": "5000"})
    assert "| nbqueue | 2,000 (2.00\u00d7) | 0.100 (0.50\u00d7) | 0.500 (1.25\u00d7) |" in table
    assert "not installed (celery)" in table
    assert "| W1 in memory \u2265 1.5\u00d7 ProcessPoolExecutor | 2.00\u00d7 | yes |" in table
