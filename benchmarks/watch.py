"""The cost of watching a run learn: training images/s with and without the snapshots, in interleaved A/B runs."""

# Usage: python benchmarks/watch.py [--rounds 15] [--budget-s 200] [--archs cnn mlp-128-64]
# For each architecture, pairs of runs: one with snapshots (a drawing included, as when the Draw canvas holds one) and
# one without, in alternating order, on the CPU in this process, every record serialised as the app's training
# process sends it. Two training threads on two shared cores slow down many times over whenever another process
# takes a core, so each pair starts after a short wait for a quiet machine and counts only if other processes used
# at most FOREIGN_MAX_CORES during both runs; pairs go on until `rounds` such pairs or the time budget.
# Two measures: the drop in images/s (the median of the quiet pairs' ratios; on this machine consecutive identical
# runs differ by ±15%, so its quartiles are shown), and the time the run spent in the snapshots and in serialising
# their records, as a share of its training time: direct, and free of the machine's noise, which it shares with the
# run. Writes benchmarks/results/watch.{json,md}.

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from time_to_result import FOREIGN_MAX_CORES, CpuWatch, machine, save_results, wait_quiet  # noqa: E402

from mnist_demo.data import load_dataset  # noqa: E402
from mnist_demo.train import TrainConfig, TrainingRun  # noqa: E402
from mnist_demo.watch import Watch  # noqa: E402

# The recipes as the app runs them, on fewer images (`cnn`) or epochs (the MLP) so that a pair of runs fits in a quiet
# moment of a shared machine; images/s is a per-step rate, and the once-per-run costs (the 'watch' record with its
# first snapshot, the last epoch's snapshot) weigh more in a short run, so this errs on the side of a higher cost.
ARCHS = {"cnn": {"subset": 24_000}, "mlp-128-64": {"epochs": 3}}
TIMED_SNAPSHOTS = 200
QUIET_WAIT_S = 20  # before each pair of runs, wait at most this long for the other processes to go quiet


class InWatch:
    """Seconds spent in the Watch's methods (building it, the 'watch' record, each snapshot), outermost calls only."""

    seconds, depth = 0.0, 0

    @classmethod
    def install(cls) -> None:
        for name in ("__init__", "start", "snapshot"):
            setattr(Watch, name, cls._timed(getattr(Watch, name)))

    @classmethod
    def _timed(cls, method):
        @functools.wraps(method)
        def timed(*args, **kwargs):
            t0, cls.depth = time.perf_counter(), cls.depth + 1
            try:
                return method(*args, **kwargs)
            finally:
                cls.depth -= 1
                if cls.depth == 0:
                    cls.seconds += time.perf_counter() - t0
        return timed


def one_run(cfg: TrainConfig, ds, watch: bool, drawing: torch.Tensor) -> dict:
    run = TrainingRun(cfg, ds, watch=watch, drawing=drawing)
    last_step, snapshots, sent, serialise_s, InWatch.seconds = None, 0, 0, 0.0, 0.0
    with CpuWatch() as cpu:
        for record in run:
            t0 = time.perf_counter()
            sent += len(json.dumps(record))  # what the training process does with every record
            serialise_s += time.perf_counter() - t0
            snapshots += "snapshot" in record
            if record["kind"] == "step":
                last_step = record
    return {"watch": watch, "images_per_s": round(last_step["images_per_s"], 1), "train_s": round(run.elapsed_s, 3),
            "snapshots": snapshots, "in_watch_s": round(InWatch.seconds, 4), "serialise_s": round(serialise_s, 4),
            "bytes_sent": sent, "foreign_cores": cpu.foreign_cores, "steal_cores": cpu.steal_cores,
            "loadavg": cpu.loadavg}


def snapshot_ms(cfg: TrainConfig, ds, drawing: torch.Tensor) -> float:
    """One snapshot of the model in training mode, timed alone (median of TIMED_SNAPSHOTS)."""
    run = TrainingRun(cfg, ds, drawing=drawing)
    watch = Watch(ds, run.drawing, run.device)
    times = []
    for _ in range(TIMED_SNAPSHOTS):
        t0 = time.perf_counter()
        watch.snapshot(run.model, 0, 0.0)
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 3)


def measure(arch: str, ds, rounds: int, drawing: torch.Tensor, budget_s: float) -> dict:
    cfg = TrainConfig.for_arch(arch, device="cpu", **ARCHS[arch])
    one_run(cfg, ds, True, drawing)  # warm-up: kernels, caches
    pairs, t0 = [], time.monotonic()
    while sum(p["clean"] for p in pairs) < rounds and time.monotonic() - t0 < budget_s:
        wait_quiet(QUIET_WAIT_S)
        runs = {w: one_run(cfg, ds, w, drawing) for w in ((True, False) if len(pairs) % 2 == 0 else (False, True))}
        a, b = runs[True], runs[False]
        pairs.append({"with": a, "without": b, "ratio": round(a["images_per_s"] / b["images_per_s"], 4),
                      "share": round((a["in_watch_s"] + a["serialise_s"] - b["serialise_s"]) / a["train_s"], 5),
                      "clean": all(r["foreign_cores"] <= FOREIGN_MAX_CORES for r in runs.values())})
        print(f"  {arch} pair {len(pairs)}: {pairs[-1]}", flush=True)
    clean = [p for p in pairs if p["clean"]] or pairs  # with no quiet pair, all of them (and the table says so)
    per_s = statistics.median(p["with"]["snapshots"] / p["with"]["train_s"] for p in clean)
    ratios = statistics.quantiles([p["ratio"] for p in clean], n=4) if len(clean) > 1 else [clean[0]["ratio"]] * 3
    return {"config": cfg.to_dict(), "pairs": pairs, "clean_pairs": sum(p["clean"] for p in pairs),
            "median_with": statistics.median(p["with"]["images_per_s"] for p in clean),
            "median_without": statistics.median(p["without"]["images_per_s"] for p in clean),
            "drop": round(1 - ratios[1], 4), "drop_quartiles": [round(1 - ratios[2], 4), round(1 - ratios[0], 4)],
            "snapshots_per_s": round(per_s, 2),
            "snapshot_ms": snapshot_ms(cfg, ds, drawing), "share": statistics.median(p["share"] for p in clean)}


def to_markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {res['threads']} threads — {res['date']}. "
             "Training images/s (the last step record's), median of the pairs run while other processes used at most "
             f"{FOREIGN_MAX_CORES} cores; a drawing watched.", "",
             "| architecture | quiet pairs / all | images/s without snapshots | with | drop: median of the pairs "
             "(quartiles) | snapshots/s | one snapshot, alone | time in snapshots and their records |",
             "|---|---|---|---|---|---|---|---|"]
    for arch, r in res["archs"].items():
        low, high = r["drop_quartiles"]
        lines.append(f"| `{arch}` ({', '.join(f'{k} {v}' for k, v in ARCHS[arch].items())}) | {r['clean_pairs']} / "
                     f"{len(r['pairs'])} | {r['median_without']:,.0f} | {r['median_with']:,.0f} | {r['drop']:.1%} "
                     f"({low:.1%} to {high:.1%}) | {r['snapshots_per_s']} | {r['snapshot_ms']} ms | "
                     f"**{r['share']:.2%}** of training time |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15, help="quiet pairs wanted per architecture")
    ap.add_argument("--budget-s", type=float, default=200, help="time per architecture, at most")
    ap.add_argument("--archs", nargs="*", default=list(ARCHS), choices=list(ARCHS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    InWatch.install()
    ds = load_dataset("mnist")
    drawing = ds.test.images[-1].float() / 255  # a digit outside the grid, as a drawing reaches the run
    res = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "threads": torch.get_num_threads(),
           "archs": {}}
    for arch in args.archs:
        print(f"== {arch}", flush=True)
        res["archs"][arch] = measure(arch, ds, args.rounds, drawing, args.budget_s)
    save_results(args.out, "watch", res, to_markdown(res))


if __name__ == "__main__":
    main()
