"""A Jupyter kernel that dies mid-notebook (nbclient)."""

from __future__ import annotations

import psutil
from nbclient import NotebookClient
from nbclient.util import ensure_async


async def kill_and_restart(client: NotebookClient) -> list[psutil.Process]:
    """Kill the kernel (SIGKILL to its process group) and start a new one with the same
    arguments (same working directory), connected to a new kernel client. Returns the
    processes of the killed kernel."""
    assert client.km is not None and client.kc is not None
    kernel = psutil.Process(client.km.provisioner.pid)  # type: ignore[union-attr]
    processes = [kernel, *kernel.children(recursive=True)]
    workers = [p for p in processes if "spawn_main" in " ".join(p.cmdline())]
    assert workers, "the queue's worker process should be running in the first kernel"
    client.kc.stop_channels()
    await ensure_async(client.km.restart_kernel(now=True))
    await client.async_start_new_kernel_client()
    return processes
