"""The Dask cluster the Dask rows run on (plain Dask, and nbqueue's Dask backend)."""

from __future__ import annotations

import logging
from typing import Any

from bench.common import WORKERS, System, wait_for_pids
from bench.tasks import whoami


def start_cluster(s: System) -> Any:
    """A LocalCluster of 2 processes x 1 thread on loopback and its client, both closed at
    exit; returns the client once both workers have run a task."""
    import distributed

    cluster = distributed.LocalCluster(
        n_workers=WORKERS,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        # a free loopback port for the scheduler's HTTP routes (None still takes 8787,
        # which another cluster on the machine may hold)
        dashboard_address="127.0.0.1:0",
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
    return client
