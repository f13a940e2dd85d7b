"""Speed benchmarks, run by hand: the PyTorch-examples peer and this project side by side, in one invocation."""

# Writes benchmarks/results/{cpu,gpu}.{json,md}. Usage: python benchmarks/run.py [--only NAME ...]

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from mnist_demo.data import ensure_mnist, load_dataset  # noqa: E402
from mnist_demo.inference import Classifier  # noqa: E402
from mnist_demo.models import create_model, list_models  # noqa: E402
from mnist_demo.train import TrainConfig, TrainingRun, evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The recipes exactly as the app and CLI run them on each device (mnist_demo/train.py: RECIPES, CUDA_RECIPES).
FAST, BEST = TrainConfig.for_arch("cnn", device="cpu"), TrainConfig.for_arch("cnn-deep", device="cpu")
GPU_FAST, GPU_BEST = TrainConfig.for_arch("cnn", device="cuda"), TrainConfig.for_arch("cnn-deep", device="cuda")


def machine() -> str:
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}{gpu}"


def peer(max_epochs: int = 14, target: float = 0.99) -> dict:
    """pytorch/examples mnist: its CNN, Adadelta lr 1.0, StepLR(0.7), batch 64, DataLoader with ToTensor+Normalize."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    root = ensure_mnist()
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train = DataLoader(datasets.MNIST(root, train=True, transform=tf), batch_size=64, shuffle=True)
    test = DataLoader(datasets.MNIST(root, train=False, transform=tf), batch_size=1000, shuffle=False)
    torch.manual_seed(1)
    model = create_model("cnn-examples")
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    epochs, train_s = [], 0.0
    for epoch in range(1, max_epochs + 1):
        model.train()
        t0 = time.perf_counter()
        for x, y in train:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        sched.step()
        train_s += time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in test)
        acc = correct / 10_000
        epochs.append({"epoch": epoch, "test_acc": acc, "train_s": round(train_s, 1)})
        print(f"  peer epoch {epoch}: {acc:.4f} after {train_s:.0f} s", flush=True)
        if acc >= target:
            break
    return {"epochs": epochs, "time_to_target_s": train_s if epochs[-1]["test_acc"] >= target else None,
            "test_acc": epochs[-1]["test_acc"]}


def recipe(cfg: TrainConfig, ds) -> dict:
    run = TrainingRun(cfg, ds, record_interval_s=1e9)
    for _ in run:
        pass
    acc = evaluate(run.best_model(), ds.test, ds.normalisation, run.device, details=False)["accuracy"]
    print(f"  {cfg.arch} {cfg.epochs} ep on {run.device}: {acc:.4f} in {run.elapsed_s:.1f} s", flush=True)
    return {"config": cfg.to_dict(), "test_acc": acc, "train_s": round(run.elapsed_s, 2), "device": str(run.device)}


def per_architecture(ds, device: str) -> list[dict]:
    rows = []
    for info in list_models():
        cfg = TrainConfig.for_arch(info.name, epochs=1, device=device)
        run = TrainingRun(cfg, ds, record_interval_s=1e9)
        for _ in run:
            pass
        t0 = time.perf_counter()
        acc = evaluate(run.model, ds.test, ds.normalisation, run.device, details=False)["accuracy"]
        eval_s = time.perf_counter() - t0
        n_train = len(run.splits()[0])
        rows.append({"arch": info.name, "params": info.params, "train_images_per_s": round(n_train / run.elapsed_s),
                     "test_images_per_s": round(len(ds.test) / eval_s), "acc_after_1_epoch": acc})
        print(f"  {rows[-1]}", flush=True)
    return rows


def classify_latency(ds, n: int = 200) -> dict:
    """Sketchpad-like input (a 280×280 RGBA stroke layer) through preprocessing and the forward pass."""
    from PIL import Image

    clf = Classifier(ROOT / "checkpoints" / "cnn.safetensors")
    times = []
    for i in range(n):
        digit = np.asarray(Image.fromarray(ds.test.images[i].numpy()).resize((280, 280)))
        layer = np.zeros((280, 280, 4), np.uint8)
        layer[..., 3] = digit
        value = {"background": None, "layers": [layer], "composite": None}
        t0 = time.perf_counter()
        clf.predict(value)
        times.append((time.perf_counter() - t0) * 1000)
    times = times[10:]  # the first calls warm up allocators
    return {"median_ms": round(float(np.median(times)), 2), "p95_ms": round(float(np.percentile(times, 95)), 2)}


def app_start() -> dict:
    from load import start_server  # benchmarks/load.py; imported here because it needs gradio_client

    t0 = time.perf_counter()
    proc, _ = start_server(Path(tempfile.mkdtemp(prefix="mnist-bench-")))
    serving_after = time.perf_counter() - t0
    proc.terminate()
    proc.wait(10)
    return {"serving_after_s": round(serving_after, 2)}


def train_endpoint_vs_cli(rounds: int = 3) -> dict:
    """The default recipe's training images/s through the app's /train and through the CLI, alternated so that both
    see the same machine noise. The app trains in its worker process; a small first run makes sure it is ready."""
    from gradio_client import Client
    from load import start_server, train_rate

    tmp = Path(tempfile.mkdtemp(prefix="mnist-bench-"))
    proc, url = start_server(tmp / "runs")
    app_rates, cli_rates = [], []
    try:
        client = Client(url, verbose=False, download_files=False)
        client.predict(arch="logreg", epochs=1, subset=2000, api_name="/train")
        for i in range(rounds):
            cli = subprocess.run([sys.executable, "-m", "mnist_demo", "train", "--epochs", "1", "--out",
                                  str(tmp / f"cli{i}.safetensors")], cwd=ROOT, capture_output=True, text=True,
                                 check=True)
            cli_rates.append(50_000 / float(re.search(r"([\d.]+) s on", cli.stdout).group(1)))
            app_rates.append(train_rate(client.predict(arch="cnn", epochs=1, api_name="/train")[-1]))
            print(f"  CLI {cli_rates[-1]:.0f} images/s, /train {app_rates[-1]:.0f} images/s", flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
    app, cli = float(np.median(app_rates)), float(np.median(cli_rates))
    return {"app_images_per_s": round(app), "cli_images_per_s": round(cli), "ratio": round(app / cli, 3),
            "rounds": rounds}


def to_markdown(res: dict) -> str:
    lines = [f"Machine: {res['machine']}, {res['threads']} torch threads — {res['date']}", "",
             "| recipe | test accuracy | training time |", "|---|---|---|"]
    if "peer" in res:
        p = res["peer"]
        lines.append(f"| peer: pytorch/examples CNN, Adadelta, DataLoader ({len(p['epochs'])} epochs) | "
                     f"{p['test_acc']:.2%} | {p['epochs'][-1]['train_s']:.0f} s |")
    for key, name in (("fast", "`cnn` default recipe (1 epoch)"),
                      ("best", "`cnn-deep` best recipe (30 epochs, the last 3 unwarped, batch 128, 59k/1k split)"),
                      ("gpu_fast", "GPU: `cnn`, 4 epochs, batch 512, lr 0.3"),
                      ("gpu_best", "GPU: `cnn-deep`, 50 epochs, batch 512, lr 0.2, augmentation, the last 5 unwarped")):
        if key in res:
            lines.append(f"| {name} | {res[key]['test_acc']:.2%} | {res[key]['train_s']:.1f} s |")
    if res.get("peer", {}).get("time_to_target_s") and "fast" in res:
        ratio = res["peer"]["time_to_target_s"] / res["fast"]["train_s"]
        lines += ["", f"Time to 99%: the default recipe is **{ratio:.1f}×** faster than the peer."]
    for key, where in (("archs", "CPU"), ("gpu_archs", "GPU")):
        if key in res:
            lines += ["", f"| architecture ({where}) | params | train images/s | test images/s | acc. after 1 epoch |",
                      "|---|---|---|---|---|"]
            lines += [f"| {r['arch']} | {r['params']:,} | {r['train_images_per_s']:,} | {r['test_images_per_s']:,} | "
                      f"{r['acc_after_1_epoch']:.2%} |" for r in res[key]]
    if "latency" in res:
        lat = res["latency"]
        lines += ["", f"Classify latency (`cnn`, preprocessing + forward, CPU): median {lat['median_ms']} ms, "
                  f"p95 {lat['p95_ms']} ms."]
    if "app_start" in res:
        lines.append(f"App start (`python app.py` until it serves): {res['app_start']['serving_after_s']} s.")
    if "train_endpoint" in res:
        t = res["train_endpoint"]
        lines.append(f"Default recipe through the app's `/train`: {t['app_images_per_s']:,} images/s, CLI "
                     f"{t['cli_images_per_s']:,} images/s: **{t['ratio']:.0%}** (median of {t['rounds']} each).")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", help="any of: peer fast best archs latency app_start train_endpoint "
                    "(GPU ones run when a GPU is present: gpu_fast gpu_best gpu_archs)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    ds = load_dataset("mnist")
    steps = {
        "peer": peer,
        "fast": lambda: recipe(FAST, ds),
        "best": lambda: recipe(BEST, ds),
        "archs": lambda: per_architecture(ds, "cpu"),
        "latency": lambda: classify_latency(ds),
        "app_start": app_start,
        "train_endpoint": train_endpoint_vs_cli,
    }
    if torch.cuda.is_available():
        steps["gpu_fast"] = lambda: recipe(GPU_FAST, ds)
        steps["gpu_best"] = lambda: recipe(GPU_BEST, ds)
        steps["gpu_archs"] = lambda: per_architecture(ds, "cuda")
        recipe(GPU_FAST, ds)  # warm-up: CUDA context and kernel selection are not training time
    res = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "threads": torch.get_num_threads()}
    for key, fn in steps.items():
        if args.only is None or key in args.only:
            print(f"== {key}", flush=True)
            res[key] = fn()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "gpu" if torch.cuda.is_available() else "cpu"
    (out / f"{name}.json").write_text(json.dumps(res, indent=2))
    (out / f"{name}.md").write_text(to_markdown(res))
    print(to_markdown(res))


if __name__ == "__main__":
    main()
