"""The Celery application, imported by the benchmark and by ``celery worker``: broker and
result backend on the benchmark's own Redis db."""

from __future__ import annotations

from celery import Celery

from bench import tasks
from bench.common import REDIS_URL

app = Celery("nbqueue_bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)

inc = app.task(name="bench.inc")(tasks.inc)
whoami = app.task(name="bench.whoami")(tasks.whoami)
