"""How long a visitor's state lives on the server: idle sessions are forgotten, so memory stays bounded."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime
import os
from collections.abc import Callable

# A session whose tab has closed is forgotten this long after its last event; one that never says it closed (an API
# client, a lost connection) after OPEN_FACTOR times as long, so an open tab left idle keeps its state for a day.
TTL_S = float(os.environ.get("MNIST_DEMO_SESSION_TTL_S", 3600))
OPEN_FACTOR = 24


def forget_idle(holder, ttl_s: float = TTL_S, now: datetime.datetime | None = None) -> int:
    """Drop from Gradio's state holder every session idle for longer than its lifetime; how many were dropped."""
    now = now or datetime.datetime.now()
    with holder.lock:
        idle = [session for session, used in holder.time_last_used.items()
                if (now - used).total_seconds() > ttl_s * (1 if _closed(holder, session) else OPEN_FACTOR)]
        for session in idle:
            holder.delete_state(session)  # calls each gr.State's delete_callback: the visitor's files go too
            holder.session_data.pop(session, None)
            holder.time_last_used.pop(session, None)
    return len(idle)


def _closed(holder, session: str) -> bool:
    state = holder.session_data.get(session)
    return state is None or getattr(state, "is_closed", False)


def release_freed_memory() -> None:
    """Hand memory that Python freed back to the system (glibc keeps it otherwise), so the server's size shrinks."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def expiring_sessions(ttl_s: float = TTL_S, on_sweep: Callable[[], object] | None = None):
    """A lifespan for Gradio's app (`launch(app_kwargs={"lifespan": ...})`) that forgets idle sessions as it runs,
    and calls `on_sweep` each time it looks."""
    @contextlib.asynccontextmanager
    async def lifespan(app):
        async def sweep() -> None:
            while True:
                await asyncio.sleep(min(60.0, ttl_s / 4))
                if forget_idle(app.state_holder, ttl_s):
                    release_freed_memory()
                if on_sweep is not None:
                    await asyncio.to_thread(on_sweep)

        task = asyncio.create_task(sweep())
        try:
            yield
        finally:
            task.cancel()

    return lifespan
