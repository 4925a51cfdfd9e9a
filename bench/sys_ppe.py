"""concurrent.futures.ProcessPoolExecutor(max_workers=2), ``spawn`` start method: the
reference every ratio is taken against."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from bench.common import N_W1, N_W2, WARMUP, WORKERS, System, latency, throughput, wait_for_pids
from bench.tasks import inc, whoami


def main() -> None:
    with System("ppe", "ProcessPoolExecutor (spawn)") as s:
        ex = ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn"))
        s.on_cleanup(lambda: ex.shutdown(wait=True, cancel_futures=True))
        wait_for_pids(lambda: [f.result() for f in [ex.submit(whoami, 0.02) for _ in range(2)]])
        s.track()
        [f.result() for f in [ex.submit(inc, i) for i in range(WARMUP)]]
        if s.wants("w1"):
            s.record(
                "w1",
                throughput(
                    N_W1, lambda i: ex.submit(inc, i), lambda fs: [f.result() for f in fs],
                    label="w1",
                ),
            )  # fmt: skip
        if s.wants("w2"):
            s.record("w2", latency(N_W2, lambda i: ex.submit(inc, i).result(), label="w2"))
        s.note("ex.submit(inc, i) per task, f.result() for each")


if __name__ == "__main__":
    main()
