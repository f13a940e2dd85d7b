"""Sessions expire: a closed tab's state goes after the lifetime, an open tab's (or an API client's) much later, and
with it what the visitor made (each gr.State's delete_callback), on Gradio's real state holder."""

import datetime

import gradio as gr
from gradio.state_holder import StateHolder

from mnist_demo import sessions


def holder(**idle_s: tuple[float, bool]) -> tuple[StateHolder, list, datetime.datetime]:
    """Gradio's own state holder for a page with one gr.State: each session set, then idle for some seconds, its tab
    closed or not. Returns the holder, the values whose delete_callback ran, and now."""
    deleted = []
    with gr.Blocks() as demo:
        state = gr.State(None, delete_callback=deleted.append)
    h = StateHolder()
    h.set_blocks(demo)
    now = datetime.datetime.now()
    for name, (s, closed) in idle_s.items():
        h[name][state._id] = f"{name}'s files"
        h[name].is_closed = closed
        h.time_last_used[name] = now - datetime.timedelta(seconds=s)
    return h, deleted, now


def test_idle_sessions_are_forgotten_by_their_lifetime_and_their_state_is_deleted():
    ttl = 100.0
    h, deleted, now = holder(closed_recent=(ttl / 2, True), closed_old=(ttl * 2, True), open_old=(ttl * 2, False),
                             open_ancient=(ttl * (sessions.OPEN_FACTOR + 1), False))
    assert sessions.forget_idle(h, ttl, now=now) == 2
    assert set(h.session_data) == set(h.time_last_used) == {"closed_recent", "open_old"}
    assert sorted(deleted) == ["closed_old's files", "open_ancient's files"]
    assert sessions.forget_idle(h, ttl, now=now) == 0  # nothing more is due


def test_the_app_runs_the_sweep():
    import app

    lifespan = app.launch_options()["app_kwargs"]["lifespan"]
    assert callable(lifespan) and lifespan.__module__ == sessions.__name__
