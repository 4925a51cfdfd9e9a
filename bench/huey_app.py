"""The Huey application, imported by the benchmark and by ``huey_consumer``."""

from __future__ import annotations

import os

from huey import SqliteHuey

from bench import tasks

huey = SqliteHuey("nbqueue-bench", filename=os.environ["BENCH_HUEY_DB"])

inc = huey.task(name="inc")(tasks.inc)
whoami = huey.task(name="whoami")(tasks.whoami)
