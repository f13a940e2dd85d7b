"""The queue's estimate before any run has ended comes from the running run's pace, until Gradio has its own."""

import gradio as gr
import pytest

from mnist_demo.queue_eta import PACE_FROM, PACE_OVER, FirstRunEta


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


def test_a_running_runs_pace_gives_the_queue_its_estimate(queued):
    eta, now, times = queued
    progress, run_s = eta.start("train"), 10.0  # a run that starts slowly, then goes at 10 s for all its steps
    for share in (PACE_FROM / 2, PACE_FROM):  # start-up: no pace yet
        now[0] = 1.0 + share * run_s
        progress(share)
        assert times.avg_time == 0
    share = PACE_FROM + PACE_OVER
    now[0] += PACE_OVER * run_s
    progress(share)
    assert times.avg_time == pytest.approx(1.0 + run_s)  # the time so far and the rest of the steps at the pace
    assert times.count == 0  # an estimate, not a finished run


def test_gradios_own_average_takes_over_once_a_run_has_ended(queued):
    eta, now, times = queued
    times.add(7.0)  # as Gradio's queue does when a run ends
    progress = eta.start("train")
    for share in (PACE_FROM, PACE_FROM + PACE_OVER, 1.0):
        now[0] += 5.0
        progress(share)
    assert times.avg_time == 7.0


def test_other_kinds_of_run_leave_the_estimate_alone(queued):
    eta, now, times = queued
    progress = eta.start("teach")
    for share in (PACE_FROM, PACE_FROM + PACE_OVER):
        now[0] += 1.0
        progress(share)
    assert times.avg_time == 0


def test_the_app_gives_each_kind_of_run_an_estimate():
    import app

    demo = app.build_demo()
    watched = {kind: demo.fns[fn_id].api_name for kind, (_, fn_id) in app.queue_eta._events.items()}
    assert watched == {kind: kind for kind in (*app.RUN_KINDS.values(), "teach")}
    assert demo._queue.update_intervals == app.QUEUE_NEWS_S and not demo._queue.live_updates
