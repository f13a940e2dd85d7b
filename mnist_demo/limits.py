"""What one visitor, and all of them together, may make on a public server: set by environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

ENV_PREFIX = "MNIST_DEMO_"


@dataclass(frozen=True)
class Limits:
    # A class of 30 each training a few models fits; one visitor can never fill the disk or hold the trainer long.
    max_epochs: int = 30  # a training's epochs (the recipes use 1-20)
    max_run_s: int = 900  # a training or teaching is stopped after this long, keeping its best model
    visitor_models: int = 10  # models one visitor keeps; the oldest goes first to make room
    visitor_mb: int = 64  # megabytes one visitor keeps (the largest registry model is ~5 MB)
    runs_mb: int = 2048  # megabytes of every visitor's and every shared model together
    shared_models: int = 40  # models shared with everyone; the oldest goes first
    visitor_shares: int = 5  # models one visitor may share
    waiting_runs: int = 32  # trainings and teachings queued or running at once, everyone's together

    @classmethod
    def from_env(cls) -> Limits:
        """The defaults, each replaced by MNIST_DEMO_<NAME> (e.g. MNIST_DEMO_MAX_EPOCHS=10) where that is set."""
        values = {}
        for f in fields(cls):
            raw = os.environ.get(ENV_PREFIX + f.name.upper())
            if raw:
                try:
                    values[f.name] = max(1, int(raw))
                except ValueError:
                    raise ValueError(f"{ENV_PREFIX + f.name.upper()} must be a whole number, got {raw!r}") from None
        return cls(**values)
