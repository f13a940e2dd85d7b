"""Training in a child process that streams its progress records back: how the web app trains."""

# Why a process: the app serves requests from many threads, and PyTorch's OpenMP threads run slower as soon as more
# than one thread has used them (idle workers stop spinning once they outnumber the cores): training in a server
# thread ran 20-30% slower than the CLI on 2 cores. A child trains on its main thread as the CLI does, and a crash
# there (out of memory, a segfault) ends one run, not the server.

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from queue import Queue

import torch

from . import api
from .data import DATASETS, Dataset, Split, load_dataset
from .errors import UserError, user_error_types
from .finetune import REPLAY_DATASET
from .rehearsal import Pace, rehearse
from .train import TrainConfig
from .watch import Drawing, drawing_tensor

STOP = "stop"
NICE = 10
WARM_DATASET = "mnist"  # what most runs train on, so the process loads it as it starts
log = logging.getLogger(__name__)


class WorkerError(UserError, RuntimeError):
    """The training process failed; the person can only start again, and the message says so."""


def serve(stdin=sys.stdin, stdout=sys.stdout, device: str = "auto") -> None:
    """The child's loop, training on `device`: a job is one JSON line (job_records says which), "stop" ends the
    current one early.

    Every record is written back as one JSON line; a job ends with {"kind": "end"} or {"kind": "error", ...}.
    """
    jobs: Queue[dict | None] = Queue()
    stop = threading.Event()

    def read() -> None:  # a reader thread, so that "stop" arrives while the main thread trains
        for line in stdin:
            message = json.loads(line)
            if message == STOP:
                stop.set()
            else:
                jobs.put(message)
        stop.set()
        jobs.put(None)

    def send(record: dict) -> None:
        stdout.write(json.dumps(record) + "\n")
        stdout.flush()

    threading.Thread(target=read, daemon=True).start()
    datasets: dict[str, Dataset] = {}
    pace = warm_up(datasets, device)
    while (job := jobs.get()) is not None:
        stop.clear()
        try:
            for record in job_records(job, datasets, stop.is_set, pace):
                send(record)
            send({"kind": "end"})
        except Exception as exc:  # reported to the one run that caused it; the process serves the next job
            send({"kind": "error", "type": type(exc).__name__, "message": str(exc)})


def warm_up(datasets: dict[str, Dataset], device: str = "auto") -> Pace | None:
    """Before the first job asks: load the dataset most runs train on (the first Train starts sooner), then rehearse
    its default recipe on `device` while the machine is idle (a queue's first estimate, rehearsal.Pace)."""
    try:
        return rehearse(dataset_for(WARM_DATASET, datasets), TrainConfig.for_arch(device=device))
    except UserError:  # no dataset here: jobs load what they need and say so
        return None
    except Exception:  # without a rehearsal the queue estimates from the first run alone; the jobs still run
        log.exception("the training process could not rehearse the default recipe")
        return None


def job_records(job: dict, datasets: dict[str, Dataset], should_stop: Callable[[], bool],
                pace: Pace | None = None) -> Iterator[dict]:
    """A training job's records, or a teaching job's ({"teach": {"base", "images", "labels"}, "out": ...}). A
    training job whose steps were rehearsed (`pace`) starts with a 'plan' record: how long its steps and the rest
    should take here."""
    if "teach" in job:
        teach = job["teach"]
        examples = Split(torch.tensor(teach["images"], dtype=torch.uint8), torch.tensor(teach["labels"]))
        yield from api.finetune_and_save(teach["base"], examples, out=job["out"], should_stop=should_stop,
                                         dataset=dataset_for(REPLAY_DATASET, datasets))
        return
    cfg = TrainConfig(**job["config"])
    if pace is not None and (plan := pace.plan(cfg)) is not None:
        yield plan
    yield from api.train_and_save(cfg, out=job["out"], dataset=dataset_for(cfg.dataset, datasets),
                                  should_stop=should_stop, adapt_threads=True, watch=True,
                                  drawing=job.get("drawing"))


def dataset_for(name: str, cache: dict[str, Dataset]) -> Dataset:
    """MNIST and Fashion-MNIST stay loaded between jobs (the first read takes seconds); a CSV is read afresh."""
    if name not in DATASETS:
        return load_dataset(name)
    if name not in cache:
        cache[name] = load_dataset(name)
    return cache[name]


class Worker:
    """The parent's handle on one training process for `device`: started by start() or on first use, restarted if
    it dies."""

    def __init__(self, device: str = "auto") -> None:
        self.device = device
        self._proc: subprocess.Popen | None = None

    def start(self) -> subprocess.Popen:
        """The running process, started now if there is none (it needs a few seconds to import torch)."""
        if self._proc is None or self._proc.poll() is not None:
            root = str(Path(__file__).resolve().parents[1])  # importable wherever the app was started from
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
            self._proc = subprocess.Popen([sys.executable, "-m", "mnist_demo.worker", self.device],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
        return self._proc

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def train(self, cfg: TrainConfig, out: str | os.PathLike, should_stop: Callable[[], bool] | None = None,
              drawing: Drawing | None = None) -> Iterator[dict]:
        """Like api.train_and_save, one run at a time per Worker: closing it stops the run and keeps the best model."""
        drawing = None if drawing is None else drawing_tensor(drawing).tolist()  # refused before any work
        return self._job({"config": cfg.to_dict(), "out": str(out), "drawing": drawing}, should_stop)

    def teach(self, base: str | os.PathLike, examples: Split, out: str | os.PathLike,
              should_stop: Callable[[], bool] | None = None) -> Iterator[dict]:
        """Like api.finetune_and_save with the default settings, in this process, as train() is."""
        teach = {"base": str(base), "images": examples.images.tolist(), "labels": examples.labels.tolist()}
        return self._job({"teach": teach, "out": str(out)}, should_stop)

    def _job(self, job: dict, should_stop: Callable[[], bool] | None) -> Iterator[dict]:
        proc = self.start()
        proc.stdin.write(json.dumps(job) + "\n")
        stopping = False
        try:
            for line in proc.stdout:
                record = json.loads(line)
                if record["kind"] == "end":
                    return
                if record["kind"] == "error":
                    raise _as_exception(record)
                yield record
                if not stopping and should_stop is not None and should_stop():
                    self._stop(proc)
                    stopping = True
            log.error("training process ended with exit code %s", proc.wait())
            raise WorkerError("the training process stopped unexpectedly (it may have run out of memory); "
                              "this run is lost, and the next one starts a fresh process")
        except GeneratorExit:  # finish the run (it saves the best model so far) before the next job can start
            if not stopping:
                self._stop(proc)
            for line in proc.stdout:
                if json.loads(line)["kind"] in ("end", "error"):
                    break
            raise

    @staticmethod
    def _stop(proc: subprocess.Popen) -> None:
        try:
            proc.stdin.write(json.dumps(STOP) + "\n")
        except BrokenPipeError:  # already gone: the read loop reports how it ended
            pass


def _as_exception(record: dict) -> Exception:
    """Errors a person can act on keep their type across the pipe; anything else is logged and told plainly."""
    cls = user_error_types().get(record["type"])
    if cls is not None:
        return cls(record["message"])
    log.error("training failed in the training process: %s: %s", record["type"], record["message"])
    return WorkerError("training failed because of an unexpected problem in the training process (the details "
                       "are in the server's log); the next run starts normally")


if __name__ == "__main__":
    # Requests first: at a lower priority, training yields a core the moment the server has work, so classification
    # stays quick while a run goes on. A busy server then starves one of training's threads now and then, which is
    # why runs here adapt their thread count (train.ThreadGovernor).
    if hasattr(os, "nice"):
        os.nice(NICE)
    records = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything else printed (a download's progress, a library's warning) goes to stderr
    serve(sys.stdin, records, *sys.argv[1:2])
