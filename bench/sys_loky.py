"""loky's reusable executor, 2 workers."""

from __future__ import annotations

from bench.common import WORKERS, System, drive_futures_executor
from bench.tasks import inc, whoami


def main() -> None:
    with System("loky", "loky reusable executor") as s:
        import loky

        s.version(loky=loky.__version__)
        ex = loky.get_reusable_executor(max_workers=WORKERS, timeout=600)
        s.on_cleanup(lambda: ex.shutdown(wait=True, kill_workers=True))
        drive_futures_executor(s, ex, inc, whoami)


if __name__ == "__main__":
    main()
