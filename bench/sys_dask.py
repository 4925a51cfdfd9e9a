"""dask.distributed LocalCluster: 2 worker processes with 1 thread each."""

from __future__ import annotations

import logging

from bench.common import N_W1, N_W2, WARMUP, WORKERS, System, latency, throughput, wait_for_pids
from bench.tasks import inc, whoami


def main() -> None:
    with System("dask", "Dask LocalCluster (2 processes x 1 thread)") as s:
        import dask
        import distributed

        s.version(dask=dask.__version__, distributed=distributed.__version__)
        cluster = distributed.LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        s.on_cleanup(cluster.close)
        client = distributed.Client(cluster)
        s.on_cleanup(client.close)
        client.wait_for_workers(WORKERS)
        wait_for_pids(
            lambda: client.gather([client.submit(whoami, 0.02, pure=False) for _ in range(2)])
        )
        s.track()
        client.gather([client.submit(inc, i, pure=False) for i in range(WARMUP)])
        if s.wants("w1"):
            s.record(
                "w1",
                throughput(
                    N_W1, lambda i: client.submit(inc, i, pure=False), client.gather, label="w1"
                ),
            )
        if s.wants("w2"):
            s.record(
                "w2",
                latency(N_W2, lambda i: client.submit(inc, i, pure=False).result(), label="w2"),
            )
        s.note("client.submit(inc, i, pure=False); the scheduler runs in the client process")


if __name__ == "__main__":
    main()
