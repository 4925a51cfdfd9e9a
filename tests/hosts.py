"""``nbqueue worker`` hosts in processes of their own, for the scale-out and security tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


class WorkerHost:
    """One ``nbqueue worker`` (one process) in its own process group, its output in ``log``;
    ``env`` replaces the environment (default: this one)."""

    def __init__(
        self, url: str, tasks: Path, log: Path, *options: str, name: str = "h",
        env: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.log = log
        environment = {**(os.environ if env is None else env), "NBQUEUE_GENERATE_TYPES": "false"}
        with open(log, "w") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nbqueue.cli", "worker", "--db", url, "--tasks", str(tasks),
                 "--name", name, "--processes", "1", *options],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=environment,
            )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text()

    def serving(self) -> bool:
        assert self.proc.poll() is None, self.text()
        return "serving" in self.text()

    def stop(self) -> int:
        """SIGTERM (a drain), then its exit code; whatever is left is killed."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            self.kill()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
