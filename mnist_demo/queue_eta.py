"""The queue's time estimate on a server that has not finished a run yet: the running run's own projection."""

from __future__ import annotations

import time
from collections.abc import Callable

import gradio as gr

# The pace is taken between a tenth of the steps and at least a tenth more: the first steps (the training process
# starting its threads, the first watch snapshot) run slower and made an earlier projection twice too long.
PACE_FROM, PACE_OVER = 0.1, 0.1


class FirstRunEta:
    """Gradio tells a queued person when their result should come from the average duration of the event's
    finished runs, so on a fresh server (a Space that has just woken up) a class's first queue showed no time at
    all until one run ended. Until then the running run's projection (its time so far, and the rest of its steps
    at its pace) stands in for that average; Gradio's own average takes over with the first run that ends."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._events: dict[str, tuple[gr.Blocks, int]] = {}
        self.clock = clock

    def watch(self, demo: gr.Blocks, event: gr.events.Dependency, kind: str) -> None:
        """Runs of `kind` are `event`'s."""
        self._events[kind] = (demo, event["id"])

    def start(self, kind: str) -> Callable[[float], None]:
        """A run of `kind` starts now: tell the returned function the share of its steps done as it goes."""
        started, mark = self.clock(), None

        def progress(share: float) -> None:
            nonlocal mark
            now = self.clock()
            if mark is None:
                mark = (now, share) if share >= PACE_FROM else None
            elif share - mark[1] >= PACE_OVER:
                pace = (now - mark[0]) / (share - mark[1])
                self._estimate(kind, now - started + max(0.0, 1 - share) * pace)
        return progress

    def _estimate(self, kind: str, seconds: float) -> None:
        if kind not in self._events:
            return
        demo, fn_id = self._events[kind]
        queue = getattr(demo, "_queue", None)  # no public way to give Gradio an estimate
        if queue is None:
            return
        times = queue.process_time_per_fn[demo.fns[fn_id]]
        if times.count == 0:
            times.avg_time = seconds
