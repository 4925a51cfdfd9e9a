"""Every bad input gets a clear NbqueueError at the call that received it, and nothing already
queued is touched. One table, the same one the README's "Reliability" section lists: wrong
types, NaN, infinities and huge numbers, NUL characters and lone surrogates, over-long
strings, unpicklable objects, garbage returned by hooks, bad command-line options."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nbqueue import (
    ConfigurationError,
    NbqueueError,
    Queue,
    QueueShutDownError,
    SerializationError,
    Status,
    Task,
    TaskExecutor,
    TaskFailedError,
    TaskNotProcessedError,
    UnknownTaskTypeError,
    cli,
)
from nbqueue.backends import InProcessBackend

UTC = dt.timezone.utc
NAN, INF = float("nan"), float("inf")


def task(**options: Any) -> Task[Any]:
    return Task(**{"name": "n", "type": "t", **options})


# (what, call, error, words the message must contain)
TASK_OPTIONS: list[tuple[str, Callable[[], object], type[BaseException], str]] = [
    ("empty name", lambda: task(name=""), ConfigurationError, "name"),
    ("name not a string", lambda: task(name=3), ConfigurationError, "name"),
    ("NUL in the name", lambda: task(name="a\x00b"), ConfigurationError, "NUL"),
    ("lone surrogate in the name", lambda: task(name="bad\ud800"), ConfigurationError, "surrogate"),
    ("empty type", lambda: task(type=""), ConfigurationError, "type"),
    ("type None", lambda: task(type=None), ConfigurationError, "type"),
    ("type of 256 characters", lambda: task(type="t" * 256), ConfigurationError, "255"),
    ("NUL in the type", lambda: task(type="a\x00"), ConfigurationError, "NUL"),
    ("description not a string", lambda: task(description=5), ConfigurationError, "description"),
    ("NUL in the description", lambda: task(description="\x00"), ConfigurationError, "NUL"),
    ("priority a string", lambda: task(priority="high"), ConfigurationError, "priority"),
    ("priority a float", lambda: task(priority=1.5), ConfigurationError, "priority"),
    ("priority a bool", lambda: task(priority=True), ConfigurationError, "priority"),
    ("priority 2**70", lambda: task(priority=2**70), ConfigurationError, "64 bits"),
    ("priority -2**70", lambda: task(priority=-(2**70)), ConfigurationError, "64 bits"),
    ("max_retries -1", lambda: task(max_retries=-1), ConfigurationError, "max_retries"),
    ("max_retries a bool", lambda: task(max_retries=True), ConfigurationError, "max_retries"),
    ("max_retries a float", lambda: task(max_retries=1.0), ConfigurationError, "max_retries"),
    ("max_retries 2**70", lambda: task(max_retries=2**70), ConfigurationError, "max_retries"),
    ("delay -1", lambda: task(delay=-1), ConfigurationError, "delay"),
    ("delay a string", lambda: task(delay="soon"), ConfigurationError, "delay"),
    ("delay NaN", lambda: task(delay=NAN), ConfigurationError, "delay"),
    ("delay inf", lambda: task(delay=INF), ConfigurationError, "delay"),
    ("delay 1e12 s", lambda: task(delay=1e12), ConfigurationError, "at most"),
    ("delay a negative timedelta", lambda: task(delay=dt.timedelta(days=-1)),
     ConfigurationError, "delay"),
    ("timeout 0", lambda: task(timeout=0), ConfigurationError, "timeout"),
    ("timeout -5", lambda: task(timeout=-5), ConfigurationError, "timeout"),
    ("timeout NaN", lambda: task(timeout=NAN), ConfigurationError, "timeout"),
    ("timeout inf", lambda: task(timeout=INF), ConfigurationError, "timeout"),
    ("timeout a string", lambda: task(timeout="30"), ConfigurationError, "timeout"),
    ("timeout a zero timedelta", lambda: task(timeout=dt.timedelta(0)), ConfigurationError,
     "timeout"),
    ("run_at a string", lambda: task(run_at="tomorrow"), ConfigurationError, "run_at"),
    ("run_at in the year 1", lambda: task(run_at=dt.datetime(1, 1, 1)), ConfigurationError,
     "run_at"),
    ("run_at in the year 9999", lambda: task(run_at=dt.datetime(9999, 12, 31, tzinfo=UTC)),
     ConfigurationError, "run_at"),
    ("run_at a date", lambda: task(run_at=dt.date(2030, 1, 1)), ConfigurationError, "run_at"),
    ("metadata a list", lambda: task(metadata=[1, 2]), ConfigurationError, "metadata"),
    ("metadata a string", lambda: task(metadata="x"), ConfigurationError, "metadata"),
    ("empty uid", lambda: task(uid=""), ConfigurationError, "uid"),
    ("uid of 65 characters", lambda: task(uid="u" * 65), ConfigurationError, "64"),
    ("NUL in the uid", lambda: task(uid="a\x00"), ConfigurationError, "NUL"),
    ("empty key", lambda: task(key=""), ConfigurationError, "key"),
    ("key not a string", lambda: task(key=5), ConfigurationError, "key"),
    ("key of 1,001 characters", lambda: task(key="k" * 1001), ConfigurationError, "1000"),
    ("lone surrogate in the key", lambda: task(key="\ud800"), ConfigurationError, "surrogate"),
]  # fmt: skip

QUEUE_OPTIONS: list[tuple[str, Callable[[], object], type[BaseException], str]] = [
    ("task_directory a number", lambda: Queue(123), ConfigurationError, "task_directory"),
    ("task_directory missing", lambda: Queue("/no/such/dir"), ConfigurationError,
     "not a directory"),
    ("max_workers -1", lambda: Queue(max_workers=-1), ConfigurationError, "max_workers"),
    ("max_workers a string", lambda: Queue(max_workers="2"), ConfigurationError, "max_workers"),
    ("max_workers a bool", lambda: Queue(max_workers=True), ConfigurationError, "max_workers"),
    ("max_workers 0 without a database", lambda: Queue(max_workers=0), ConfigurationError,
     "db="),
    ("tasks_per_worker 0", lambda: Queue(tasks_per_worker=0), ConfigurationError,
     "tasks_per_worker"),
    ("worker_prefix a number", lambda: Queue(worker_prefix=5), ConfigurationError,
     "worker_prefix"),
    ("worker_prefix of 300 characters", lambda: Queue(worker_prefix="w" * 300),
     ConfigurationError, "worker_prefix"),
    ("lease_seconds 0", lambda: Queue(lease_seconds=0), ConfigurationError, "lease_seconds"),
    ("lease_seconds inf", lambda: Queue(lease_seconds=INF), ConfigurationError, "lease_seconds"),
    ("lease_seconds NaN", lambda: Queue(lease_seconds=NAN), ConfigurationError, "lease_seconds"),
    ("lease_seconds a string", lambda: Queue(lease_seconds="30"), ConfigurationError,
     "lease_seconds"),
    ("empty name", lambda: Queue(name=""), ConfigurationError, "name"),
    ("name of 300 characters", lambda: Queue(name="n" * 300), ConfigurationError, "name"),
    ("name a number", lambda: Queue(name=5), ConfigurationError, "name"),
    ("backend a string", lambda: Queue(backend="dask"), ConfigurationError, "ExecutionBackend"),
    ("db a number", lambda: Queue(db=5), ConfigurationError, "db"),
    ("db a file name, not a URL", lambda: Queue(db="nbqueue.db"), ConfigurationError,
     "sqlite:///"),
    ("db another kind of database", lambda: Queue(db="mysql://host/db"), ConfigurationError,
     "SQLite or PostgreSQL"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [pytest.param(c, e, w, id=what) for what, c, e, w in TASK_OPTIONS + QUEUE_OPTIONS],
)
def test_bad_options_are_refused_at_construction(
    call: Callable[[], object], error: type[BaseException], words: str
) -> None:
    with pytest.raises(error, match=words):
        call()


def work(task: Task[Any]) -> str:
    return "done"


class GarbageRetrySchema(TaskExecutor[Any, Any]):
    schema: Any = "timeout"

    def exec(self, task: Task[Any]) -> Any:
        raise OSError("flaky")

    def retry_schema(self) -> Any:
        return self.schema


class ListOfNumbers(GarbageRetrySchema):
    schema = [123]


class BadRegex(GarbageRetrySchema):
    schema = ["(unclosed"]


class NotCallableRules(TaskExecutor[Any, Any]):
    def validation_schema(self) -> Any:
        return ["not a rule"]

    def exec(self, task: Task[Any]) -> Any:
        return {"processed": True}


def returns(value: Any) -> Callable[[Task[Any]], Any]:
    class Returns(TaskExecutor[Any, Any]):
        def exec(self, task: Task[Any]) -> Any:
            return value

    return Returns


class UnpicklableResult(TaskExecutor[Any, Any]):
    def exec(self, task: Task[Any]) -> Any:
        return {"processed": True, "lock": threading.Lock()}


def raises(error: BaseException) -> Callable[[Task[Any]], Any]:
    def fn(task: Task[Any]) -> Any:
        raise error

    return fn


class Unpicklable(Exception):
    def __reduce__(self) -> Any:
        raise TypeError("no pickling")


class RaisesUnpicklable(TaskExecutor[Any, Any]):
    def exec(self, task: Task[Any]) -> Any:
        raise Unpicklable("odd")


@pytest.fixture
def q() -> Iterator[Queue]:
    queue = Queue(backend=InProcessBackend(slots=2)).init()
    queue.register(work)
    queue.add(Task("queued", "work"))  # already queued: must not be touched by what fails
    yield queue
    queue.close()


def _fn() -> None:
    """A function to submit."""


CALLS: list[tuple[str, Callable[[Queue], object], type[BaseException], str]] = [
    ("add() of a string", lambda q: q.add("task"), ConfigurationError, "Task"),
    ("add() of the same task twice", lambda q: q.add(q.tasks[0]), ConfigurationError,
     "already in a queue"),
    ("add() of an unknown type", lambda q: q.add(Task("x", "nope")), UnknownTaskTypeError,
     "known types"),
    ("add() of unpicklable data", lambda q: q.add(Task("x", "work", data=threading.Lock())),
     SerializationError, "pickled"),
    ("add() of an unpicklable user_id",
     lambda q: q.add(Task("x", "work", user_id=threading.Lock())), SerializationError, "pickled"),
    ("add() of unpicklable metadata",
     lambda q: q.add(Task("x", "work", metadata={"lock": threading.Lock()})),
     SerializationError, "pickled"),
    ("get_task() of a dict", lambda q: q.get_task({}), ConfigurationError, "uid"),
    ("get_task() of None", lambda q: q.get_task(None), ConfigurationError, "uid"),
    ("remove() of a number", lambda q: q.remove(5), ConfigurationError, "uid"),
    ("cancel() of a number", lambda q: q.cancel(5), ConfigurationError, "uid"),
    ("wait(timeout=-1)", lambda q: q.wait(timeout=-1), ConfigurationError, "timeout"),
    ("wait(timeout='1')", lambda q: q.wait(timeout="1"), ConfigurationError, "timeout"),
    ("wait(timeout=NaN)", lambda q: q.wait(timeout=NAN), ConfigurationError, "timeout"),
    ("run_automatically(0)", lambda q: q.run_automatically(0), ConfigurationError,
     "interval_seconds"),
    ("run_automatically(-1)", lambda q: q.run_automatically(-1), ConfigurationError,
     "interval_seconds"),
    ("run_automatically('1')", lambda q: q.run_automatically("1"), ConfigurationError,
     "interval_seconds"),
    ("register() with an empty type", lambda q: q.register(work, type=""), ConfigurationError,
     "type"),
    ("register() with a number as type", lambda q: q.register(work, type=5),
     ConfigurationError, "type"),
    ("register() of a lambda without a type", lambda q: q.register(lambda t: 0),
     ConfigurationError, "lambda"),
    ("register() of a number", lambda q: q.register(5, type="five"), ConfigurationError,
     "executor"),
    ("submit() of a number", lambda q: q.submit(5), ConfigurationError, "callable"),
    ("submit() with an unknown task option",
     lambda q: q.submit(_fn, task_options={"colour": 1}), ConfigurationError, "colour"),
    ("submit() with task_options not a mapping", lambda q: q.submit(_fn, task_options=5),
     ConfigurationError, "task_options"),
    ("submit() with an empty key", lambda q: q.submit(_fn, key=""), ConfigurationError, "key"),
    ("submit() with a bad task option value",
     lambda q: q.submit(_fn, task_options={"timeout": INF}), ConfigurationError, "timeout"),
    ("map() with timeout -1", lambda q: q.map(_fn, [1], timeout=-1), ConfigurationError,
     "timeout"),
    ("flush(timeout=-1)", lambda q: q.flush(timeout=-1), ConfigurationError, "timeout"),
    ("drain(timeout=-5)", lambda q: q.drain(timeout=-5), ConfigurationError, "timeout"),
    ("set_database() after init()", lambda q: q.set_database("sqlite://"), ConfigurationError,
     "before init"),
    ("result(timeout=-1)", lambda q: q.tasks[0].result(timeout=-1), ConfigurationError,
     "timeout"),
    ("update_progress(101)", lambda q: q.tasks[0].update_progress(101), ConfigurationError,
     "progress"),
    ("update_progress(-1)", lambda q: q.tasks[0].update_progress(-1), ConfigurationError,
     "progress"),
    ("update_progress('50')", lambda q: q.tasks[0].update_progress("50"), ConfigurationError,
     "progress"),
    ("update_progress(NaN)", lambda q: q.tasks[0].update_progress(NAN), ConfigurationError,
     "progress"),
    ("sleep(-1)", lambda q: q.tasks[0].sleep(-1), ConfigurationError, "sleep"),
    ("wait() on a task in no queue", lambda q: Task("x", "work").wait(1), TaskFailedError,
     "not in a queue"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "error", "words"), [pytest.param(c, e, w, id=what) for what, c, e, w in CALLS]
)
def test_bad_calls_are_refused_and_nothing_queued_is_touched(
    q: Queue, call: Callable[[Queue], object], error: type[BaseException], words: str
) -> None:
    with pytest.raises(error, match=words):
        call(q)
    assert q.tasks[0].result(10) == {"processed": True, "value": "done"}


def test_nothing_is_taken_once_shut_down(q: Queue) -> None:
    q.shutdown()
    with pytest.raises(QueueShutDownError):
        q.add(Task("late", "work"))
    with pytest.raises(QueueShutDownError):
        q.submit(_fn)


# What hooks return or raise: the task's own error, never the controller's.
HOOKS: list[tuple[str, Any, type[BaseException], str]] = [
    ("retry_schema() returns a string", GarbageRetrySchema, ConfigurationError, "retry_schema"),
    ("retry_schema() returns numbers", ListOfNumbers, ConfigurationError, "retry_schema"),
    ("retry_schema() has a broken regex", BadRegex, ConfigurationError, "not a valid regex"),
    ("validation_schema() returns strings", NotCallableRules, NbqueueError, "not callable"),
    ("exec() returns None", returns(None), TaskNotProcessedError, "processed"),
    ("exec() returns processed=False", returns({"processed": False}), TaskNotProcessedError,
     "processed=False"),
    ("exec() returns an unpicklable result", UnpicklableResult, SerializationError, "pickled"),
    ("exec() raises SystemExit", raises(SystemExit(3)), TaskFailedError, "SystemExit"),
    ("exec() raises KeyboardInterrupt", raises(KeyboardInterrupt()), TaskFailedError,
     "KeyboardInterrupt"),
    ("exec() raises an unpicklable exception", RaisesUnpicklable, TaskFailedError,
     "Unpicklable"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("executor", "error", "words"), [pytest.param(x, e, w, id=what) for what, x, e, w in HOOKS]
)
def test_hooks_that_misbehave_fail_their_own_task(
    q: Queue, executor: Any, error: type[BaseException], words: str
) -> None:
    q.register(executor, type="odd")
    odd = Task("odd", "odd", max_retries=1)
    q.add(odd)
    with pytest.raises(error, match=words):
        odd.result(10)
    assert odd.status is Status.FAILED
    assert q.tasks[0].result(10) == {"processed": True, "value": "done"}


# nbqueue worker's options: a clear message and exit status 2, never a traceback.
CLI: list[tuple[str, list[str], str]] = [
    ("--lease inf", ["worker", "--db", "sqlite://", "--lease", "inf"], "lease"),
    ("--lease 0", ["worker", "--db", "sqlite://", "--lease", "0"], "lease"),
    ("--lease nan", ["worker", "--db", "sqlite://", "--lease", "nan"], "lease"),
    ("--name of 300 characters", ["worker", "--db", "sqlite://", "--name", "n" * 300], "name"),
    ("--db not a URL", ["worker", "--db", "queue.db"], "sqlite:///"),
    ("status --db of another kind", ["status", "--db", "mysql://h/d"], "SQLite or PostgreSQL"),
    ("--tasks missing", ["worker", "--db", "sqlite://", "--tasks", "/no/such/dir"],
     "not a directory"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "words"), [pytest.param(a, w, id=what) for what, a, w in CLI])
def test_bad_command_line_options(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["worker", "--processes", "0"], ["worker", "--concurrency", "x"]])
def test_bad_numbers_are_refused_by_the_parser(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
