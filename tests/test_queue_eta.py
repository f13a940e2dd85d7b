"""The queue's estimate before a run has ended: the run's plan or its own time left, until Gradio has its own."""

import gradio as gr
import pytest

from mnist_demo.queue_eta import PACE_FROM, PACED_OVER, FirstRunEta


@pytest.fixture
def queued():
    """A one-event app with its queue, a clock to move by hand, and the FirstRunEta watching that event."""
    now = [0.0]
    with gr.Blocks() as demo:
        event = gr.Button().click(lambda: None, api_name="train")
    demo.queue()
    eta = FirstRunEta(clock=lambda: now[0])
    eta.watch(demo, event, "train")
    return eta, now, demo._queue.process_time_per_fn[demo.fns[event["id"]]]


def step(n: int, steps: int, elapsed_s: float) -> dict:
    return {"kind": "step", "step": n, "steps": steps, "elapsed_s": elapsed_s}


def test_a_running_runs_recent_pace_gives_the_queue_its_estimate(queued):
    eta, now, times = queued
    progress, steps = eta.start("train"), 100
    early, late = 0.5, 0.1  # seconds a step: slowed while a class joins, then its own speed
    paced_from = int(PACED_OVER * PACE_FROM * steps)
    for n in range(1, int(PACE_FROM * steps)):  # paced over too few steps
        progress(step(n, steps, early * min(n, paced_from) + late * max(0, n - paced_from)))
    assert times.avg_time == 0
    now[0], n = 9.0, int(PACE_FROM * steps)
    progress(step(n, steps, early * paced_from + late * (n - paced_from)))
    assert times.avg_time == pytest.approx(9.0 + (steps - n) * late)  # its time so far, then the recent pace
    assert times.count == 0  # an estimate, not a finished run


def test_a_run_with_few_records_waits_for_one_early_enough(queued):
    eta, now, times = queued
    progress, steps = eta.start("train"), 10
    now[0] = 1.0
    first = steps // 2 - 1
    progress(step(first, steps, 1.0))  # nothing before it to pace from
    assert times.avg_time == 0
    now[0] = 2.0
    progress(step(steps - 1, steps, 2.0))  # paced from the first record
    assert times.avg_time == pytest.approx(2.0 + (2.0 - 1.0) / (steps - 1 - first))


def plan(step_s: float, fixed_s: float) -> dict:
    return {"kind": "plan", "step_s": step_s, "fixed_s": fixed_s}


def test_a_runs_plan_gives_the_queue_its_estimate_from_its_first_step(queued):
    eta, now, times = queued
    progress, steps, rehearsed = eta.start("train"), 100, plan(0.05, 0.5)
    progress(rehearsed)
    assert times.avg_time == 0  # the number of steps comes with the steps
    progress(step(1, steps, 0.2))
    assert times.avg_time == pytest.approx(rehearsed["fixed_s"] + steps * rehearsed["step_s"])


@pytest.mark.parametrize("late", [0.02, 0.1])  # seconds a step from a quarter on: faster, then slower than planned
def test_the_lower_of_plan_and_projection_stands(queued, late):
    eta, now, times = queued
    progress, steps, rehearsed = eta.start("train"), 100, plan(0.05, 0.5)
    progress(rehearsed)
    n = int(PACE_FROM * steps)
    for k in range(1, n + 1):
        now[0] = late * k
        progress(step(k, steps, late * k))
    planned = rehearsed["fixed_s"] + steps * rehearsed["step_s"]
    assert times.avg_time == pytest.approx(min(planned, now[0] + (steps - n) * late))


def test_gradios_own_average_takes_over_once_a_run_has_ended(queued):
    eta, now, times = queued
    times.add(7.0)  # as Gradio's queue does when a run ends
    progress = eta.start("train")
    progress(plan(0.01, 0.5))
    now[0] = 5.0
    progress(step(10, 100, 1.0))
    progress(step(50, 100, 5.0))
    assert times.avg_time == 7.0


def test_other_kinds_of_run_leave_the_estimate_alone(queued):
    eta, now, times = queued
    progress = eta.start("teach")
    progress(step(10, 100, 1.0))
    progress(step(50, 100, 5.0))
    assert times.avg_time == 0


def test_the_app_gives_each_kind_of_run_an_estimate():
    import app

    demo = app.build_demo()
    watched = {kind: fn.api_name for kind, (_, fn) in app.queue_eta._events.items()}
    assert watched == {kind: kind for kind in (*app.RUN_KINDS.values(), "teach")}
    assert demo._queue.update_intervals == app.QUEUE_NEWS_S and not demo._queue.live_updates
