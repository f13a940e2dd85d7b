"""The app's training service: one worker process per device, one run at a time on it, and each session's Stop."""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

from . import api
from .data import Split, dataset_title
from .finetune import FinetuneConfig, check_examples
from .limits import Limits
from .live_run import LiveRun
from .train import ConfigError, TrainConfig, available_devices, resolve_device
from .watch import Drawing
from .worker import Worker

UI_INTERVAL_S = 0.5  # at most two streamed step updates a second: plenty for a curve, and each costs server CPU
Progress = Callable[[dict], None]  # told a run's plan (rehearsal.Pace), if any, then each of its step records


def device_key(name: str) -> str:
    """The physical device a setting means ('auto' and 'cuda' included), so each one gets a single trainer."""
    device = str(resolve_device(name))
    return "cuda:0" if device == "cuda" else device


RESERVATION_S = 7200  # a run reserved but never started (its client went away while it waited) stops blocking


class RunControl:
    """A session's Stop flag; the training loop polls it after every progress record."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.running = False
        self.reserved = 0.0  # when a queued run was reserved for this session (0: none)
        self.deadline = float("inf")  # time.monotonic() at which a running run is stopped

    def should_stop(self) -> bool:
        """Stop pressed, or the run has been going for as long as a run may (it then keeps its best model)."""
        if time.monotonic() > self.deadline:
            self.stop.set()
        return self.stop.is_set()

    def busy(self) -> bool:
        return self.running or time.monotonic() - self.reserved < RESERVATION_S


class Sessions:
    """Each browser session's Stop flag: a Stop ends the run of the session that pressed it, and no other."""

    def __init__(self) -> None:
        self._runs: dict[str, RunControl] = {}
        self._lock = threading.Lock()

    def reserve(self, session: str) -> bool:
        """Before a run joins the queue: a fresh flag for it, so an old Stop cannot cancel it and a new Stop works
        while it waits; False when the session has a run waiting or going already (one each)."""
        with self._lock:
            current = self._runs.get(session)
            if current is not None and current.busy():
                return False
            self._runs[session] = control = RunControl()
            control.reserved = time.monotonic()
            return True

    def forget(self, session: str) -> None:
        """Drop a reserved flag whose run never started (its settings were refused), so Stop says 'nothing to
        stop' and the session may start another."""
        with self._lock:
            if session in self._runs and not self._runs[session].running:
                del self._runs[session]

    def busy(self, session: str) -> bool:
        """Whether this session has a run waiting in the queue or going."""
        with self._lock:
            control = self._runs.get(session)
        return control is not None and control.busy()

    def running(self, session: str) -> bool:
        """Whether this session's run has started (rather than waiting in the queue, or not existing)."""
        with self._lock:
            control = self._runs.get(session)
        return control is not None and control.running

    def stop(self, session: str) -> bool:
        """Ask this session's run to stop; False when it has none."""
        with self._lock:
            control = self._runs.get(session)
        if control is None:
            return False
        control.stop.set()
        return True

    @contextlib.contextmanager
    def claim(self, session: str, max_s: float = float("inf")) -> Iterator[RunControl]:
        """The session's flag for the length of one run, which may go on for `max_s`; forgotten afterwards."""
        with self._lock:
            control = self._runs.setdefault(session, RunControl())
            control.running = True
            control.deadline = time.monotonic() + max_s
        try:
            yield control
        finally:
            with self._lock:
                if self._runs.get(session) is control:
                    del self._runs[session]


class Trainers:
    """One training process per physical device, used by one run at a time (the app's queue sees to the order)."""

    def __init__(self, worker: Callable[[str], Worker] = Worker, limits: Limits | None = None) -> None:
        self._new_worker = worker  # given the physical device it trains on
        self.limits = limits or Limits.from_env()
        self._workers: dict[str, Worker] = {}
        self._locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self.sessions = Sessions()

    @staticmethod
    def slots() -> int:
        """How many runs can go on at once: one per physical device."""
        return len({device_key(d) for d in available_devices()})

    def worker(self, device: str = "auto") -> Worker:
        """The training process for a device setting's physical device, made on first use."""
        key = device_key(device)
        if key not in self._workers:  # setdefault: two sessions asking at once both get the one kept
            self._workers.setdefault(key, self._new_worker(key))
        return self._workers[key]

    def run(self, cfg: TrainConfig, session: str, drawing: Drawing | None = None, watch: bool = False,
            progress: Progress | None = None, folder: Path | None = None) -> Iterator[dict]:
        """Views of the run as it goes (LiveRun.view()), the last one with the summary; errors are UserErrors.
        With `watch`, views also carry the guesses on the watched test digits and on `drawing` (28×28 in [0, 1]).
        `progress` is given the run's plan, if any, and every step record. The model is saved in `folder` (None:
        the runs folder); the run is stopped at the limits' max_run_s, keeping its best model."""
        if cfg.epochs > self.limits.max_epochs:
            raise ConfigError(f"epochs must be at most {self.limits.max_epochs} on this server, got {cfg.epochs}")
        with self.sessions.claim(session, self.limits.max_run_s) as control:
            data = dataset_title(cfg.dataset)
            title = (f"Sanity check: {cfg.arch} memorising {cfg.overfit} {data} images" if cfg.overfit
                     else f"Training {cfg.arch} on {data}")
            live = LiveRun(title, cfg.epochs, overfit=cfg.overfit, status="Waiting for the trainer…", watch=watch)
            device = device_key(cfg.device)
            lock, acquired = self._locks[device], False
            while not control.stop.is_set() and not (acquired := lock.acquire(timeout=0.5)):
                live.status = f"Waiting: another run is using {device}…"
                yield live.view()
            if not acquired:  # Stop pressed while this session waited in line
                live.status = "Stopped before it started."
                yield live.view()
                return
            try:
                yield from self._stream(cfg, live, control, device, drawing, progress, folder)
            finally:
                lock.release()

    def teach(self, base: Path, examples: Split, session: str, name: str | None = None,
              progress: Progress | None = None, folder: Path | None = None) -> Iterator[dict]:
        """Views of teaching the model at `base` a session's examples, as run()'s; the last one also carries the
        'saved' record (finetune.Teaching.finish) as `saved`, in `folder` (None: the runs folder). Bad examples or
        a taken name fail before any wait."""
        check_examples(examples)
        out = api.taught_path(base, name, folder)
        with self.sessions.claim(session, self.limits.max_run_s) as control:
            live = LiveRun(f"Teaching {base.stem} your {len(examples)} examples", FinetuneConfig().epochs,
                           status="Waiting for the trainer…", val_name="your examples read right")
            yield live.view()
            device = device_key("auto")
            with self._locks[device]:
                live.status = f"{live.title}: starting on {device}…"
                yield live.view()
                records = self.worker(device).teach(base, examples, out, should_stop=control.should_stop)
                saved = yield from self._follow(records, live, control, progress)
                yield dict(live.view(), saved=saved)

    @staticmethod
    def _follow(records: Iterator[dict], live: LiveRun, control: RunControl,
                progress: Progress | None = None) -> Iterator[dict]:
        """The live view of a worker's records; returns the 'saved' record, if any."""
        saved = None
        with contextlib.closing(records):  # closing (page closed, cancel) makes the worker keep the best model
            last_ui = 0.0
            for rec in records:
                if progress is not None and rec["kind"] in ("plan", "step"):
                    progress(rec)
                if rec["kind"] == "plan":  # for the queue's estimate only: nothing to show
                    continue
                stopping_now = control.stop.is_set() and not live.stopping
                if stopping_now:
                    live.stop()
                live.add(rec)
                saved = rec if rec["kind"] == "saved" else saved
                # Rendering an update costs server CPU that training could use, so step updates are spaced; the
                # first one after a Stop goes at once, since it is the only word the Stop button gets.
                if stopping_now or rec["kind"] != "step" or time.monotonic() - last_ui >= UI_INTERVAL_S:
                    last_ui = time.monotonic()
                    yield live.view()
        return saved

    def _stream(self, cfg: TrainConfig, live: LiveRun, control: RunControl, device: str,
                drawing: Drawing | None, progress: Progress | None, folder: Path | None) -> Iterator[dict]:
        # A sanity-check model is useless for drawing, so it goes to a scratch folder, not the model list.
        scratch = tempfile.TemporaryDirectory(prefix="overfit-") if cfg.overfit else contextlib.nullcontext()
        with scratch as tmp:
            live.status = f"{live.title}: starting on {device}…"
            yield live.view()
            out = Path(tmp) / "overfit.safetensors" if cfg.overfit else api.checkpoint_path(cfg, folder)
            records = self.worker(device).train(cfg, out=out, should_stop=control.should_stop, drawing=drawing)
            yield from self._follow(records, live, control, progress)
            if live.summary is None:  # stopped before its first step ended: there is no model to keep
                live.status, live.detail = "Stopped before the first training step ended: nothing was saved.", ""
                yield live.view()
