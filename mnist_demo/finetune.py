"""Fine-tuning a checkpoint on a person's examples, with replayed training images so it does not forget."""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .data import CLASS_NAMES, Dataset, Split, load_dataset, to_float
from .examples import ExamplesError, check_room, label_index, no_examples
from .train import (
    MAX_EPOCHS,
    ConfigError,
    TrainingDiverged,
    Warp,
    augment_batch,
    evaluate,
    native_bf16,
    resolve_device,
    run_then_finish,
)
from .turns import Turn, find, turned_digits

DIGITS = CLASS_NAMES["mnist"]
REPLAY_DATASET = "mnist"
# A real digit whose MNIST test accuracy fell by this much is named in the outcome: ~10 of its ~1,000 test images.
# Drawing one digit in a way that looks like another (2s and 5s flipped top to bottom) costs that other 1-2 points.
COSTLY = 0.01
# Ten drawings are few: each view of one is warped further than training warps MNIST, shear and aspect included.
# Taught with training's warp, the taught model read 86-88% of a mirrored style's held-out drawings; with this one,
# 96-97% (benchmarks/teach.py, two seeds, 10 epochs).
WARP = Warp(rotate=20, scale=0.15, shift=3, shear=0.5, aspect=0.25)


@dataclass(frozen=True)
class FinetuneConfig:
    # One readable block of hyperparameters, tuned with benchmarks/teach.py (benchmarks/README.md says how).
    epochs: int = 15  # passes over the examples, each at least `epoch_views` example images long
    epoch_views: int = 160  # few examples are repeated within an epoch, each time under a fresh random warp
    examples_per_batch: int = 16
    # Where a person draws a digit turned or mirrored (turns.find), ten drawings cannot show every way to write it,
    # but MNIST can: this many of its training images of that digit, turned the same way, join every batch, and an
    # epoch is longer, as there is more to learn.
    turned: int = 16
    turned_epoch_views: int = 432
    replay: int = 4  # MNIST training images per new image in every batch, so the model keeps what it knew
    # SGD with Nesterov momentum 0.9, falling along a half cosine to 0 (label smoothing: the base's own recipe's).
    # A higher start and the fall cost MNIST less: 2s and 5s flipped top to bottom -0.13 to -0.25 points where a
    # constant 0.01 cost -0.27 to -0.58 (six draws each); the other styles cost 0.00-0.14, about what they did.
    lr: float = 0.06
    augment: bool = True  # warp every view of an example afresh (WARP, through train.augment_batch) ...
    # ... except in this share of the epochs, the last, where no turned digit was found: warping blurs a drawing's
    # texture (0s and 8s drawn in dots read 82-96% with it, 88-100% with this tail). Where turned MNIST digits carry
    # the shape, unwarped examples at the end cost MNIST more (flipped 2s and 5s -0.22 to -0.39 points).
    clean_tail: float = 0.2
    seed: int = 0
    device: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)


def validate(cfg: FinetuneConfig) -> None:
    """Raise ConfigError with a plain message for any setting that cannot work."""
    for name, value, lo, hi in (("epochs", cfg.epochs, 1, MAX_EPOCHS), ("epoch views", cfg.epoch_views, 1, 100_000),
                                ("examples per batch", cfg.examples_per_batch, 1, 1024),
                                ("turned", cfg.turned, 0, 1024),
                                ("turned epoch views", cfg.turned_epoch_views, 1, 100_000),
                                ("replay", cfg.replay, 0, 64)):
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise ConfigError(f"{name} must be a whole number from {lo} to {hi}, got {value!r}")
    if not isinstance(cfg.lr, (int, float)) or not math.isfinite(cfg.lr) or cfg.lr <= 0:
        raise ConfigError(f"learning rate must be a positive finite number, got {cfg.lr!r}")
    if not isinstance(cfg.clean_tail, (int, float)) or isinstance(cfg.clean_tail, bool) or not 0 <= cfg.clean_tail <= 1:
        raise ConfigError(f"clean tail must be a share of the epochs from 0 to 1, got {cfg.clean_tail!r}")
    resolve_device(cfg.device)


def check_examples(examples: Split) -> None:
    """Examples that teaching can use: some, within the session's limit, digits 0–9, at least two different ones."""
    if not len(examples):
        raise ExamplesError(no_examples("teach"))
    check_room(len(examples))
    for label in examples.labels.unique().tolist():
        label_index(label, DIGITS)
    if examples.images.shape[1:] != (28, 28):
        raise ExamplesError(f"examples must be 28×28 images, got {tuple(examples.images.shape[1:])}")
    if len(examples.labels.unique()) < 2:
        digit = DIGITS[int(examples.labels[0])]
        raise ExamplesError(f"all your examples are {digit}s: teaching needs at least two different digits, or the "
                            f"model may learn that anything drawn like yours is a {digit}. Correct a drawing of "
                            "another digit too (one it already reads right will do).")


def load_base(path: str | os.PathLike) -> Checkpoint:
    """The model to teach: any checkpoint that reads digits (not, say, a Fashion-MNIST one)."""
    base = load_checkpoint(path)
    if base.classes != DIGITS:
        raise CheckpointError(f"{Path(path).stem} reads {base.meta.get('dataset', 'other')} classes, not digits: "
                              "teaching your handwriting needs a digit model, such as one trained on MNIST")
    return base


class Teaching:
    """Iterate it to fine-tune (step, epoch and done records, as training's); then `finish()` tests and saves.

    Everything is checked when it is made, before any training: the settings, the examples and the base model.
    An epoch record's `val_*` are the examples as drawn, unwarped; a step record's `train_acc` is the share of
    example views it answered right this epoch (the replayed images would hide it).
    """

    def __init__(self, base: str | os.PathLike, examples: Split, cfg: FinetuneConfig,
                 dataset: Dataset | None = None) -> None:
        validate(cfg)
        check_examples(examples)
        self.cfg, self.examples, self.base_name = cfg, examples, Path(base).stem
        self.base = load_base(base)
        self.dataset = dataset or load_dataset(REPLAY_DATASET)
        self.device = resolve_device(cfg.device)
        self.bf16 = native_bf16(self.device)
        # The base's own label smoothing: another one moves every logit, and a model trained without it lost points.
        self.label_smoothing = float((self.base.meta.get("config") or {}).get("label_smoothing") or 0.0)
        self.model = copy.deepcopy(self.base.model).to(self.device, memory_format=torch.channels_last)
        self.turns: dict[int, Turn] = {}
        if cfg.turned:
            self.turns = find(self.model, self.base.normalisation, examples, self.dataset.train, self.device)
        self.turned = turned_digits(self.dataset.train, self.turns)
        self.before = self._judge(details=True)
        self.steps_done, self.epochs_done, self.elapsed_s = 0, 0, 0.0

    @property
    def device_label(self) -> str:
        return f"{self.device}, bf16 autocast" if self.bf16 else str(self.device)

    @property
    def steps_per_epoch(self) -> int:
        views = self.cfg.turned_epoch_views if self.turns else self.cfg.epoch_views
        return math.ceil(max(len(self.examples), views) / self.cfg.examples_per_batch)

    @property
    def total_steps(self) -> int:
        return self.cfg.epochs * self.steps_per_epoch

    def _x(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float(images.to(self.device), self.base.normalisation)
        return x.contiguous(memory_format=torch.channels_last)

    def _judge(self, details: bool) -> dict:
        """MNIST test loss and accuracy (with details: per class, confusion, mistakes), and the answers to the
        examples as drawn (unwarped)."""
        norm = self.base.normalisation
        return {"test": evaluate(self.model, self.dataset.test, norm, self.device, details=details),
                "examples": evaluate(self.model, self.examples, norm, self.device)}

    def __iter__(self) -> Iterator[dict]:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        gens = (torch.Generator(device=self.device).manual_seed(cfg.seed), torch.Generator().manual_seed(cfg.seed))
        opt = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True)
        steps = self.total_steps  # the rate falls along a half cosine, from cfg.lr to 0 at the last step
        cosine = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: (1 + math.cos(math.pi * step / steps)) / 2)
        start = time.perf_counter()
        for epoch in range(1, cfg.epochs + 1):
            train_loss, train_acc = yield from self._epoch(epoch, cosine, gens, start)
            self.epochs_done = epoch
            mine = evaluate(self.model, self.examples, self.base.normalisation, self.device, details=False)
            yield {"kind": "epoch", "epoch": epoch, "step": self.steps_done, "steps": self.total_steps,
                   "train_loss": train_loss, "train_acc": train_acc, "val_loss": mine["loss"],
                   "val_acc": mine["accuracy"], "elapsed_s": time.perf_counter() - start}
        self.elapsed_s = time.perf_counter() - start
        yield {"kind": "done", "epochs": self.epochs_done, "elapsed_s": self.elapsed_s}

    def _batches(self, gens: tuple[torch.Generator, torch.Generator],
                 warp: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch's batches: `examples_per_batch` example views (shuffled, repeated to fill whole batches; warped
        afresh if `warp`), then `turned` MNIST images drawn the way the person turns theirs, if they do (warped afresh),
        then `replay` times as many random MNIST training images as those."""
        n, k, steps = len(self.examples), self.cfg.examples_per_batch, self.steps_per_epoch
        t = self.cfg.turned if self.turns else 0
        device_gen, cpu_gen = gens
        order = torch.cat([torch.randperm(n, generator=device_gen, device=self.device)
                           for _ in range(math.ceil(steps * k / n))])[:steps * k]
        x_mine, y_mine = self._x(self.examples.images)[order], self.examples.labels.to(self.device)[order]
        x_turned, y_turned = self._sample(self.turned, steps * t, cpu_gen)
        x_mine = augment_batch(x_mine, device_gen, WARP) if warp else x_mine
        x_turned = augment_batch(x_turned, device_gen, WARP) if t and self.cfg.augment else x_turned
        r = (k + t) * self.cfg.replay
        x_old, y_old = self._sample(self.dataset.train, steps * r, cpu_gen)
        for i in range(steps):
            yield (torch.cat([x_mine[i * k:(i + 1) * k], x_turned[i * t:(i + 1) * t], x_old[i * r:(i + 1) * r]]),
                   torch.cat([y_mine[i * k:(i + 1) * k], y_turned[i * t:(i + 1) * t], y_old[i * r:(i + 1) * r]]))

    def _sample(self, pool: Split, count: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` random images of `pool` (with replacement), ready for the model, and their labels; none of an
        empty pool."""
        index = torch.randint(len(pool), (count,), generator=gen) if count else torch.zeros(0, dtype=torch.long)
        return self._x(pool.images[index]), pool.labels[index].to(self.device)

    def _epoch(self, epoch: int, sched: torch.optim.lr_scheduler.LRScheduler, gens: tuple, start: float):
        """One epoch's steps (with `sched`'s optimizer), yielding a record after each; returns the epoch's mean loss
        and the share of example views it answered right."""
        k, opt = self.cfg.examples_per_batch, sched.optimizer
        amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)
        self.model.train()
        losses, right = [], 0
        clean = 0 if self.turns else int(self.cfg.epochs * self.cfg.clean_tail)
        for xb, yb in self._batches(gens, warp=self.cfg.augment and epoch <= self.cfg.epochs - clean):
            with amp:
                logits = self.model(xb).float()
            loss = F.cross_entropy(logits, yb, label_smoothing=self.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            self.steps_done += 1
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                raise TrainingDiverged(f"teaching diverged at step {self.steps_done}; try a lower learning rate "
                                       f"than {self.cfg.lr:g}")
            right += int((logits[:k].argmax(1) == yb[:k]).sum())
            self.elapsed_s = time.perf_counter() - start
            rate = self.steps_done * len(yb) / self.elapsed_s
            yield {"kind": "step", "epoch": epoch, "step": self.steps_done, "steps": self.total_steps,
                   "loss": losses[-1], "train_loss": sum(losses) / len(losses), "train_acc": right / (k * len(losses)),
                   "images_per_s": rate, "eta_s": (self.total_steps - self.steps_done) * len(yb) / rate,
                   "elapsed_s": self.elapsed_s}
        return sum(losses) / len(losses), right / (k * len(losses))

    def finish(self, out: str | os.PathLike, stopped: bool) -> dict:
        """Test the taught model, save it at `out` with the base's architecture, normalisation and classes, and
        return the 'saved' record: training's keys, plus the base, the count and each example's answers."""
        self.model.eval()
        before, after, n = self.before, self._judge(details=True), len(self.examples)
        metrics = {"test_accuracy": after["test"]["accuracy"], "test_loss": after["test"]["loss"],
                   "per_class_accuracy": after["test"]["per_class_accuracy"],
                   "test_accuracy_before": before["test"]["accuracy"],
                   "per_class_accuracy_before": before["test"]["per_class_accuracy"], "examples": n,
                   "examples_accuracy_before": before["examples"]["accuracy"],
                   "examples_accuracy_after": after["examples"]["accuracy"],
                   "epochs_completed": self.epochs_done, "stopped_early": stopped}
        turned = {self.base.classes[digit]: turn.name for digit, turn in sorted(self.turns.items())}
        path = save_checkpoint(self.model, out, arch=self.base.arch, dataset=self.base.meta["dataset"],
                               normalisation=self.base.normalisation, classes=self.base.classes,
                               config=self.cfg.to_dict(), metrics=metrics, train_time_s=self.elapsed_s,
                               device=self.device_label,
                               extra={"base": self.base_name, "examples": n, "turned": turned})
        taught = {"labels": self.examples.labels.tolist(), "before": before["examples"]["predicted"],
                  "after": after["examples"]["predicted"]}
        return {"kind": "saved", "path": str(path), "metrics": metrics, "evaluation": after["test"],
                "classes": self.base.classes, "train_time_s": self.elapsed_s, "device": self.device_label,
                "stopped": stopped, "base": self.base_name, "examples": n, "taught": taught,
                "turned": turned, "turned_images": len(self.turned)}


def paid(metrics: dict) -> list[tuple[int, float, float]]:
    """The real digits that teaching cost at least COSTLY of their MNIST test accuracy (as a 'saved' record's metrics
    have it): (class index, accuracy before, after)."""
    pairs = enumerate(zip(metrics["per_class_accuracy_before"], metrics["per_class_accuracy"]))
    return [(c, before, after) for c, (before, after) in pairs if before - after >= COSTLY]


def describe_cost(metrics: dict, classes: list[str]) -> str:
    """The digits that paid for teaching, in a sentence; empty if none."""
    costly = [f"{classes[c]}s ({before:.1%} → {after:.1%} read right)" for c, before, after in paid(metrics)]
    return f"It now misreads more of MNIST's own {' and '.join(costly)}." if costly else ""


def finetune(base: str | os.PathLike, examples: Split, cfg: FinetuneConfig | None = None, *,
             out: str | os.PathLike, dataset: Dataset | None = None,
             should_stop: Callable[[], bool] | None = None) -> Iterator[dict]:
    """Yield the teaching records, then one 'saved' record for the checkpoint at `out`. Any problem with the
    settings, the examples or the base raises a UserError before training, and nothing is saved. Stopping
    (should_stop, or closing the generator) keeps the model as taught so far."""
    teaching = Teaching(base, examples, cfg or FinetuneConfig(), dataset)
    yield from run_then_finish(teaching, lambda stopped: teaching.finish(out, stopped), should_stop)
