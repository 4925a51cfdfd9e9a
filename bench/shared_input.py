"""The big shared input (workload ``wbig``): the same DataFrame, ``BENCH_BIG_MB`` (64) MB,
passed to ``BENCH_BIG_TASKS`` (8) tasks that each read it.

Measured in the process that holds the object (a notebook kernel's place): how much its
resident memory grows while the object is shared and the tasks run, as a multiple of the
object's size (the peak: ``VmHWM`` after ``/proc/self/clear_refs`` reset it to the current
RSS, so a transient copy counts too), and tasks per second from sharing the object to the
last result. Each system warms its workers up before, so their start is not measured.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.common import BIG_MB, BIG_TASKS, rss_mb


def make_frame(mb: int = BIG_MB) -> Any:
    """A DataFrame of ``mb`` MiB: two float64 columns."""
    import numpy as np
    import pandas as pd

    rows = mb * 2**20 // 16
    return pd.DataFrame({"a": np.arange(rows, dtype="float64"), "b": np.ones(rows)})


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux 4.0+)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure(
    frame: Any,
    share: Callable[[Any], Any],
    run: Callable[[Any, int], Sequence[int]],
    n: int = BIG_TASKS,
) -> dict[str, Any]:
    """``share(frame)`` returns what the tasks get (a handle, a future, the frame itself);
    ``run(handle, n)`` runs ``n`` tasks on it and returns what each task returned (the
    frame's length)."""
    size_mb = frame.memory_usage(deep=True).sum() / 2**20
    gc.collect()
    base = rss_mb()
    _reset_peak()
    t0 = time.perf_counter()
    handle = share(frame)
    values = list(run(handle, n))
    seconds = time.perf_counter() - t0
    peak = _status_kb("VmHWM") / 1024
    if values != [len(frame)] * n:
        raise RuntimeError(f"wrong results: {values[:3]}... (expected {len(frame)} each)")
    out = {
        "n": n,
        "object_mb": size_mb,
        "rss_base_mb": base,
        "rss_growth_mb": peak - base,
        "rss_growth_x": (peak - base) / size_mb,
        "rss_shmem_mb": _status_kb("RssShmem") / 1024,
        "seconds": seconds,
        "tasks_per_s": n / seconds,
    }
    print(
        f"  wbig: {n} tasks on a {size_mb:.0f} MB DataFrame: RSS +{peak - base:.0f} MB at the "
        f"peak ({out['rss_growth_x']:.2f}x the object), {seconds:.2f} s",
        flush=True,
    )
    return out
