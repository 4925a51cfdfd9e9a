"""Ray core, a local head node, kept on loopback: ``ray.init(num_cpus=2,
_node_ip_address="127.0.0.1")`` (GCS, raylet and, with ray[default], the dashboard), tasks
``ray.remote(inc)`` needing one CPU each, so two run at once in Ray's worker processes.

W1: ``inc.remote(i)`` per task, then one ``ray.get(refs)``; W2: ``ray.get(inc.remote(i))``;
wbig: ``ref = ray.put(frame)``, then ``ray.get([rows.remote(ref) for ...])``.

``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` plus ``_node_ip_address`` keep Ray's processes
talking over 127.0.0.1 (else they use the machine's own address); usage stats are off. The
script checks that every socket Ray's processes listen on is a loopback one, and after
``ray.shutdown()`` waits for every process Ray started (the dashboard's helpers outlive it
by a few seconds) and kills, by pid, any still there after 15 s.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import time
from typing import Any

import psutil

from bench import shared_input
from bench.common import (
    N_W1,
    N_W2,
    WARMUP,
    WORKERS,
    System,
    latency,
    throughput,
    wait_for_pids,
)
from bench.tasks import frame_rows, inc, whoami

#: ray.init() gives up when its raylet has not registered within a fixed 30 s; on a busy
#: machine it may simply be slow, so the start is tried again (noted in the result).
STARTUP_TIMEOUT = "timed out during startup"
INIT_ATTEMPTS = 3


def _listening(procs: list[psutil.Process]) -> list[str]:
    """The addresses Ray's processes listen on."""
    found = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    found.append(str(c.laddr.ip))
    return found


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def main() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # 127.0.0.1 as node address
    with System("ray", "Ray, ray.init(num_cpus=2), loopback only") as s:
        import ray

        s.version(ray=ray.__version__)
        kw: dict[str, Any] = {"num_cpus": WORKERS, "_node_ip_address": "127.0.0.1"}
        ray_procs: list[psutil.Process] = []

        def shutdown() -> None:
            ray_procs.extend(p for p in psutil.Process().children(recursive=True)
                             if p not in ray_procs)  # fmt: skip
            ray.shutdown()
            _, alive = psutil.wait_procs(ray_procs, timeout=15)
            for p in alive:
                with contextlib.suppress(psutil.Error):  # refused if the pid was reused
                    p.kill()
            if alive:
                s.note(f"killed {len(alive)} Ray process(es) still alive 15 s after shutdown")
            ray_procs.clear()

        s.on_cleanup(shutdown)
        t0 = time.perf_counter()
        for attempt in range(1, INIT_ATTEMPTS + 1):
            try:
                ray.init(**kw)
                break
            except Exception as exc:  # Ray raises a bare Exception for this
                if STARTUP_TIMEOUT not in str(exc) or attempt == INIT_ATTEMPTS:
                    raise
                s.note(f"ray.init attempt {attempt} failed ({STARTUP_TIMEOUT}: Ray waits a "
                       "fixed 30 s for its raylet); started again")  # fmt: skip
                shutdown()
        t_init = time.perf_counter() - t0
        r_inc, r_whoami = ray.remote(inc), ray.remote(whoami)
        wait_for_pids(lambda: ray.get([r_whoami.remote(0.02) for _ in range(2)]))
        s.setting(startup_s=time.perf_counter() - t0)
        ray_procs.extend(psutil.Process().children(recursive=True))
        s.track()
        listening = _listening(ray_procs)
        outside = sorted({ip for ip in listening if not _loopback(ip)})
        if outside:
            raise RuntimeError(f"Ray listens beyond loopback: {outside}")
        ray.get([r_inc.remote(i) for i in range(WARMUP)])

        if s.wants("w1"):
            s.record("w1", throughput(N_W1, lambda i: r_inc.remote(i), ray.get, label="w1"))
        if s.wants("w2"):
            s.record("w2", latency(N_W2, lambda i: ray.get(r_inc.remote(i)), label="w2"))
        if s.wants("wbig"):
            r_rows = ray.remote(frame_rows)
            s.record("wbig", shared_input.measure(
                shared_input.make_frame(), ray.put,
                lambda ref, n: ray.get([r_rows.remote(ref) for _ in range(n)]),
            ) | {"how": "ref = ray.put(frame); rows.remote(ref) per task"})  # fmt: skip
        s.track()
        kids = len(psutil.Process().children(recursive=True))
        s.note(f"ray.init({', '.join(f'{k}={v!r}' for k, v in kw.items())}) took "
               f"{t_init:.1f} s; {kids} processes under the driver, all {len(listening)} "
               "listening sockets on loopback")  # fmt: skip
        s.note("tasks ray.remote(fn) with the default num_cpus=1; W1 joins with one "
               "ray.get(refs)")  # fmt: skip


if __name__ == "__main__":
    main()
