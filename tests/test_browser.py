"""The widgets in a real browser: JupyterLab on localhost, driven by headless Chromium.

Starts a JupyterLab server on a free local port with a small notebook that shows the γ
explorer, opens it in Debian's Chromium through Playwright (its own browser download is not
used: ``executable_path`` points at the system Chromium), runs the cell, moves a slider with
the keyboard (the sliders report on release, ``continuous_update=False``) and checks that the
read-out and the figure changed. A screenshot is saved to
``test-artifacts/widget.png``. Skipped, with the reason, when Chromium or Playwright is absent
(``.ci/run`` installs both).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"
    ),
]

NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": None,
            "id": "w1",
            "metadata": {},
            "outputs": [],
            "source": (
                "import gctm_mini as gm\n"
                "from gctm_mini.widgets import GammaExplorer\n"
                "explorer = GammaExplorer(gm.assets.load_shipped('gctm_moons'), gm.make_dataset('moons'), n=300)\n"
                "explorer.widget()"
            ),
        }
    ],
    "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
    },
    "nbformat": 4,
    "nbformat_minor": 5,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    (tmp_path / "widget.ipynb").write_text(json.dumps(NOTEBOOK))
    port, token = free_port(), "gctm-test-token"
    env = {
        **os.environ,
        "JUPYTER_PLATFORM_DIRS": "1",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={tmp_path}",
            "--ServerApp.disable_check_xsrf=True",
            "--LabApp.news_url=",
            "--allow-root",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("JupyterLab did not start within 120 s")
    yield url, token
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_gamma_explorer_reacts_to_a_slider_in_chromium(lab):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    url, token = lab
    ARTIFACTS.mkdir(exist_ok=True)
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            page.goto(f"{url}/lab/tree/widget.ipynb?token={token}", timeout=120_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            page.wait_for_selector("text=| Idle", timeout=120_000)  # status bar: kernel ready
            page.click(".jp-Cell .jp-InputArea-editor")
            page.keyboard.press("Shift+Enter")
            readout = (
                "() => Array.from(document.querySelectorAll('.jp-OutputArea-output'))"
                ".map(e => e.textContent).join(' ')"
            )
            page.wait_for_function(f"() => ({readout})().includes('W2 to data')", timeout=180_000)
            figure = "() => document.querySelector('.jp-OutputArea-output img.widget-image').src"
            before, before_png = page.evaluate(readout), page.evaluate(figure)
            handle = page.locator(".noUi-handle").nth(1)  # the NFE slider
            handle.focus()
            page.keyboard.press("ArrowRight")
            page.wait_for_function(f"() => ({readout})().includes('NFE = 2:')", timeout=120_000)
            page.wait_for_selector("text=| Idle", timeout=60_000)  # let the figure redraw
            after, after_png = page.evaluate(readout), page.evaluate(figure)
            page.screenshot(path=str(ARTIFACTS / "widget.png"))
        finally:
            browser.close()
    assert "NFE = 1" in before and "NFE = 2" in after, (before, after)
    assert before_png.startswith("blob:") or before_png.startswith("data:image/png")
    assert after_png != before_png  # the figure was redrawn, not only the read-out
