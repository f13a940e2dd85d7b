"""The queue's time estimate on a server that has not finished a run yet: the rehearsed plan, or a projection."""

from __future__ import annotations

import time
from collections.abc import Callable

import gradio as gr
from gradio.blocks import BlockFunction

# Before a quarter of its steps, a run's pace says little. A class's first run is slowed while the others join:
# projected at a tenth of its steps from its pace since the start, it said 12.4-14.4 s for runs of 10.3 and 8.7
# (two 10-run classes on 2 cores, the runs after it 8.0-11.4 s); at a quarter, paced over the latter half of the
# steps done (PACED_OVER), 11.4 and 8.9.
PACE_FROM, PACED_OVER = 0.25, 0.5


class FirstRunEta:
    """Gradio tells a queued person when their result should come from the average duration of the event's
    finished runs, so on a fresh server (a Space that has just woken up) a class's first queue showed no time at
    all until one run ended. Until then an estimate stands in for that average: the run's plan (what the training
    process's rehearsal of its steps says it should take, rehearsal.Pace) from its first step record, or the running
    run's projection (its time so far and its own time left) from a quarter of its steps on, whichever is lower.
    Gradio's own average takes over with the first run that ends."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._events: dict[str, tuple[gr.Blocks, BlockFunction]] = {}
        self.clock = clock

    def watch(self, demo: gr.Blocks, event: gr.events.Dependency, kind: str) -> None:
        """Runs of `kind` are `event`'s."""
        self._events[kind] = (demo, demo.fns[event["id"]])

    def start(self, kind: str) -> Callable[[dict], None]:
        """A run of `kind` starts now: give the returned function its plan record, if any, then each step record."""
        started, seen, plan = self.clock(), [], {}

        def progress(record: dict) -> None:
            if record["kind"] == "plan":
                plan.update(record)
                return
            seen.append((record["step"], record["elapsed_s"]))
            # The lower of the two: what slows a class's first run (the others arriving) does not slow the runs
            # after it, and a machine faster now than at its rehearsal shows in the projection.
            planned = plan["fixed_s"] + record["steps"] * plan["step_s"] if plan else None
            estimates = [e for e in (planned, projected(record)) if e is not None]
            if estimates:
                self._estimate(kind, min(estimates))

        def projected(step: dict) -> float | None:
            # Paced by the training process's own clock (its records reach the server in quarter-second batches,
            # too coarse over a few seconds), over recent steps only: a slow start would otherwise weigh on it.
            if step["step"] < PACE_FROM * step["steps"]:
                return None
            s0, t0 = next((p for p in reversed(seen) if p[0] <= PACED_OVER * step["step"]), (None, None))
            if s0 is None:  # no record that early: paced over too few steps
                return None
            pace = (step["elapsed_s"] - t0) / (step["step"] - s0)
            return self.clock() - started + (step["steps"] - step["step"]) * pace
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
