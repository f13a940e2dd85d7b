"""Sessions expire: a closed tab's state goes after the lifetime, an open tab's (or an API client's) much later."""

import datetime
import threading
from types import SimpleNamespace

from mnist_demo import sessions


def holder(**idle_s: tuple[float, bool]) -> SimpleNamespace:
    """A stand-in for Gradio's state holder: each session idle for some seconds, its tab closed or not."""
    now = datetime.datetime(2026, 12, 1, 12)
    return SimpleNamespace(
        lock=threading.Lock(), now=now,
        session_data={name: SimpleNamespace(is_closed=closed) for name, (_, closed) in idle_s.items()},
        time_last_used={name: now - datetime.timedelta(seconds=s) for name, (s, _) in idle_s.items()})


def test_idle_sessions_are_forgotten_by_their_lifetime():
    ttl = 100.0
    h = holder(closed_recent=(ttl / 2, True), closed_old=(ttl * 2, True), open_old=(ttl * 2, False),
               open_ancient=(ttl * (sessions.OPEN_FACTOR + 1), False))
    assert sessions.forget_idle(h, ttl, now=h.now) == 2
    assert set(h.session_data) == set(h.time_last_used) == {"closed_recent", "open_old"}
    assert sessions.forget_idle(h, ttl, now=h.now) == 0  # nothing more is due


def test_the_app_runs_the_sweep():
    import app

    assert app.launch_options()["app_kwargs"]["lifespan"].__qualname__.startswith("expiring_sessions")
