"""Training as a generator of progress records, and evaluation on a test split."""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .data import Dataset, Split, load_dataset, to_float, train_val_split
from .errors import UserError
from .models import create_model, model_names
from .watch import WATCH_INTERVAL_S, Drawing, Watch, drawing_tensor

OPTIMIZERS = ("sgd", "sgd-momentum", "adam", "adadelta")
SCHEDULES = ("none", "one-cycle", "step")
MAX_EPOCHS = 100
MAX_BATCH = 8192
MISTAKES_KEPT = 40  # the most confident test mistakes a report carries, images included
AUGMENT_CHUNK = 4096  # images warped at once: bounds the sampling grid's memory (~25 MB)


class ConfigError(UserError, ValueError):
    """A training setting a person typed is out of range; the message says which and why."""


class TrainingDiverged(UserError, RuntimeError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainConfig:
    # One readable block of hyperparameters; the defaults are the fast `cnn` recipe (about 99% in one epoch).
    arch: str = "cnn"
    dataset: str = "mnist"
    epochs: int = 1
    batch_size: int = 64
    optimizer: str = "sgd-momentum"
    lr: float = 0.05
    schedule: str = "one-cycle"
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    augment: bool = False
    clean_tail: float = 0.0  # with augment, this last fraction of the epochs trains on unwarped images
    subset: int | None = None  # take this many samples of the training pool before the split
    val_fraction: float = 1 / 6  # 60,000 → 50,000 train / 10,000 validation
    overfit: int | None = None  # debugging mode: train and judge on the first N training samples only
    seed: int = 0
    device: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def for_arch(cls, arch: str = "cnn", **overrides) -> TrainConfig:
        """The tuned recipe for an architecture on the device it will train on, with any overrides applied (None
        values ignored)."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        base = dict(RECIPES.get(arch, {}), arch=arch)
        if on_cuda(overrides.get("device", cls.device)):
            base.update(CUDA_RECIPES.get(arch, {}))
        return cls(**{**base, **overrides})


# Per-architecture hyperparameters, tuned on MNIST's 50k/10k split; every other field keeps the defaults above.
_ADAM = dict(batch_size=128, optimizer="adam", lr=3e-3, weight_decay=1e-4, label_smoothing=0.0)
RECIPES: dict[str, dict] = {
    "logreg": dict(_ADAM, epochs=10, weight_decay=0.0),
    "mlp-50-20": dict(_ADAM, epochs=40, augment=True),  # too small to pass 97.8% without augmentation
    "mlp-128-64": dict(_ADAM, epochs=20),
    "mlp-392-196-98": dict(_ADAM, epochs=20),
    "cnn-examples": dict(epochs=4),
    # One epoch on 59,000 images: the 1,000-image validation pass costs ~0.1 s where 10,000 cost ~0.6 s, and the extra
    # 9,000 training images kept 99.1% for the leaner cnn.
    "cnn": dict(epochs=1, val_fraction=1 / 60),
    # The best recipe (99.7% in ~4 minutes on 2 CPU cores): 59,000 training images, batch 128, 30 augmented epochs
    # of which the last 3 see unwarped images, like the test set.
    "cnn-deep": dict(epochs=30, batch_size=128, augment=True, clean_tail=0.1, val_fraction=1 / 60),
}
# On a CUDA GPU a step costs about the same at batch 128 and 512 (~2 ms on an H100, mostly the graphs' replay), so
# the CNNs take fewer, larger steps there: `cnn` ~99.2% in 0.8 s, `cnn-deep` ~99.7% in ~12 s (its CPU recipe took
# 31 s for 99.58%). These replace the fields they name in the recipes above.
CUDA_RECIPES: dict[str, dict] = {
    "cnn": dict(epochs=4, batch_size=512, lr=0.3),
    "cnn-deep": dict(epochs=50, batch_size=512, lr=0.2),
}


def on_cuda(device: str) -> bool:
    """Whether a device setting means a CUDA GPU; without checking that it exists (validate does that)."""
    return str(device).startswith("cuda") or (device == "auto" and resolve_device("auto").type == "cuda")


def available_devices() -> list[str]:
    """The device choices that exist on this machine, 'auto' first."""
    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if name not in available_devices():
        have = ", ".join(available_devices())
        raise ConfigError(f"device {name!r} is not available on this machine (available: {have})")
    return torch.device(name)


def validate(cfg: TrainConfig, pool_size: int | None = None) -> None:
    """Raise ConfigError with a plain message for any setting that cannot work."""
    def bad(msg: str):
        raise ConfigError(msg)

    if cfg.arch not in model_names():
        bad(f"unknown architecture {cfg.arch!r}; choose one of: {', '.join(model_names())}")
    if cfg.optimizer not in OPTIMIZERS:
        bad(f"unknown optimizer {cfg.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
    if cfg.schedule not in SCHEDULES:
        bad(f"unknown schedule {cfg.schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    for name, value, hi in (("epochs", cfg.epochs, MAX_EPOCHS), ("batch size", cfg.batch_size, MAX_BATCH)):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= hi:
            bad(f"{name} must be a whole number from 1 to {hi}, got {value!r}")
    if not isinstance(cfg.lr, (int, float)) or not math.isfinite(cfg.lr) or cfg.lr <= 0:
        bad(f"learning rate must be a positive finite number, got {cfg.lr!r}")
    if not math.isfinite(cfg.weight_decay) or cfg.weight_decay < 0:
        bad(f"weight decay must be ≥ 0, got {cfg.weight_decay!r}")
    if not 0 <= cfg.label_smoothing < 1:
        bad(f"label smoothing must be in [0, 1), got {cfg.label_smoothing!r}")
    if not 0 <= cfg.clean_tail <= 1:
        bad(f"clean tail must be a fraction of the epochs from 0 to 1, got {cfg.clean_tail!r}")
    if not 0 < cfg.val_fraction < 1:
        bad(f"validation fraction must be between 0 and 1, got {cfg.val_fraction!r}")
    for name, value in (("subset (training images)", cfg.subset), ("overfit", cfg.overfit)):
        if value is not None:
            if not isinstance(value, int) or value < 2:
                bad(f"{name} must be a whole number ≥ 2, got {value!r}")
            if pool_size is not None and value > pool_size:
                bad(f"{name} {value} is larger than the dataset ({pool_size} training samples)")
    resolve_device(cfg.device)


@dataclass(frozen=True)
class Warp:
    """How far augment_batch may warp each image, drawn uniformly within ±: rotation in degrees, scale, shift in
    pixels, horizontal shear, and a change of aspect (wider or taller)."""

    rotate: float = 10.0
    scale: float = 0.1
    shift: float = 2.5
    shear: float = 0.0
    aspect: float = 0.0


TRAIN_WARP = Warp()


# One batch-wide random affine warp: cheap on CPU and GPU alike, no per-sample loop.
def augment_batch(x: torch.Tensor, generator: torch.Generator | None = None, warp: Warp = TRAIN_WARP) -> torch.Tensor:
    n = x.shape[0]
    rand = torch.rand(n, 4, generator=generator, device=x.device) * 2 - 1
    angle, scale = rand[:, 0] * math.radians(warp.rotate), 1 + rand[:, 1] * warp.scale
    shift = rand[:, 2:] * (warp.shift / 14)  # in grid units
    # Without shear or aspect no more numbers are drawn than before they existed: a seed still gives the same model.
    skewed = warp.shear or warp.aspect
    skew = torch.rand(n, 2, generator=generator, device=x.device) * 2 - 1 if skewed else torch.zeros_like(rand[:, 2:])
    shear, aspect = skew[:, 0] * warp.shear, 1 + skew[:, 1] * warp.aspect
    sx, sy, cos, sin = scale * aspect, scale / aspect, torch.cos(angle), torch.sin(angle)
    # Output to input coordinates: rotation · shear · diag(1/sx, 1/sy); without shear or aspect, a scaled rotation.
    theta = torch.stack([torch.stack([cos / sx, (cos * shear - sin) / sy, shift[:, 0]], 1),
                         torch.stack([sin / sx, (sin * shear + cos) / sy, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # The background of a normalised image is its minimum, so pad with that instead of zero.
    lo = x.amin()
    return F.grid_sample(x - lo, grid, align_corners=False, padding_mode="zeros") + lo


# make_graphed_callables warms up on a side stream, so autograd notes a stream mismatch on every graphed run;
# the resulting wait is cheap. The graphed backward's first cuBLAS call also finds its thread without a CUDA context
# and sets it. Neither is something a user did or can act on, so neither should print a warning.
warnings.filterwarnings("ignore", message="The AccumulateGrad node's stream does not match")
warnings.filterwarnings("ignore", message="Attempting to run cuBLAS, but there was no current CUDA context")


class _Forward(nn.Module):
    """A wrapper to graph, so that the model itself (copied for best_model, used in evaluation) stays eager."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def cuda_graphed(model: nn.Module, sample: torch.Tensor) -> nn.Module:
    """The model's training forward and backward, each replayed as one CUDA graph.

    Launching this small network's ~100 kernels one by one costs ~3 ms of CPU time per step, far more than the
    GPU needs to run them; a graph launches them all at once. Batches must keep the sample's shape.
    """
    return torch.cuda.make_graphed_callables(_Forward(model).train(), (sample,))


def native_bf16(device: torch.device) -> bool:
    """Whether training runs its forward passes in bfloat16 autocast (weights and optimizer stay float32).

    It pays on CPUs with native bf16 instructions: convolutions ran 1.5× faster on a Zen 5 core. Elsewhere bf16 is
    emulated and slow. On a GPU, float32 convolutions already use TF32 tensor cores, and bf16 did not pay for these
    small models: `cnn`'s first convolution's weight gradient ran 3.5× slower in bf16 (H100, batch 512).
    """
    # oneDNN limited below AVX-512 bf16 (ONEDNN_MAX_CPU_ISA=AVX2, as on many laptops) would emulate bf16: keep it off.
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    isa_has_bf16 = isa == "ALL" or "BF16" in isa or "AMX" in isa
    return device.type == "cpu" and isa_has_bf16 and torch.cpu._is_avx512_bf16_supported()


class ThreadGovernor:
    """Switches CPU training between all intra-op threads and one, whichever is faster at the moment.

    When other processes keep the cores busy (the app's server answering requests), an OpenMP thread that loses its
    core stalls its siblings at the end of every op: with 20 clients classifying back to back on 2 cores, two
    threads trained ~8× slower than alone and one thread ~3× slower, while alone two threads are ~1.6× faster than
    one. So one thread is tried for a window after a window with all threads below `drop` of the best speed seen,
    and now and then regardless (every `probe_s`: a run that starts beside a busy server never sees its best
    speed); all threads are tried again every `retry_s`. After a trial the faster setting stays: a dip that one
    thread would not have beaten (the server's own short bursts) costs one window, not `retry_s` on one thread.
    """

    def __init__(self, window_s: float = 0.5, retry_s: float = 5.0, drop: float = 0.6, probe_s: float = 10.0,
                 clock: Callable[[], float] = time.perf_counter):
        self.full = torch.get_num_threads()
        self.window_s, self.retry_s, self.drop, self.probe_s, self.clock = window_s, retry_s, drop, probe_s, clock
        self.best = 0.0  # images/s with all threads
        self.rates: dict[int, float] = {}  # images/s in the latest window with each thread count
        self.trial = False  # the window now running tries the other thread count
        self.switched = clock()
        self.restart()

    def restart(self) -> None:
        """Open a new window: called where steps resume after other work (validation, warping an epoch)."""
        self.started, self.images = self.clock(), 0

    def step(self, images: int) -> None:
        self.images += images
        now = self.clock()
        if now - self.started < self.window_s:
            return
        threads, rate = torch.get_num_threads(), self.images / (now - self.started)
        self.rates[threads] = rate
        other = 1 if threads == self.full else self.full
        if self.trial:
            self.trial = False
            if rate < self.rates.get(other, 0.0):
                self._use(other, now)
        elif threads == self.full:
            self.best = max(self.best, rate)
            if rate < self.drop * self.best or now - self.switched >= self.probe_s:
                self._use(1, now, trial=True)
        elif now - self.switched >= self.retry_s:
            self._use(self.full, now, trial=True)
        self.restart()

    def _use(self, threads: int, now: float, trial: bool = False) -> None:
        torch.set_num_threads(threads)
        self.switched, self.trial = now, trial

    def close(self) -> None:
        torch.set_num_threads(self.full)


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params, wd = model.parameters(), cfg.weight_decay
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=wd)
    if cfg.optimizer == "sgd-momentum":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=wd)
    if cfg.optimizer == "adam":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=wd)
    return torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=wd)


def make_schedule(cfg: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int):
    if cfg.schedule == "one-cycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                   pct_start=0.25)
    if cfg.schedule == "step":  # the PyTorch example's StepLR(gamma=0.7), stepped per epoch
        return torch.optim.lr_scheduler.StepLR(opt, step_size=steps_per_epoch, gamma=0.7)
    return None


class Run(Protocol):
    """Something that trains as it is iterated, counting its steps: a TrainingRun, or finetune's Teaching."""

    steps_done: int

    def __iter__(self) -> Iterator[dict]: ...


def run_then_finish(run: Run, finish: Callable[[bool], dict],
                    should_stop: Callable[[], bool] | None = None) -> Iterator[dict]:
    """Yield a run's records, then `finish(stopped)`'s record. Stopping (should_stop, or closing the generator) ends
    the run after the current record and still finishes it, unless no step had ended yet."""
    stopped = False
    try:
        for record in run:
            yield record
            if should_stop is not None and should_stop():
                stopped = True
                break
    except GeneratorExit:
        if run.steps_done:
            finish(True)
        raise
    if run.steps_done:
        yield finish(stopped)


@dataclass
class TrainingRun:
    """Iterate it to train; close the iterator to stop. `best_model()` then holds the best weights so far."""

    cfg: TrainConfig
    dataset: Dataset | None = None
    record_interval_s: float = 0.25  # a step record at least this often, ...
    records_per_epoch: int = 50  # ... and at least this many per epoch, so fast runs still draw a curve
    history: list[dict] = field(default_factory=list)
    # Let a ThreadGovernor pick the CPU thread count, as the app's training process does. Off by default: a thread
    # count that follows the machine's load changes float sums, and the same seed should give the same model.
    adapt_threads: bool = False
    # The run's current guesses on a fixed grid of test digits, and its probabilities for `drawing` (28×28 floats in
    # [0, 1]), travel in a 'watch' record at the start and then as the 'snapshot' of step and epoch records.
    watch: bool = False  # the app's training process turns it on; the CLI and the Python API have no use for it
    drawing: Drawing | None = None
    watch_interval_s: float = WATCH_INTERVAL_S
    device: torch.device = field(init=False)
    model: nn.Module = field(init=False)
    bf16: bool = field(init=False)
    _best: tuple[float, dict] | None = field(default=None, init=False)
    elapsed_s: float = field(default=0.0, init=False)
    steps_done: int = field(default=0, init=False)

    def __post_init__(self):
        validate(self.cfg)
        self.dataset = self.dataset or load_dataset(self.cfg.dataset)
        validate(self.cfg, pool_size=len(self.dataset.train))
        self.device = resolve_device(self.cfg.device)
        if self.drawing is not None:
            self.drawing = drawing_tensor(self.drawing)
        torch.manual_seed(self.cfg.seed)
        # NHWC convolutions run ~1.5× faster on CPU (oneDNN) and on a GPU; a no-op for the MLPs.
        self.model = create_model(self.cfg.arch).to(self.device, memory_format=torch.channels_last)
        self.bf16 = native_bf16(self.device)

    @property
    def device_label(self) -> str:
        """The device, and the precision when it is not plain float32: 'cpu, bf16 autocast'."""
        return f"{self.device}, bf16 autocast" if self.bf16 else str(self.device)

    def splits(self) -> tuple[Split, Split]:
        cfg, pool = self.cfg, self.dataset.train
        if cfg.overfit:
            head = pool.take(slice(0, cfg.overfit))
            return head, head
        return train_val_split(pool, cfg.val_fraction, cfg.subset, cfg.seed)

    def __iter__(self) -> Iterator[dict]:
        adapt = self.adapt_threads and self.device.type == "cpu" and torch.get_num_threads() > 1
        governor = ThreadGovernor() if adapt else None
        try:
            yield from self._train(governor)
        finally:
            if governor:
                governor.close()

    def _train(self, governor: ThreadGovernor | None) -> Iterator[dict]:
        cfg, dev, model = self.cfg, self.device, self.model
        train_split, val_split = self.splits()
        norm = self.dataset.normalisation
        # The whole split lives on the device and batches are slices of it, so no loader runs per sample.
        x_train = to_float(train_split.images.to(dev), norm).contiguous(memory_format=torch.channels_last)
        y_train = train_split.labels.to(dev)
        g = torch.Generator(device=dev).manual_seed(cfg.seed)
        n, bs = len(y_train), min(cfg.batch_size, len(y_train))
        steps_per_epoch = n // bs  # drop the ragged last batch: BatchNorm dislikes a batch of one
        opt = make_optimizer(cfg, model)
        loop = _Loop(forward=cuda_graphed(model, x_train[:bs]) if dev.type == "cuda" else model, opt=opt,
                     sched=make_schedule(cfg, opt, steps_per_epoch), batch=bs, steps_per_epoch=steps_per_epoch,
                     log=_StepLog(cfg.epochs * steps_per_epoch, bs, max(1, steps_per_epoch // self.records_per_epoch),
                                  self.record_interval_s), governor=governor,
                     watch=Watch(self.dataset, self.drawing, dev, self.watch_interval_s) if self.watch else None)
        if loop.watch:
            yield loop.watch.start(model)
        warped_epochs = cfg.epochs - int(cfg.epochs * cfg.clean_tail) if cfg.augment else 0
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            # Shuffle (and warp) the whole epoch up front, so that each batch is a plain slice: a few large
            # operations per epoch instead of several small ones per step.
            perm = torch.randperm(n, generator=g, device=dev)
            x_epoch, y_epoch = x_train[perm], y_train[perm]
            if epoch <= warped_epochs:
                x_epoch = torch.cat([augment_batch(chunk, g) for chunk in x_epoch.split(AUGMENT_CHUNK)])
            totals = yield from self._epoch(epoch, x_epoch, y_epoch, loop)
            record = self._end_epoch(epoch, totals, val_split, loop.log)
            if loop.watch:
                record["snapshot"] = loop.watch.snapshot(model, self.steps_done, record["elapsed_s"])
            yield record
        self.elapsed_s = loop.log.elapsed()
        done = {"kind": "done", "epochs": len(self.history), "elapsed_s": self.elapsed_s}
        if cfg.overfit:  # the "validation" split is the same N images here, scored in eval mode
            done["overfit_passed"] = self.history[-1]["val_acc"] == 1.0
        yield done

    def _epoch(self, epoch: int, x_epoch: torch.Tensor, y_epoch: torch.Tensor, loop: _Loop):
        """One epoch's steps, yielding step records; returns (loss sum, correct, images seen) for the epoch."""
        cfg, bs, log = self.cfg, loop.batch, loop.log
        amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)
        if loop.governor:
            loop.governor.restart()
        loss_sum, correct = torch.zeros((), device=self.device), torch.zeros((), device=self.device)
        seen = 0
        for i in range(loop.steps_per_epoch):
            xb, yb = x_epoch[i * bs:(i + 1) * bs], y_epoch[i * bs:(i + 1) * bs]
            with amp:
                logits = loop.forward(xb).float()
            loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
            loop.opt.zero_grad(set_to_none=True)
            loss.backward()
            loop.opt.step()
            if loop.sched is not None:
                loop.sched.step()
            self.steps_done += 1
            if loop.governor:
                loop.governor.step(len(yb))
            loss_sum += loss.detach() * len(yb)
            correct += (logits.argmax(1) == yb).sum()
            seen += len(yb)
            last = i == loop.steps_per_epoch - 1
            now = log.after_step(self.steps_done, epoch, i, last, seen, loss, loss_sum, correct)
            if log.flush_due(now, last):
                self.elapsed_s = now
                if loop.watch and not last and loop.watch.due(now):  # the epoch's end takes its own snapshot
                    log.pending[-1][0]["snapshot"] = loop.watch.snapshot(self.model, self.steps_done, now)
                yield from _step_records(log.take(now), cfg)
        return loss_sum, correct, seen

    def _end_epoch(self, epoch: int, totals: tuple, val_split: Split, log: _StepLog) -> dict:
        """Validate, keep the best weights so far, and make the epoch's record."""
        loss_sum, correct, seen = totals
        val = evaluate(self.model, val_split, self.dataset.normalisation, self.device, details=False)
        record = {"kind": "epoch", "epoch": epoch, "step": self.steps_done, "steps": log.total,
                  "train_loss": float(loss_sum) / seen, "train_acc": float(correct) / seen,
                  "val_loss": val["loss"], "val_acc": val["accuracy"], "elapsed_s": log.elapsed()}
        self.history.append(record)
        if self._best is None or val["accuracy"] >= self._best[0]:
            self._best = (val["accuracy"], {k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return record

    def best_model(self) -> nn.Module:
        """A copy of the model with the best validation weights so far (the current ones before any epoch ended)."""
        best = copy.deepcopy(self.model)
        if self._best is not None:
            best.load_state_dict(self._best[1])
        if not all(torch.isfinite(p).all() for p in best.state_dict().values() if p.is_floating_point()):
            raise TrainingDiverged("the model has non-finite weights; nothing to keep")
        return best.eval()


@dataclass
class _Loop:
    """What every step of a run uses."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    opt: torch.optim.Optimizer
    sched: object | None
    batch: int
    steps_per_epoch: int
    log: _StepLog
    governor: ThreadGovernor | None
    watch: Watch | None


class _StepLog:
    """Which steps become progress records, and when their statistics are read back from the device.

    Statistics stay on the device until a flush (every `interval` seconds and at each epoch end): reading them back
    every step would make a GPU wait for each step before launching the next.
    """

    def __init__(self, total: int, batch: int, every: int, interval: float) -> None:
        self.total, self.batch, self.every, self.interval = total, batch, every, interval
        self.start = time.perf_counter()
        self.last_sample = self.last_flush = 0.0
        self.pending: list[tuple[dict, torch.Tensor]] = []
        self.paced_from: tuple[float, int] | None = None  # (time, step) of the first record

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def after_step(self, step: int, epoch: int, i: int, last: bool, seen: int, loss: torch.Tensor,
                   loss_sum: torch.Tensor, correct: torch.Tensor) -> float:
        """Sample this step as a record if one is due (by time, or every `every` steps, or the epoch's last)."""
        now = self.elapsed()
        if now - self.last_sample >= self.interval or (i + 1) % self.every == 0 or last:
            self.last_sample = now
            # The first step carries one-off costs (threads starting, kernels being chosen): the time left is
            # paced from the first record on, so the first record has none (it said 6:19 for a 10 s run).
            t0, s0 = self.paced_from = self.paced_from or (now, step)
            eta = (self.total - step) * (now - t0) / (step - s0) if step > s0 else None
            self.pending.append(({"kind": "step", "epoch": epoch, "step": step, "steps": self.total, "seen": seen,
                                  "images_per_s": step * self.batch / now, "eta_s": eta, "elapsed_s": now},
                                 torch.stack([loss.detach(), loss_sum, correct])))
        return now

    def flush_due(self, now: float, last: bool) -> bool:
        return bool(self.pending) and (now - self.last_flush >= self.interval or last)

    def take(self, now: float) -> list[tuple[dict, torch.Tensor]]:
        self.last_flush = now
        pending, self.pending = self.pending, []
        return pending


def _step_records(pending: list[tuple[dict, torch.Tensor]], cfg: TrainConfig) -> Iterator[dict]:
    """Finish the sampled step records with their statistics, read back from the device in one transfer."""
    stats = torch.stack([t for _, t in pending]).tolist()
    for (record, _), (loss, loss_sum, correct) in zip(pending, stats):
        seen = record.pop("seen")
        if not math.isfinite(loss_sum):
            raise TrainingDiverged(f"training diverged at step {record['step']} (loss is {loss_sum / seen}); "
                                   f"try a lower learning rate than {cfg.lr:g}")
        yield {**record, "loss": loss, "train_loss": loss_sum / seen, "train_acc": correct / seen}


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, normalisation: tuple[float, float],
             device: torch.device | str = "cpu", batch_size: int | None = None, details: bool = True) -> dict:
    """Loss and accuracy on a split; with details, also per-class accuracy, the confusion matrix and mistakes."""
    device = torch.device(device)
    # A CPU evaluates `cnn` 3× faster in batches of 128 than of 2,000, whose activations overflow its caches.
    batch_size = batch_size or (2000 if device.type == "cuda" else 128)
    was_training = model.training
    model.eval()
    losses, probs = [], []
    for i in range(0, len(split), batch_size):
        x = to_float(split.images[i:i + batch_size].to(device), normalisation)
        x = x.contiguous(memory_format=torch.channels_last)
        logits = model(x).float()
        y = split.labels[i:i + batch_size].to(device)
        losses.append(F.cross_entropy(logits, y, reduction="sum"))
        probs.append(logits.softmax(1).cpu())
    model.train(was_training)
    p = torch.cat(probs)
    pred, labels = p.argmax(1), split.labels
    out = {"loss": float(torch.stack(losses).sum()) / len(split), "accuracy": float((pred == labels).float().mean())}
    if details:
        confusion = torch.zeros(10, 10, dtype=torch.long)
        confusion.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
        per_class = confusion.diag() / confusion.sum(1).clamp(min=1)
        wrong = torch.nonzero(pred != labels).flatten()
        conf = p[wrong, pred[wrong]]
        worst = wrong[conf.argsort(descending=True)[:MISTAKES_KEPT]]
        out.update({
            "per_class_accuracy": [round(float(a), 6) for a in per_class],
            "confusion": confusion.tolist(),
            "errors": len(wrong),
            # The most confident mistakes travel with their images, so no one loads the dataset again to show them.
            "mistakes": [{"index": int(i), "true": int(labels[i]), "predicted": int(pred[i]),
                          "confidence": float(p[i, pred[i]]), "image": split.images[i].tolist()} for i in worst],
            "predicted": pred.tolist(),
            "true": labels.tolist(),
        })
    return out
