"""What every system script shares: the sizes, the timing method, the result file, and
cleanup of every process a script starts.

Each ``sys_*.py`` script does::

    with System("name", "label") as s:       # parses --out/--workloads; cleans up on exit
        ...start the system; s.on_cleanup(stop)...
        if s.wants("w1"):
            s.record("w1", throughput(N_W1, submit, collect))
        if s.wants("w2"):
            s.record("w2", latency(N_W2, round_trip))

and the runner (``run.py``) reads the JSON file it leaves behind.

Sizes come from environment variables, so the runner (and the smoke test) can shrink them:
``BENCH_W1_N`` (5,000), ``BENCH_W2_N`` (300), ``BENCH_W3_N`` (2,000), ``BENCH_W4_N``
(100,000), ``BENCH_W5_N`` (1,000), ``BENCH_W5_STEPS`` (100 progress reports a task),
``BENCH_W5_PAUSE`` (seconds before each report, 0.001), ``BENCH_WD_N`` (500 tasks on Dask,
workload ``wdask``), ``BENCH_BIG_MB`` / ``BENCH_BIG_TASKS`` (the shared DataFrame of workload
``wbig``: 64 MB, 8 tasks; see ``shared_input.py``), ``BENCH_REPEATS`` (3 runs of W1/W3/wdask,
median), ``BENCH_WARMUP`` (200 tasks before W1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    return float(raw) if raw.strip() else default


WORKERS = 2
N_W1 = _env_int("BENCH_W1_N", 5000)
N_W2 = _env_int("BENCH_W2_N", 300)
N_W3 = _env_int("BENCH_W3_N", 2000)
N_W4 = _env_int("BENCH_W4_N", 100_000)
N_W5 = _env_int("BENCH_W5_N", 1000)
N_WD = _env_int("BENCH_WD_N", 500)
BIG_MB = _env_int("BENCH_BIG_MB", 64)
BIG_TASKS = _env_int("BENCH_BIG_TASKS", 8)
W5_STEPS = _env_int("BENCH_W5_STEPS", 100)
W5_PAUSE = _env_float("BENCH_W5_PAUSE", 0.001)
REPEATS = _env_int("BENCH_REPEATS", 3)
WARMUP = _env_int("BENCH_WARMUP", 200)
W2_WARMUP = 10

#: The local Redis the Redis-based peers use: a db number of its own, flushed (that db
#: only) before and after each system.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
#: The PostgreSQL database nbqueue's PostgreSQL rows use; dropped and re-created per run.
PG_URL = os.environ.get(
    "BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/nbqueue_bench"
)

ALL_WORKLOADS = ("w1", "w2", "w3", "w4", "w5", "wdask", "wbig")


def child_env() -> dict[str, str]:
    """The environment for processes a script starts: ``bench`` importable from anywhere."""
    env = os.environ.copy()
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if ROOT not in parts:
        env["PYTHONPATH"] = os.pathsep.join([ROOT, *parts])
    return env


def venv_script(name: str) -> str:
    """A console script installed next to this interpreter (``rq``, ``celery``...)."""
    return os.path.join(os.path.dirname(sys.executable), name)


# -- statistics ---------------------------------------------------------------------------
def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile, ``p`` in 0..100."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def rss_mb(pid: int | None = None) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def cpu_seconds(proc: psutil.Process | None = None) -> float:
    """User + system CPU time of one process (every thread), without its children."""
    times = (proc or psutil.Process()).cpu_times()
    return float(times.user + times.system)


# -- workloads ----------------------------------------------------------------------------
def _check(values: Sequence[Any], n: int) -> None:
    wrong = sum(1 for i, v in enumerate(values) if v != i + 1)
    if len(values) != n or wrong:
        raise RuntimeError(f"wrong results: {len(values)} of {n} returned, {wrong} wrong")


def throughput(
    n: int,
    submit: Callable[[int], Any],
    collect: Callable[[list[Any]], Sequence[Any]],
    *,
    repeats: int = REPEATS,
    between: Callable[[], None] | None = None,
    label: str = "",
) -> dict[str, Any]:
    """Submit ``n`` tasks ``inc(i)`` one by one, then collect every result; the time runs
    from the first submit to the last result. ``repeats`` runs, the median is reported;
    ``between()`` runs after each one, outside the clock."""
    runs = []
    for r in range(repeats):
        t0 = time.perf_counter()
        handles = [submit(i) for i in range(n)]
        t_submitted = time.perf_counter()
        values = collect(handles)
        t1 = time.perf_counter()
        _check(values, n)
        seconds = t1 - t0
        runs.append({"seconds": seconds, "submit_s": t_submitted - t0, "tasks_per_s": n / seconds})
        print(
            f"  {label} run {r + 1}/{repeats}: {n / seconds:,.0f} tasks/s "
            f"({seconds:.2f} s, submitting {t_submitted - t0:.2f} s)",
            flush=True,
        )
        if between is not None:
            between()
    rates = [x["tasks_per_s"] for x in runs]
    return {
        "n": n,
        "tasks_per_s": statistics.median(rates),
        "min_tasks_per_s": min(rates),
        "max_tasks_per_s": max(rates),
        "runs": runs,
    }


def latency(
    n: int, round_trip: Callable[[int], Any], *, warmup: int = W2_WARMUP, label: str = ""
) -> dict[str, Any]:
    """``n`` sequential submit-and-wait round trips of ``inc(i)`` after ``warmup`` ones;
    latencies in milliseconds."""
    for i in range(warmup):
        if round_trip(i) != i + 1:
            raise RuntimeError("wrong result in the warm-up")
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        value = round_trip(i)
        lat.append((time.perf_counter() - t0) * 1000.0)
        if value != i + 1:
            raise RuntimeError(f"round trip {i}: wrong result {value!r}")
    out = {
        "n": n,
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "mean_ms": statistics.fmean(lat),
        "min_ms": min(lat),
        "max_ms": max(lat),
    }
    print(f"  {label} p50 {out['p50_ms']:.3f} ms, p99 {out['p99_ms']:.3f} ms", flush=True)
    return out


# -- the result file and cleanup ----------------------------------------------------------
class System:
    """One system's run: its arguments, its JSON result file, and cleanup of everything it
    started (registered cleanups first, then any descendant process still alive).

    The pids of descendants are also appended to ``<out>.pids`` (pid, start time), so the
    runner can kill leftovers even if this script itself is killed."""

    def __init__(
        self,
        system: str,
        label: str,
        *,
        argv: Sequence[str] | None = None,
        extra_args: Callable[[argparse.ArgumentParser], None] | None = None,
    ) -> None:
        parser = argparse.ArgumentParser(description=f"benchmark: {label}")
        parser.add_argument("--out", required=True, help="JSON result file")
        parser.add_argument(
            "--workloads", default=",".join(ALL_WORKLOADS), help="comma-separated, e.g. w1,w2"
        )
        if extra_args is not None:
            extra_args(parser)
        self.args = parser.parse_args(argv)
        self.workloads = {w.strip() for w in self.args.workloads.split(",") if w.strip()}
        self.out: str = self.args.out
        self.pidfile = self.out + ".pids"
        self._cleanups: list[Callable[[], Any]] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._t0 = time.monotonic()
        self.data: dict[str, Any] = {
            "system": system,
            "label": label,
            "results": {},
            "skipped": {},
            "notes": [],
            "errors": [],
            "versions": {},
            "settings": {},
        }

    # -- bookkeeping ----------------------------------------------------------------------
    def wants(self, workload: str) -> bool:
        return workload in self.workloads

    def record(self, workload: str, result: dict[str, Any]) -> None:
        self.data["results"][workload] = result
        self.save()

    def skip(self, workload: str, reason: str) -> None:
        if self.wants(workload):
            self.data["skipped"][workload] = reason
            print(f"  {workload} skipped: {reason}", flush=True)
            self.save()

    def note(self, text: str) -> None:
        if text not in self.data["notes"]:
            self.data["notes"].append(text)
            self.save()

    def version(self, **versions: str) -> None:
        self.data["versions"].update(versions)
        self.save()

    def setting(self, **settings: Any) -> None:
        self.data["settings"].update(settings)
        self.save()

    def save(self) -> None:
        self.data["elapsed_s"] = round(time.monotonic() - self._t0, 2)
        tmp = self.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1, default=str)
        os.replace(tmp, self.out)

    # -- processes ------------------------------------------------------------------------
    def on_cleanup(self, fn: Callable[[], Any]) -> None:
        self._cleanups.append(fn)

    def track(self) -> None:
        """Record every live descendant (pid and start time) in the pid file."""
        lines = []
        for p in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                lines.append(f"{p.pid} {p.create_time()!r} {' '.join(p.cmdline())[:200]}\n")
        with open(self.pidfile, "a") as f:
            f.writelines(lines)

    def spawn(
        self, cmd: list[str], log_name: str, cwd: str | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a worker command in a session of its own (so its pool children go with
        it), output to a log file next to the result file."""
        log = open(f"{os.path.splitext(self.out)[0]}-{log_name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=cwd or ROOT,
            env=child_env(),
        )
        log.close()
        self._procs.append(proc)
        self.track()
        return proc

    def check_spawned(self) -> None:
        """Raise if a process started with :meth:`spawn` has exited (its log says why)."""
        dead = [" ".join(map(str, p.args)) for p in self._procs if p.poll() is not None]
        if dead:
            log = os.path.splitext(self.out)[0] + "-*.log"
            raise RuntimeError(f"worker exited: {'; '.join(dead)} (see {log})")

    def _stop_spawned(self, grace: float = 10.0) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers of its group
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        self._procs.clear()

    def _kill_descendants(self) -> None:
        def is_tracker(p: psutil.Process) -> bool:
            try:
                return "resource_tracker" in " ".join(p.cmdline())
            except psutil.Error:
                return True

        # multiprocessing's resource tracker exits when this process does.
        kids = [k for k in psutil.Process().children(recursive=True) if not is_tracker(k)]
        for k in kids:
            with contextlib.suppress(psutil.Error):
                k.terminate()
        _, alive = psutil.wait_procs(kids, timeout=5)
        for k in alive:
            with contextlib.suppress(psutil.Error):
                k.kill()
        if alive:
            self.note(f"{len(alive)} child process(es) had to be killed at exit")

    # -- context --------------------------------------------------------------------------
    def __enter__(self) -> System:
        def on_signal(signum: int, frame: Any) -> None:
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, on_signal)
        open(self.pidfile, "w").close()
        self.data["versions"]["python"] = platform.python_version()
        self.data["loadavg_start"] = round(os.getloadavg()[0], 2)
        self.save()
        print(f"[{self.data['label']}]", flush=True)
        return self

    def __exit__(self, et: Any, ev: BaseException | None, tb: Any) -> bool:
        if isinstance(ev, SystemExit):
            if ev.code not in (0, None):
                self.data["errors"].append(f"stopped (exit {ev.code}: a time-out?)")
        elif ev is not None:
            import traceback

            text = "".join(traceback.format_exception(et, ev, tb))
            self.data["errors"].append(text[-2000:])
            print(text, file=sys.stderr, flush=True)
        self.save()
        for fn in reversed(self._cleanups):
            try:
                fn()
            except BaseException as exc:  # cleanup goes on whatever happens
                self.data["errors"].append(f"cleanup {getattr(fn, '__name__', fn)}: {exc!r}")
        self._stop_spawned()
        self._kill_descendants()
        self.data["loadavg_end"] = round(os.getloadavg()[0], 2)
        self.save()
        return ev is not None and not isinstance(ev, (SystemExit, KeyboardInterrupt))


def wait_for_pids(
    call: Callable[[], Sequence[int]], want: int = WORKERS, timeout: float = 120.0
) -> set[int]:
    """Call ``call()`` (which runs a few :func:`bench.tasks.whoami` tasks at once and returns
    their pids) until ``want`` distinct workers have answered: the workers are up."""
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(pids) < want:
        pids.update(call())
        if time.monotonic() > deadline:
            raise RuntimeError(f"only workers {sorted(pids)} answered within {timeout:.0f} s")
    return pids


def drive_futures_executor(s: System, ex: Any, inc: Callable[[int], int], whoami: Any) -> None:
    """W1 and W2 for an executor with ``submit()`` returning futures (ProcessPoolExecutor,
    loky): start-up until both workers answered, a warm-up, then the workloads."""
    wait_for_pids(lambda: [f.result() for f in [ex.submit(whoami, 0.02) for _ in range(2)]])
    s.track()
    [f.result() for f in [ex.submit(inc, i) for i in range(WARMUP)]]
    if s.wants("w1"):
        s.record(
            "w1",
            throughput(
                N_W1, lambda i: ex.submit(inc, i), lambda fs: [f.result() for f in fs], label="w1"
            ),
        )
    if s.wants("w2"):
        s.record("w2", latency(N_W2, lambda i: ex.submit(inc, i).result(), label="w2"))
    s.note("ex.submit(inc, i) per task, f.result() for each")
