"""W2 round-trip latency and W1 throughput, nbqueue against ProcessPoolExecutor, in a few
interleaved rounds (a quick check of the worker's hot path; ``python -m bench`` is the full
benchmark).

    python -m bench.roundtrip                 # 5 rounds of W2 (300) and W1 (5,000)
    python -m bench.roundtrip --rounds 9 --w1 0

Both sides: 2 worker processes (``spawn``), ``inc`` from :mod:`bench.tasks`;
``Queue(max_workers=2)`` with its default ``tasks_per_worker``. Each round runs PPE then
nbqueue; the figures are the medians over the rounds.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from bench.tasks import inc

WARMUP = 200


def _w2(n: int, round_trip: Callable[[int], Any]) -> tuple[float, float]:
    """p50 and p99 of ``n`` sequential round trips, in milliseconds."""
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        if round_trip(i) != i + 1:
            raise RuntimeError(f"round trip {i}: wrong result")
        lat.append((time.perf_counter() - t0) * 1000.0)
    lat.sort()
    return lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]


def _w1(n: int, submit: Callable[[int], Any]) -> float:
    """Tasks per second: ``n`` submitted one by one, then every result."""
    t0 = time.perf_counter()
    futures = [submit(i) for i in range(n)]
    if [f.result() for f in futures] != [i + 1 for i in range(n)]:
        raise RuntimeError("wrong results")
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--w2", type=int, default=300)
    parser.add_argument("--w1", type=int, default=5000)
    parser.add_argument("--tasks-per-worker", type=int, default=None)
    args = parser.parse_args()

    from nbqueue import Queue

    ppe = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
    options = {} if args.tasks_per_worker is None else {"tasks_per_worker": args.tasks_per_worker}
    queue = Queue(max_workers=2, **options).init()
    sides: dict[str, Any] = {"ppe": ppe, "nbqueue": queue}
    results: dict[str, dict[str, list[float]]] = {
        name: {"p50": [], "p99": [], "w1": []} for name in sides
    }
    try:
        for ex in sides.values():
            [f.result() for f in [ex.submit(inc, i) for i in range(WARMUP)]]
        for r in range(args.rounds):
            for name, ex in sides.items():
                p50, p99 = _w2(args.w2, lambda i, ex=ex: ex.submit(inc, i).result())
                results[name]["p50"].append(p50)
                results[name]["p99"].append(p99)
                if args.w1:
                    results[name]["w1"].append(_w1(args.w1, lambda i, ex=ex: ex.submit(inc, i)))
                    if name == "nbqueue":
                        queue.clear()
            print(
                f"round {r + 1}: "
                + ", ".join(
                    f"{n} p50 {v['p50'][-1]:.3f} p99 {v['p99'][-1]:.3f}"
                    + (f" w1 {v['w1'][-1]:,.0f}/s" if v["w1"] else "")
                    for n, v in results.items()
                ),
                flush=True,
            )
    finally:
        queue.shutdown()
        ppe.shutdown()
    med = {
        n: {k: statistics.median(v) if v else 0.0 for k, v in d.items()} for n, d in results.items()
    }
    for name, m in med.items():
        print(f"{name:8s} W2 p50 {m['p50']:.3f} ms  p99 {m['p99']:.3f} ms  W1 {m['w1']:,.0f}/s")
    print(
        f"ratio nbqueue/ppe: W2 p50 {med['nbqueue']['p50'] / med['ppe']['p50']:.2f}x, "
        f"p99 {med['nbqueue']['p99'] / med['ppe']['p99']:.2f}x"
        + (f", W1 {med['nbqueue']['w1'] / med['ppe']['w1']:.2f}x" if args.w1 else "")
    )


if __name__ == "__main__":
    main()
