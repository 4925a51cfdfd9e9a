"""loky's reusable executor, 2 workers."""

from __future__ import annotations

from bench.common import N_W1, N_W2, WARMUP, WORKERS, System, latency, throughput, wait_for_pids
from bench.tasks import inc, whoami


def main() -> None:
    with System("loky", "loky reusable executor") as s:
        import loky

        s.version(loky=loky.__version__)
        ex = loky.get_reusable_executor(max_workers=WORKERS, timeout=600)
        s.on_cleanup(lambda: ex.shutdown(wait=True, kill_workers=True))
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


if __name__ == "__main__":
    main()
