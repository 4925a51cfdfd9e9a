"""The quick-start notebook in a real browser: JupyterLab on loopback, headless Chromium
(Debian's /usr/bin/chromium driven by Playwright), Run All, and the dashboard's progress bar
rendered in the page until it reaches 100 %. A cell added before the last one submits a
function that prints and then fails: its widget shows the error and what it printed.

Skipped locally when Chromium or Playwright is missing; on CI (CI=true) that is a failure,
since .ci/run installs Chromium. ``NBQUEUE_UPDATE_SCREENSHOT=1`` saves the screenshot to
docs/ (the README shows it).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SCREENSHOT = ROOT / "docs" / "notebook-dashboard.png"

pytestmark = pytest.mark.timeout(300)


def _require(available: bool, what: str) -> None:
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing on CI (.ci/run installs it)")
    pytest.skip(f"{what} is missing")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _poll(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(0.1)


#: Run before the quick start's last cell (which shuts the queue down): a function that
#: prints, then fails; its widget must show both.
FAILING_CALL = """\
def shout(n):
    for i in range(n):
        print(f"shouting line {i}")
    raise ValueError("the shout failed")

shouted = queue.submit(shout, 3)
queue.wait(timeout=60)
shouted"""


def _quickstart_with_a_failing_call(target: Path) -> None:
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    nb.cells.insert(len(nb.cells) - 1, nbformat.v4.new_code_cell(FAILING_CALL))
    nbformat.write(nb, target)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[str]:
    """A JupyterLab server on 127.0.0.1 with a token, serving a temporary root that holds
    the quick-start notebook and the example tasks; yields the notebook's URL."""
    root = tmp_path / "root"
    (root / "notebooks").mkdir(parents=True)
    _quickstart_with_a_failing_call(root / "notebooks" / "quickstart.ipynb")
    shutil.copytree(
        ROOT / "tasks",
        root / "tasks",
        ignore=shutil.ignore_patterns("__pycache__", ".nbqueue-types*", "*.pyi", "_nbqueue_*"),
    )
    # Settings: render every cell (no windowing, so the widgets are in the page), no news.
    settings = tmp_path / "settings"
    for plugin, values in (
        ("notebook-extension/tracker", {"windowingMode": "none"}),
        ("apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False}),
    ):
        path = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
    }
    server = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab",
            "--no-browser",
            "--allow-root",  # CI runs as root
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",  # no package-index look-ups
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "server.log", "wb"),  # noqa: SIM115 (closed with the process)
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if server.poll() is not None:
            raise AssertionError(f"jupyter lab exited:\n{(tmp_path / 'server.log').read_text()}")
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        _poll(up, 60, "jupyter lab did not answer")
        yield f"{base}/lab/tree/notebooks/quickstart.ipynb?token={token}"
    finally:
        server.send_signal(signal.SIGTERM)  # shuts its kernels down, then exits
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def _wait_quietly(page: Any, predicate: str, timeout_ms: int = 60_000) -> bool:
    """True once ``predicate`` holds in the page; False (no error) when it never does."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(predicate, timeout=timeout_ms, polling=50)
    except PlaywrightTimeout:
        return False
    return True


def _notebook_state(page: Any) -> str:
    """The kernel's status and every cell's output text, for a failure message."""
    state = page.evaluate(
        """() => {
            const panel = window.jupyterapp.shell.currentWidget;
            const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
            const cells = panel.content.widgets.filter(c => c.model.type === 'code');
            return {
                kernel: kernel ? kernel.status : 'none',
                counts: cells.map(c => c.model.executionCount),
            };
        }"""
    )
    outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
    return f"kernel {state['kernel']}, execution counts {state['counts']}, outputs {outputs}"


def test_quickstart_runs_in_chromium_and_the_progress_bar_reaches_100(lab: str) -> None:
    _require(CHROMIUM.exists(), str(CHROMIUM))
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "playwright (pip install playwright)")
        raise

    started = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(lab)
            # The notebook is open and its kernel is up.
            page.wait_for_function(
                """() => {
                    const app = window.jupyterapp;
                    const panel = app && app.shell.currentWidget;
                    const kernel = panel && panel.sessionContext
                        && panel.sessionContext.session && panel.sessionContext.session.kernel;
                    return kernel && kernel.status === 'idle';
                }""",
                timeout=90_000,
            )
            page.evaluate(
                "() => { window.jupyterapp.commands.execute('application:toggle-left-area'); }"
            )
            # Not awaited: the command's promise settles only when every cell has run.
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")

            # While tasks run, the dashboard shows a bar per running task: the README's picture.
            mid_run = _wait_quietly(
                page,
                """() => {
                    const rows = [...document.querySelectorAll('.nbqueue-task-row')]
                        .filter(row => row.offsetParent !== null);
                    const bars = rows.map(row => row.querySelector('.progress-bar'));
                    return rows.length >= 2 && bars.some(b => b && b.style.width !== '0%');
                }""",
            )
            if mid_run:
                page.locator(".jp-Cell", has=page.locator(".nbqueue-dashboard")).evaluate(
                    "cell => cell.scrollIntoView({block: 'start'})"
                )
                shot = page.screenshot()
                if os.environ.get("NBQUEUE_UPDATE_SCREENSHOT"):
                    SCREENSHOT.parent.mkdir(exist_ok=True)
                    SCREENSHOT.write_bytes(shot)

            # The dashboard's overall bar is rendered by the widget manager and reaches 100 %.
            overall = page.locator(".nbqueue-dashboard .nbqueue-overall .progress-bar")
            try:
                overall.wait_for(state="attached", timeout=120_000)
            except Exception as exc:  # say what the notebook shows instead
                raise AssertionError(f"no dashboard in the page; {_notebook_state(page)}") from exc
            page.wait_for_function(
                """() => {
                    const bar = document.querySelector(
                        '.nbqueue-dashboard .nbqueue-overall .progress-bar');
                    return bar && bar.style.width === '100%';
                }""",
                timeout=120_000,
            )
            # The task's own bar too, and every cell ran (the last one shut the queue down).
            task_bar = page.locator(".nbqueue-task .progress-bar").first
            assert task_bar.evaluate("bar => bar.style.width") == "100%"
            page.wait_for_function(
                """() => {
                    const cells = window.jupyterapp.shell.currentWidget.content.widgets;
                    const code = cells.filter(c => c.model.type === 'code');
                    const last = code[code.length - 1];
                    return last.model.executionCount !== null
                        && window.jupyterapp.shell.currentWidget.sessionContext
                            .session.kernel.status === 'idle';
                }""",
                timeout=120_000,
            )
            # The dashboard's last redraw comes from its own thread, and may reach the page
            # after the kernel reports idle (the assertion below says what it shows if not).
            _wait_quietly(
                page,
                """() => {
                    const board = document.querySelector('.nbqueue-dashboard');
                    return board && board.innerText.includes('6 / 6 finished (100%)');
                }""",
                timeout_ms=30_000,
            )
            text = page.locator(".nbqueue-dashboard").inner_text()
            assert "6 / 6 finished (100%)" in text and "completed 5" in text
            assert "failed 1" in text and "the shout failed" in text  # recent failures
            # The failed call's own widget: its error and, behind the fold, what it printed.
            shouted = page.locator(".nbqueue-task", has_text="the shout failed")
            assert shouted.count() == 1
            printed = shouted.evaluate("widget => widget.textContent")
            assert all(f"shouting line {i}" in printed for i in range(3)), printed
            assert page.locator("text=Error displaying widget").count() == 0
            assert page.locator(".jp-OutputArea-output[data-mime-type*='error']").count() == 0

        finally:
            browser.close()
    print(f"browser test: {time.monotonic() - started:.1f} s in Chromium")
