"""The queue's estimate before any run has ended comes from the running run's time left, until Gradio has its own."""

import gradio as gr
import pytest

from mnist_demo.queue_eta import PACE_FROM, FirstRunEta


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


def step(n: int, steps: int, eta_s: float | None) -> dict:
    return {"kind": "step", "step": n, "steps": steps, "eta_s": eta_s}


def test_a_running_runs_own_time_left_gives_the_queue_its_estimate(queued):
    eta, now, times = queued
    progress, steps = eta.start("train"), 100
    now[0] = 3.0
    progress(step(1, steps, None))  # no pace yet
    progress(step(int(PACE_FROM * steps) - 1, steps, 9.0))  # paced over too few steps
    assert times.avg_time == 0
    progress(step(int(PACE_FROM * steps), steps, 9.0))
    assert times.avg_time == 3.0 + 9.0  # its time so far and its time left
    assert times.count == 0  # an estimate, not a finished run


def test_gradios_own_average_takes_over_once_a_run_has_ended(queued):
    eta, now, times = queued
    times.add(7.0)  # as Gradio's queue does when a run ends
    progress = eta.start("train")
    now[0] = 5.0
    progress(step(50, 100, 5.0))
    assert times.avg_time == 7.0


def test_other_kinds_of_run_leave_the_estimate_alone(queued):
    eta, now, times = queued
    eta.start("teach")(step(50, 100, 5.0))
    assert times.avg_time == 0


def test_the_app_gives_each_kind_of_run_an_estimate():
    import app

    demo = app.build_demo()
    watched = {kind: fn.api_name for kind, (_, fn) in app.queue_eta._events.items()}
    assert watched == {kind: kind for kind in (*app.RUN_KINDS.values(), "teach")}
    assert demo._queue.update_intervals == app.QUEUE_NEWS_S and not demo._queue.live_updates
