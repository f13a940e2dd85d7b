"""The training process's rehearsal: a short run of the default recipe, timed, says how long such runs take here."""

import statistics
from dataclasses import replace

import pytest

from mnist_demo.models import model_names
from mnist_demo.rehearsal import BURST, rehearse, step_time, window_paces
from mnist_demo.train import TrainConfig

STEPS = 20


def test_a_burst_of_other_work_is_left_out_of_the_step_time_and_the_runs_own_pauses_are_not():
    step_s, burst, pause = 0.01, 1.0, 0.02  # another process's second; the run's own short snapshot
    marks, elapsed = [], 0.0
    for step in range(1, 101):
        elapsed += step_s + (burst if step == 50 else 0.0) + (pause if step % 25 == 0 else 0.0)
        marks.append((step, elapsed))
    paces = window_paces(marks)
    assert max(paces) > BURST * statistics.median(paces)  # the burst's windows
    kept = [p for p in paces if p <= BURST * statistics.median(paces)]
    assert min(kept) == pytest.approx(step_s) and max(kept) > step_s  # windows with a pause stay
    assert step_time(paces) == pytest.approx(statistics.fmean(kept)) and step_s < step_time(paces) < 2 * step_s


def test_a_rehearsal_plans_runs_of_the_same_steps_only(mnist):
    default = TrainConfig.for_arch()
    pace = rehearse(mnist, default, steps=STEPS)
    assert pace.step_s > 0 and pace.fixed_s >= 0
    assert pace.plan(default) == {"kind": "plan", "step_s": pace.step_s, "fixed_s": pace.fixed_s}
    assert pace.plan(replace(default, epochs=default.epochs + 2, lr=default.lr / 2)) == pace.plan(default)
    assert pace.plan(replace(default, batch_size=2 * default.batch_size)) is None
    assert all(pace.plan(TrainConfig.for_arch(arch)) is None for arch in model_names() if arch != default.arch)
