"""The queue's time estimate on a server that has not finished a run yet: the running run's own projection."""

from __future__ import annotations

import time
from collections.abc import Callable

import gradio as gr
from gradio.blocks import BlockFunction

# Before a tenth of its steps, a run's time left is paced over too few of them to say much.
PACE_FROM = 0.1


class FirstRunEta:
    """Gradio tells a queued person when their result should come from the average duration of the event's
    finished runs, so on a fresh server (a Space that has just woken up) a class's first queue showed no time at
    all until one run ended. Until then the running run's projection (its time so far and its own time left)
    stands in for that average; Gradio's own average takes over with the first run that ends."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._events: dict[str, tuple[gr.Blocks, BlockFunction]] = {}
        self.clock = clock

    def watch(self, demo: gr.Blocks, event: gr.events.Dependency, kind: str) -> None:
        """Runs of `kind` are `event`'s."""
        self._events[kind] = (demo, demo.fns[event["id"]])

    def start(self, kind: str) -> Callable[[dict], None]:
        """A run of `kind` starts now: give the returned function each of its step records as they come."""
        started = self.clock()

        def progress(step: dict) -> None:
            # The time left comes from the training process, which times its own steps: records reach the server
            # in batches every quarter second, so a pace timed here over a tenth of a run was up to 25% off.
            if step["eta_s"] is not None and step["step"] >= PACE_FROM * step["steps"]:
                self._estimate(kind, self.clock() - started + step["eta_s"])
        return progress

    def _estimate(self, kind: str, seconds: float) -> None:
        if kind not in self._events:
            return
        demo, fn = self._events[kind]
        queue = getattr(demo, "_queue", None)  # no public way to give Gradio an estimate
        if queue is None:
            return
        times = queue.process_time_per_fn[fn]
        if times.count == 0:
            times.avg_time = seconds
