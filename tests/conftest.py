"""Shared test set-up: no telemetry, deterministic seeds, the MNIST dataset loaded once."""

import os
from pathlib import Path

# Gradio and its client phone home unless told not to, and must be told before they are imported.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def mnist():
    from mnist_demo.data import load_dataset

    return load_dataset("mnist")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---- The web app, launched once per test session on a free port (tests/test_app.py, tests/test_browser.py) ----

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_env(tmp_path_factory):
    """Trained and uploaded checkpoints go to a scratch folder; the bundled ones are only read."""
    from mnist_demo import api

    saved = {k: os.environ.get(k) for k in (api.RUNS_DIR_ENV, "GRADIO_TEMP_DIR")}
    runs = tmp_path_factory.mktemp("runs")
    os.environ[api.RUNS_DIR_ENV] = str(runs)
    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio"))
    yield runs
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def app_url(app_env):
    import app

    demo = app.build_demo()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True,
                            quiet=True, share=False, **app.launch_options())
    yield url
    demo.close()


@pytest.fixture
def client(app_url):
    from gradio_client import Client

    c = Client(app_url, verbose=False, download_files=False)
    yield c
    c.close()


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for every browser test (tests/ui.py says how it is started)."""
    playwright = pytest.importorskip("playwright.sync_api")
    from ui import ARGS, CHROMIUM

    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def runs(app_url, tmp_path_factory):
    """A fresh run folder for a browser test module: its pickers hold the bundled models and its own runs only."""
    from mnist_demo import api

    previous = os.environ[api.RUNS_DIR_ENV]
    os.environ[api.RUNS_DIR_ENV] = str(tmp_path_factory.mktemp("browser-runs"))
    yield Path(os.environ[api.RUNS_DIR_ENV])
    os.environ[api.RUNS_DIR_ENV] = previous


@pytest.fixture
def page(browser, app_url):
    """A fresh visitor on a laptop screen."""
    from ui import open_app

    page = open_app(browser, app_url, "laptop")
    yield page
    page.context.close()
