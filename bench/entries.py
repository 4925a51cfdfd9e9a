"""The systems ``python -m bench`` knows: one :class:`Entry` per row of the tables.

Entries of one *group* run in interleaved rounds (every member once per round, the next
round after the last member), and their figures are the medians of the rounds: the
ratios the targets compare then come from the same minutes of a noisy machine.
"""

from __future__ import annotations

import dataclasses

#: The sub-millisecond W1/W2 figures (rounds: ``--rounds``, default 5).
MEMORY = "memory"
#: The durable path: W1/W3 on databases (rounds: ``--slow-rounds``, default 3).
DURABLE = "durable"
#: Clusters and big inputs: the Dask backend, shared objects (``--slow-rounds``).
CLUSTER = "cluster"
GROUPS = (MEMORY, DURABLE, CLUSTER)


@dataclasses.dataclass(frozen=True)
class Entry:
    key: str
    module: str
    #: Every workload of the system (comma-separated).
    workloads: str
    args: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()  # importable modules
    redis: bool = False  # needs the local Redis
    postgres: bool = False  # needs the local PostgreSQL
    timeout: float = 300.0
    what: str = ""
    #: The interleaved group this entry belongs to ("" runs it once).
    group: str = ""
    #: Of ``workloads``, those run in every round of the group ("" means all of them); the
    #: others run once, in a process of their own, after the rounds.
    round_workloads: str = ""

    def in_rounds(self) -> str:
        """The workloads run in each round ("" when the entry is in no group)."""
        if not self.group:
            return ""
        return self.round_workloads or self.workloads

    def once(self) -> str:
        """The workloads run once, outside the rounds."""
        rounds = set(self.in_rounds().split(","))
        return ",".join(w for w in self.workloads.split(",") if w not in rounds)


NBQ = "bench.sys_nbqueue"
MEM = ("--store", "memory")
#: The durable-path peers: W1 and W3 in every round, W2 (sequential round trips) once.
DURABLE_ROUNDS = "w1,w3"
PGQ = ("pgqueuer", "asyncpg", "psycopg")
ENTRIES = [
    # -- in memory: W1/W2 against ProcessPoolExecutor, interleaved
    Entry("ppe", "bench.sys_ppe", "w1,w2", what="the reference", group=MEMORY),
    Entry("nbqueue", NBQ, "w1,w2", MEM, what="headline: Queue(max_workers=2), default options",
          group=MEMORY),
    Entry("nbqueue-tpw16", NBQ, "w1,w2", (*MEM, "--tasks-per-worker", "16"),
          what="tasks_per_worker=16", group=MEMORY),
    Entry("nbqueue-notebook", NBQ, "w1,w2", (*MEM, "--mode", "notebook"),
          what="the caller inside a running asyncio loop, as a Jupyter cell", group=MEMORY),
    Entry("ray", "bench.sys_ray", "w1,w2", requires=("ray",), what="loopback only",
          group=MEMORY),
    # -- the durable path, interleaved
    Entry("nbqueue-sqlite", NBQ, "w1,w3", ("--store", "sqlite"), what="default options",
          group=DURABLE),
    Entry("nbqueue-postgresql", NBQ, "w1,w3", ("--store", "postgresql"), requires=("psycopg",),
          postgres=True, what="default options", group=DURABLE),
    Entry("nbqueue-postgresql-flush", NBQ, "w3", ("--store", "postgresql", "--flush"),
          requires=("psycopg",), postgres=True,
          what="default options; queue.flush() after the last add(), inside the clock",
          group=DURABLE),
    Entry("pgqueuer", "bench.sys_pgqueuer", "w1,w2,w3", requires=PGQ, postgres=True,
          what="one commit per enqueue", group=DURABLE, round_workloads=DURABLE_ROUNDS),
    Entry("pgqueuer-batch", "bench.sys_pgqueuer", "w3", ("--batch-submit",), requires=PGQ,
          postgres=True, what="its batch drain: all tasks in one INSERT, inside the clock",
          group=DURABLE),
    Entry("procrastinate", "bench.sys_procrastinate", "w1,w2,w3",
          requires=("procrastinate", "psycopg", "psycopg_pool"), postgres=True,
          what="one commit per defer", group=DURABLE, round_workloads=DURABLE_ROUNDS),
    Entry("huey", "bench.sys_huey", "w1,w2,w3", requires=("huey",), group=DURABLE,
          round_workloads=DURABLE_ROUNDS),
    Entry("huey-tuned", "bench.sys_huey", "w1,w2,w3", ("--tuned",), requires=("huey",),
          group=DURABLE, round_workloads=DURABLE_ROUNDS),
    Entry("celery", "bench.sys_celery", "w1,w2,w3", requires=("celery", "redis"), redis=True,
          group=DURABLE, round_workloads=DURABLE_ROUNDS),
    # -- clusters and big inputs, interleaved
    Entry("dask-capped", "bench.sys_dask", "wdask", requires=("distributed",),
          what="plain futures under the backend's cap", group=CLUSTER),
    Entry("nbqueue-dask", "bench.sys_nbqueue_dask", "wdask", requires=("distributed",),
          what="Queue(backend=DaskBackend(client))", group=CLUSTER),
    Entry("nbqueue-big", NBQ, "wbig", MEM, what="queue.put(frame)", group=CLUSTER),
    Entry("ray-big", "bench.sys_ray", "wbig", requires=("ray",), what="ray.put(frame)",
          group=CLUSTER),
    Entry("dask-big", "bench.sys_dask", "wbig", requires=("distributed",),
          what="client.scatter(frame)", group=CLUSTER),
    # -- once
    Entry("nbqueue-w4", NBQ, "w4", MEM, what="100,000 pending tasks, a fresh process"),
    Entry("nbqueue-w5", NBQ, "w5", MEM, what="progress with the dashboard attached"),
    Entry("loky", "bench.sys_loky", "w1,w2", requires=("loky",)),
    Entry("dask", "bench.sys_dask", "w1,w2", requires=("distributed",)),
    Entry("rq", "bench.sys_rq", "w1,w2,w3", requires=("rq", "redis"), redis=True),
]  # fmt: skip
