"""concurrent.futures.ProcessPoolExecutor(max_workers=2), ``spawn`` start method: the
reference every ratio is taken against."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from bench.common import WORKERS, System, drive_futures_executor
from bench.tasks import inc, whoami


def main() -> None:
    with System("ppe", "ProcessPoolExecutor (spawn)") as s:
        ex = ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn"))
        s.on_cleanup(lambda: ex.shutdown(wait=True, cancel_futures=True))
        drive_futures_executor(s, ex, inc, whoami)


if __name__ == "__main__":
    main()
