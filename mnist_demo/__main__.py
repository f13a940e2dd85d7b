"""Command line: python -m mnist_demo {list,train,finetune,evaluate,predict}."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

from . import api
from .data import DATA_ENV
from .errors import UserError
from .examples import from_csv
from .finetune import FinetuneConfig, describe_cost
from .preprocess import ImageError
from .train import OPTIMIZERS, SCHEDULES, TrainConfig
from .turns import describe


def _cmd_list(args) -> None:
    rows = api.list_architectures()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(f"{r['name']:<16} {r['params']:>9,} params  {r['description']}")


def _follow(records: Iterator[dict], val: str = "val acc") -> dict:
    """Show a run's step and epoch records as a progress bar on stderr; return its 'saved' record."""
    from tqdm import tqdm

    bar = None
    result = None
    for rec in records:
        if rec["kind"] == "step":
            bar = bar or tqdm(total=rec["steps"], unit="step", dynamic_ncols=True, file=sys.stderr)
            bar.n = rec["step"]
            bar.set_postfix(loss=f"{rec['loss']:.3f}", img_s=f"{rec['images_per_s']:.0f}")
        elif rec["kind"] == "epoch":
            if bar:
                bar.write(f"epoch {rec['epoch']}: train acc {rec['train_acc']:.4f}, {val} {rec['val_acc']:.4f}")
        elif rec["kind"] == "saved":
            result = rec
    if bar:
        bar.n = bar.total
        bar.close()
    return result


def _cmd_train(args) -> None:
    overrides = {f.name: getattr(args, f.name, None) for f in fields(TrainConfig)}
    cfg = api.make_config(**overrides)
    result = _follow(api.train_and_save(cfg, out=args.out))
    m = result["metrics"]
    print(f"{cfg.arch} on {cfg.dataset}: test accuracy {m['test_accuracy']:.4f}, test loss {m['test_loss']:.4f}, "
          f"{result['train_time_s']:.1f} s on {result['device']} → {result['path']}")


def _cmd_finetune(args) -> None:
    cfg = FinetuneConfig(**{k: v for k, v in (("epochs", args.epochs), ("device", args.device)) if v is not None})
    result = _follow(api.finetune_and_save(args.base, from_csv(args.examples), cfg, out=args.out),
                     val="your examples")
    m = result["metrics"]
    print(f"{result['base']} taught {m['examples']} examples: it reads {m['examples_accuracy_before']:.0%} → "
          f"{m['examples_accuracy_after']:.0%} of them; MNIST test accuracy {m['test_accuracy_before']:.2%} → "
          f"{m['test_accuracy']:.2%}; {result['train_time_s']:.1f} s on {result['device']} → {result['path']}")
    for said in (describe(result["turned"], result["turned_images"]), describe_cost(m, result["classes"])):
        if said:
            print(said)


def _cmd_evaluate(args) -> None:
    report = api.evaluate_checkpoint(args.checkpoint, dataset=args.dataset)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['arch']} on {report['dataset']}: test accuracy {report['test_accuracy']:.4f}, "
              f"test loss {report['test_loss']:.4f} ({report['n']} images)")


def _cmd_predict(args) -> None:
    clf = api.load_classifier(args.checkpoint)
    for path in args.images:
        try:
            pred = clf.predict(path)
        except ImageError as exc:
            raise ImageError(f"{path}: {exc}") from None
        probs = None if pred.probabilities is None else [round(float(p), 6) for p in pred.probabilities]
        if args.json:
            print(json.dumps({"path": path, "label": pred.label, "probabilities": probs}))
        elif pred.label is None:
            print(f"{path}: blank ({pred.message})")
        else:
            print(f"{path}: {pred.label} ({pred.confidence:.1%})")


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("finetune", help="teach a checkpoint someone's handwriting from their labelled examples")
    s.add_argument("base", help="the checkpoint to start from (.safetensors)")
    s.add_argument("--examples", required=True, help="a CSV in the tutorial's format: label, pixel0 … pixel783")
    s.add_argument("--out", help=f"checkpoint path (default: runs/<base>{api.TAUGHT_SUFFIX}.safetensors)")
    s.add_argument("--epochs", type=int, help=f"passes over the examples (default {FinetuneConfig.epochs})")
    s.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    s.set_defaults(func=_cmd_finetune)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mnist_demo", description="Train and use MNIST classifiers.")
    p.add_argument("--data-dir", help=f"where datasets live (default: ${DATA_ENV} or ./data)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("list", help="list architectures")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_list)

    d = TrainConfig()
    s = sub.add_parser("train", help="train a model and save a checkpoint")
    s.add_argument("--arch", default=d.arch)
    s.add_argument("--dataset", help="mnist, fashion-mnist or a CSV path (default: mnist)")
    s.add_argument("--epochs", type=int)
    s.add_argument("--batch-size", type=int)
    s.add_argument("--optimizer", choices=OPTIMIZERS)
    s.add_argument("--lr", type=float)
    s.add_argument("--schedule", choices=SCHEDULES)
    s.add_argument("--weight-decay", type=float)
    s.add_argument("--label-smoothing", type=float)
    s.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    s.add_argument("--seed", type=int)
    s.add_argument("--subset", type=int, help="use only this many training samples (before the validation split)")
    s.add_argument("--val-fraction", type=float)
    s.add_argument("--overfit", type=int, help="sanity check: train on the first N samples only")
    s.add_argument("--augment", action="store_true", default=None)
    s.add_argument("--clean-tail", type=float, help="with --augment, the last fraction of epochs trains unwarped")
    s.add_argument("--out", help="checkpoint path (default: runs/<arch>-<dataset>-<time>.safetensors)")
    s.set_defaults(func=_cmd_train)

    _add_finetune(sub)

    s = sub.add_parser("evaluate", help="evaluate a checkpoint on a test set")
    s.add_argument("checkpoint")
    s.add_argument("--dataset", help="default: the checkpoint's own dataset")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("predict", help="classify image files")
    s.add_argument("checkpoint")
    s.add_argument("images", nargs="+")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_predict)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.data_dir:
        os.environ[DATA_ENV] = str(Path(args.data_dir))
    try:
        args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
