"""The procrastinate application, imported by the benchmark and by each
``procrastinate --app=bench.procrastinate_app.app worker`` process.

``inc`` is the plain sync function (procrastinate runs sync tasks in a thread of the worker).
Procrastinate keeps no return values, so ``whoami`` reports its pid in a file named after
the job id in ``BENCH_PROCRASTINATE_PIDDIR``.
"""

from __future__ import annotations

import os
from typing import Any

import procrastinate

from bench import tasks

DSN = os.environ["BENCH_PROCRASTINATE_DSN"]
PIDDIR = os.environ["BENCH_PROCRASTINATE_PIDDIR"]

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=DSN))

inc = app.task(name="inc")(tasks.inc)


@app.task(name="whoami", pass_context=True)
def whoami(context: Any, delay: float = 0.0) -> None:
    pid = tasks.whoami(delay)
    with open(os.path.join(PIDDIR, str(context.job.id)), "w") as f:
        f.write(str(pid))
