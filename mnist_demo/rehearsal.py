"""How long a training run should take on this machine: a short rehearsal of the default recipe while it is idle."""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import api
from .data import Dataset
from .train import TrainConfig, resolve_device

REHEARSAL_STEPS = 100  # about half a second of the default recipe on 2 CPU cores
WINDOW_STEPS = 10  # ~50 ms here: another process's burst spoils a window or two, not the whole measure
BURST = 1.5  # a window this much slower than the median one had other work in it (the server still starting)


@dataclass(frozen=True)
class Pace:
    """What a rehearsal of `cfg` measured: seconds per training step, and the seconds a run spends outside its
    steps (setting up, the test evaluation, saving)."""

    cfg: TrainConfig
    step_s: float
    fixed_s: float

    def plan(self, cfg: TrainConfig) -> dict | None:
        """The 'plan' record for a run of `cfg`, or None if its steps differ from the rehearsed ones (another
        architecture, batch size or device; augmentation's warping is per epoch, not per step, but it is kept out
        too)."""
        def same_steps(c: TrainConfig) -> tuple:
            return c.arch, c.batch_size, c.augment, resolve_device(c.device)

        if same_steps(cfg) != same_steps(self.cfg):
            return None
        return {"kind": "plan", "step_s": self.step_s, "fixed_s": self.fixed_s}


def rehearse(dataset: Dataset, cfg: TrainConfig | None = None, steps: int = REHEARSAL_STEPS) -> Pace:
    """Run `cfg` (the default recipe) as the app's runs go, stopped after `steps` steps, timed: its setting up, its
    steps and its ending (the test evaluation, saving) are those of a whole run."""
    cfg, marks = cfg or TrainConfig.for_arch(), []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rehearsal-") as tmp:
        for record in api.train_and_save(cfg, out=Path(tmp) / "rehearsal.safetensors", dataset=dataset,
                                         should_stop=lambda: bool(marks) and marks[-1][0] >= steps,
                                         adapt_threads=True, watch=True):
            if record["kind"] == "step":
                marks.append((record["step"], record["elapsed_s"]))
    total = time.perf_counter() - started
    step_s = step_time(window_paces(marks))
    return Pace(cfg, step_s, max(0.0, total - marks[-1][0] * step_s))


def step_time(paces: list[float]) -> float:
    """The mean pace over windows without a burst of other work: a run's own pauses (its snapshots for the live
    view) count, another process's do not."""
    median = statistics.median(paces)
    return statistics.fmean(p for p in paces if p <= BURST * median)


def window_paces(marks: list[tuple[int, float]], window: int = WINDOW_STEPS) -> list[float]:
    """Seconds per step over each stretch of at least `window` steps between (step, elapsed_s) marks."""
    paces, first = [], 0
    for i, (step, elapsed) in enumerate(marks):
        while first + 1 < i and step - marks[first + 1][0] >= window:
            first += 1
        s0, t0 = marks[first]
        if step - s0 >= window:
            paces.append((elapsed - t0) / (step - s0))
    return paces or [marks[-1][1] / marks[-1][0]]
