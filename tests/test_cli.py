"""The ``nbqueue`` command line, run as a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import sql, write_task

from nbqueue import Queue, Task
from nbqueue.cli import demo

EXAMPLES = Path(__file__).resolve().parent.parent / "tasks"


def run_cli(
    *args: str, cwd: Path | None = None, **env_vars: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NBQUEUE_GENERATE_TYPES"}
    env.update(env_vars)
    return subprocess.run(
        [sys.executable, "-m", "nbqueue.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def table_rows(stdout: str) -> list[list[str]]:
    """The rows of the status table (the lines after its header)."""
    lines = stdout.splitlines()
    header = next(
        i for i, line in enumerate(lines) if line.split()[:3] == ["name", "type", "status"]
    )
    rows = []
    for line in lines[header + 1 :]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def test_demo_runs_the_examples_and_prints_the_status_table(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    shutil.copytree(
        EXAMPLES, tasks, ignore=shutil.ignore_patterns("__pycache__", "_nbqueue*", ".nbqueue*")
    )

    run = run_cli("demo", "--count", "6", "--workers", "2", "--tasks", str(tasks), cwd=tmp_path)

    assert run.returncode == 0, run.stdout + run.stderr
    rows = table_rows(run.stdout)
    assert len(rows) == 6
    assert sum("completed" in row for row in rows) == 5
    assert sum("failed" in row for row in rows) == 1
    assert {"compress-image", "test-task"} <= {word for row in rows for word in row}
    failed = next(row for row in rows if "failed" in row)
    assert "TaskValidationError:" in failed
    # Not a terminal: plain progress lines, no carriage returns; the last one at 100%.
    assert "\r" not in run.stdout
    progress = [line for line in run.stdout.splitlines() if line.strip().endswith("failed 1")]
    assert progress and progress[-1].strip().startswith("6 / 6 finished (100%): ")
    assert "nbqueue demo: completed 5, failed 1" in run.stdout


def test_demo_finds_the_bundled_examples_by_default() -> None:
    assert demo.default_tasks_dir() == EXAMPLES


def test_demo_without_the_example_files_explains_and_fails(tmp_path: Path) -> None:
    run = run_cli("demo", "--tasks", str(tmp_path), cwd=tmp_path)
    assert run.returncode == 2
    assert "lacks the demo's example files" in run.stderr
    assert "test-task.py" in run.stderr


@pytest.mark.parametrize("argv", [[], ["demo", "--count", "0"], ["demo", "--workers", "x"]])
def test_bad_arguments_are_usage_errors(argv: list[str]) -> None:
    run = run_cli(*argv)
    assert run.returncode == 2
    assert "usage: nbqueue" in run.stderr


def test_console_script_is_installed() -> None:
    script = shutil.which("nbqueue", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the nbqueue console script is not installed next to this interpreter")
    run = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0
    assert "demo" in run.stdout


def test_demo_keeps_its_queue_in_sqlite_and_status_reads_it(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    shutil.copytree(
        EXAMPLES, tasks, ignore=shutil.ignore_patterns("__pycache__", "_nbqueue*", ".nbqueue*")
    )
    run = run_cli("demo", "--count", "4", "--tasks", str(tasks), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "nbqueue-demo.db").is_file()
    assert "queue in sqlite:///nbqueue-demo.db" in run.stdout

    status = run_cli("status", "--db", f"sqlite:///{tmp_path / 'nbqueue-demo.db'}", cwd=tmp_path)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "4 task(s)" in status.stdout and "completed 3, failed 1" in status.stdout
    assert len(table_rows(status.stdout)) == 4

    again = run_cli("demo", "--count", "2", "--tasks", str(tasks), cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    status = run_cli("status", "--db", f"sqlite:///{tmp_path / 'nbqueue-demo.db'}", cwd=tmp_path)
    assert "6 task(s)" in status.stdout


def test_demo_in_memory_writes_no_file(tmp_path: Path) -> None:
    run = run_cli("demo", "--count", "2", "--db", "memory", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert list(tmp_path.iterdir()) == []


def test_status_of_a_missing_database_is_an_error(tmp_path: Path) -> None:
    run = run_cli("status", "--db", "not-a-url", cwd=tmp_path)
    assert run.returncode == 2 and "not a database URL" in run.stderr


def test_worker_options_from_the_environment_are_checked(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'q.db'}"
    bad = run_cli("worker", NBQUEUE_DB=db, NBQUEUE_PROCESSES="0", cwd=tmp_path)
    assert bad.returncode == 2
    assert "NBQUEUE_PROCESSES must be a whole number above zero" in bad.stderr
    bad = run_cli("worker", NBQUEUE_DB=db, NBQUEUE_LEASE_SECONDS="soon", cwd=tmp_path)
    assert bad.returncode == 2 and "must be a number, got 'soon'" in bad.stderr
    missing = run_cli("worker", NBQUEUE_DB="", cwd=tmp_path)
    assert missing.returncode == 2 and "--db URL or NBQUEUE_DB" in missing.stderr
    no_dir = run_cli("worker", NBQUEUE_DB=db, NBQUEUE_TASKS=str(tmp_path / "none"), cwd=tmp_path)
    assert no_dir.returncode == 2 and "is not a directory" in no_dir.stderr


def test_a_worker_host_whose_workers_cannot_start_stops_and_gives_its_task_back(
    tmp_path: Path,
) -> None:
    """Workers that exit before they are ready (here a sitecustomize that ends every
    spawned process at once) make ``nbqueue worker`` say why and exit 1, instead of serving
    forever with no workers while it holds the lease of what it claimed."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os, sys\nif '--multiprocessing-fork' in sys.argv:\n    os._exit(3)\n"
    )
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    write_task(tasks, "noop", "    def exec(self, task):\n        return {'processed': True}\n")
    db = f"sqlite:///{tmp_path / 'q.db'}"
    client = Queue(tasks, db=db, max_workers=0).init()
    client.add(Task("a", "noop"))
    client.close()  # (committed; a client without workers does not wait for it)
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    run = run_cli("worker", "--db", db, "--tasks", str(tasks), "--processes", "2",
                  cwd=tmp_path, PYTHONPATH=path)  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert "stopping: nbqueue: the worker processes exit before they are ready" in run.stdout
    assert "exit code 3" in run.stdout
    # handed back at once, not when its lease runs out: another host may claim it now
    assert sql(db, "SELECT name, status FROM tasks") == [("a", "pending")]
