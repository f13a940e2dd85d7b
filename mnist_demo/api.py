"""The high-level Python API that the CLI and the app share: list, train-and-save, evaluate, classify."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path

import torch

from .checkpoint import NameTaken, load_checkpoint, safe_path, save_checkpoint
from .data import Dataset, Split, load_dataset
from .finetune import FinetuneConfig, finetune
from .inference import Classifier
from .models import list_models
from .train import ConfigError, TrainConfig, TrainingRun, evaluate, run_then_finish
from .watch import Drawing

RUNS_DIR_ENV = "MNIST_DEMO_RUNS"
TAUGHT_SUFFIX = "+you"  # a taught model's name: its base's, then this


def runs_dir() -> Path:
    """Where newly trained checkpoints go (the shipped ones stay in checkpoints/)."""
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs")


def serve_only() -> None:
    """Set up a process that classifies but does not train (the web app; it trains in a worker process).

    One intra-op thread: a batch of one image gains nothing from more, and extra threads would fight the training
    process for the cores.
    """
    torch.set_num_threads(1)


def list_architectures() -> list[dict]:
    return [{"name": m.name, "description": m.description, "params": m.params} for m in list_models()]


def make_config(**overrides) -> TrainConfig:
    """A TrainConfig from loosely typed values (CLI flags, UI widgets); None means 'keep the default'."""
    types = {f.name: f.type for f in fields(TrainConfig)}
    values = {}
    for name, value in overrides.items():
        if value is None:
            continue
        if name not in types:
            raise ConfigError(f"unknown setting {name!r}")
        if "int" in str(types[name]) and isinstance(value, float):
            if value != int(value):
                raise ConfigError(f"{name} must be a whole number, got {value!r}")
            value = int(value)
        values[name] = value
    return TrainConfig.for_arch(values.pop("arch", "cnn"), **values)


# The notebook's debugging advice: a model that cannot memorise a few images has a bug or a bad learning rate.
SANITY_CHECK = dict(overfit=64, epochs=30, batch_size=16, augment=False)  # 4 steps × 30 epochs memorise 64 images


def make_sanity_config(**settings) -> TrainConfig:
    """The sanity check's config: the person's model and optimizer settings on SANITY_CHECK's few images."""
    settings.pop("subset", None)
    return make_config(**{**settings, **SANITY_CHECK})


def run_config(settings: dict, sanity: bool = False) -> TrainConfig:
    """The config for /train's (or /sanity_check's) settings: dataset "csv" means the file in `csv_file`, a subset
    of 0 means all images, None means the recipe's value."""
    settings = dict(settings)
    csv_file = settings.pop("csv_file", None)
    if settings.get("dataset") == "csv":
        if not csv_file:
            raise ConfigError("Choose a CSV file first (columns: label, then 784 pixel values 0-255).")
        settings["dataset"] = str(csv_file)
    settings["subset"] = settings.get("subset") or None
    return make_sanity_config(**settings) if sanity else make_config(**settings)


def checkpoint_path(cfg: TrainConfig, folder: str | os.PathLike | None = None) -> Path:
    """Where a new run's checkpoint goes by default: <folder>/<arch>-<dataset>-<time>.safetensors, in the runs
    folder unless another is given."""
    name = f"{cfg.arch}-{Path(cfg.dataset).stem}-{time.strftime('%Y%m%d-%H%M%S')}.safetensors"
    return Path(folder or runs_dir()) / name


def _finish(run: TrainingRun, out: str | os.PathLike | None, stopped: bool) -> dict:
    """Evaluate the best model so far on the test split and save it with its metrics."""
    cfg, ds = run.cfg, run.dataset
    model = run.best_model()
    report = evaluate(model, ds.test, ds.normalisation, run.device)
    metrics = {"test_accuracy": report["accuracy"], "test_loss": report["loss"],
               "per_class_accuracy": report["per_class_accuracy"],
               "val_accuracy": run.history[-1]["val_acc"] if run.history else None,
               "epochs_completed": len(run.history), "stopped_early": stopped}
    path = Path(out) if out else checkpoint_path(cfg)
    # A CSV is named by its file name alone: an upload's temporary path means nothing later.
    dataset = Path(cfg.dataset).name if cfg.dataset.lower().endswith(".csv") else cfg.dataset
    save_checkpoint(model, path, arch=cfg.arch, dataset=dataset, normalisation=ds.normalisation,
                    classes=ds.classes, config=cfg.to_dict(), metrics=metrics, train_time_s=run.elapsed_s,
                    device=run.device_label)
    return {"kind": "saved", "path": str(path), "metrics": metrics, "evaluation": report, "classes": ds.classes,
            "train_time_s": run.elapsed_s, "device": run.device_label, "stopped": stopped}


def train_and_save(cfg: TrainConfig, out: str | os.PathLike | None = None, dataset: Dataset | None = None,
                   should_stop: Callable[[], bool] | None = None, adapt_threads: bool = False,
                   watch: bool = False, drawing: Drawing | None = None) -> Iterator[dict]:
    """Yield the training records, then one 'saved' record. Stopping (should_stop, or closing the generator)
    keeps the best model so far; divergence raises TrainingDiverged and saves nothing. With `watch`, records carry
    snapshots of the model's guesses (train.TrainingRun), and a drawing (28×28 floats in [0, 1]) its probabilities."""
    run = TrainingRun(cfg, dataset, adapt_threads=adapt_threads, watch=watch, drawing=drawing)
    yield from run_then_finish(run, lambda stopped: _finish(run, out, stopped), should_stop)


def taught_path(base: str | os.PathLike, name: str | None = None, folder: str | os.PathLike | None = None) -> Path:
    """Where a taught model goes (in `folder`, else the runs folder): <name>.safetensors for a name the person gave,
    else <base>+you, numbered (+you-2, …) rather than replacing an earlier one."""
    folder = Path(folder or runs_dir())
    if name:
        path = safe_path(name, folder)
        if path.exists():
            raise NameTaken(f"a model named {path.stem!r} exists already: choose another name")
        return path
    stem = Path(base).stem
    stem = stem if stem.endswith(TAUGHT_SUFFIX) else stem + TAUGHT_SUFFIX
    path, n = folder / f"{stem}.safetensors", 2
    while path.exists():
        path, n = folder / f"{stem}-{n}.safetensors", n + 1
    return path


def finetune_and_save(base: str | os.PathLike, examples: Split, cfg: FinetuneConfig | None = None,
                      out: str | os.PathLike | None = None, name: str | None = None, dataset: Dataset | None = None,
                      should_stop: Callable[[], bool] | None = None) -> Iterator[dict]:
    """Teach the checkpoint at `base` a person's examples (finetune.finetune): step, epoch and done records, then
    one 'saved' record. It goes to `out`, or to runs/ under `name` or as <base>+you (taught_path)."""
    path = Path(out) if out else taught_path(base, name)
    yield from finetune(base, examples, cfg, out=path, dataset=dataset, should_stop=should_stop)


def evaluate_checkpoint(path: str | os.PathLike, dataset: str | None = None) -> dict:
    ckpt = load_checkpoint(path)
    name = dataset or ckpt.meta["dataset"]
    ds = load_dataset(name)
    report = evaluate(ckpt.model, ds.test, ckpt.normalisation)
    return {"arch": ckpt.arch, "dataset": name, "test_accuracy": report["accuracy"], "test_loss": report["loss"],
            "per_class_accuracy": report["per_class_accuracy"], "n": len(ds.test)}


def load_classifier(path: str | os.PathLike) -> Classifier:
    return Classifier(load_checkpoint(path))
