"""Shared test set-up: no telemetry, deterministic seeds, the MNIST dataset loaded once."""

import os

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
