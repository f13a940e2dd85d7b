"""The live view of one training run: progress bar, status line, loss curve, accuracy chart, epoch table, summary."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .figures import accuracy_svg, fmt_seconds, percent, probabilities, watch_grid

PLOT_POINTS = 300  # the loss curve is thinned to this many points so the browser stays fast
LOSS_SHOWN_UP_TO = 10.0  # a diverging run's 1e30 would flatten the whole curve; 10 is far above where runs start
EPOCH_COLUMNS = ["epoch", "train loss", "train acc", "val loss", "val acc", "time"]


def thin(frame: pd.DataFrame, points: int = PLOT_POINTS) -> pd.DataFrame:
    if len(frame) <= points:
        return frame
    return frame.iloc[np.unique(np.linspace(0, len(frame) - 1, points).round().astype(int))]


@dataclass
class LiveRun:
    """Fed the training records one by one; `view()` is what the Train tab shows at that moment."""

    title: str
    epochs_planned: int
    overfit: int | None = None  # a sanity check on this many images, not a real run
    val_name: str = "validation accuracy"  # what an epoch's val_acc measures (teaching: the person's examples)
    steps: list[dict] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)
    status: str = ""
    fraction: float = 0.0
    detail: str = ""
    done: dict = field(default_factory=dict)
    stopping: bool = False
    summary: dict | None = None
    result: dict | None = None
    watch: bool = False  # views also carry the watched digits' grid and the drawing's probabilities
    watched: dict | None = None  # the run's 'watch' record: the grid's images, labels and class names
    snapshot: dict | None = None  # the latest guesses on them (train.TrainingRun's records say how they come)
    _picture: Image.Image | None = field(default=None, repr=False)

    def add(self, rec: dict) -> None:
        kind = rec["kind"]
        if kind == "watch":
            self.watched = dict(rec, images=np.asarray(rec["images"], dtype=np.uint8))
        if "snapshot" in rec:
            self.snapshot, self._picture = rec["snapshot"], None
        if kind == "step":
            self.steps.append(rec)
            self.fraction = rec["step"] / rec["steps"]
            eta = "" if rec["eta_s"] is None else f" · ETA {fmt_seconds(rec['eta_s'])}"
            self.detail = f"step {rec['step']:,}/{rec['steps']:,} · {rec['images_per_s']:,.0f} images/s{eta}"
            self.status = (f"{self.title}: epoch {rec['epoch']}/{self.epochs_planned}, loss {rec['loss']:.3f}, "
                           f"running train accuracy {rec['train_acc']:.1%}")
        elif kind == "epoch":
            self.epochs.append(rec)
            self.status = (f"{self.title}: epoch {rec['epoch']}/{self.epochs_planned} done: train accuracy "
                           f"{rec['train_acc']:.2%}, {self.val_name} {rec['val_acc']:.2%}")
        elif kind == "done":
            self.done = rec
            self.status = f"{self.title}: evaluating on the test set…"
        elif kind == "saved":
            self.finish(rec)
        if self.stopping and kind != "saved":  # one story while stopping, not a flicker back to "training"
            self._say_stopping()

    def stop(self) -> None:
        self.stopping = True
        self._say_stopping()

    def _say_stopping(self) -> None:
        self.detail = "stopping…"
        self.status = f"{self.title}: stopping after this step; then the best model so far is tested and kept…"

    def finish(self, saved: dict) -> None:
        """The run's end: the API's JSON summary, the status line, and (for real runs) the results panel's data."""
        if self.overfit:
            # What decides the check: accuracy on the same few images in evaluation mode at the last epoch's end.
            final = self.epochs[-1]["val_acc"] if self.epochs else 0.0
            passed = bool(self.done.get("overfit_passed"))
            self.summary = {"sanity_check": "passed" if passed else "failed", "images": self.overfit,
                            "final_train_accuracy": final, "epochs": len(self.epochs)}
        else:
            path, metrics = Path(saved["path"]), saved["metrics"]
            self.summary = {"checkpoint": path.name, "model": path.stem, "test_accuracy": metrics["test_accuracy"],
                            "test_loss": metrics["test_loss"], "epochs_completed": metrics["epochs_completed"],
                            "stopped_early": saved["stopped"], "train_time_s": round(saved["train_time_s"], 2),
                            "device": saved["device"]}
            self.result = dict(saved["evaluation"], path=str(path), classes=saved["classes"],
                               accuracy=metrics["test_accuracy"])
        if not saved["stopped"]:
            self.fraction = 1.0
        self.detail = "stopped" if saved["stopped"] else "done"
        self.status = self.final_status()

    def final_status(self) -> str:
        s = self.summary
        if self.overfit:
            if s["sanity_check"] == "passed":
                return (f"Sanity check PASSED ✅: the model memorised all {self.overfit} images, so the training "
                        "loop can learn. (No model is saved: it has seen only those images.)")
            return (f"Sanity check FAILED ❌: only {s['final_train_accuracy']:.1%} of {self.overfit} images learnt "
                    f"in {s['epochs']} epochs; check the learning rate and optimizer.")
        how = "Done"
        if s["stopped_early"]:
            how = (f"Stopped during epoch {s['epochs_completed'] + 1} of {self.epochs_planned}; kept the best model "
                   f"so far" if s["epochs_completed"] < self.epochs_planned else "Stopped; kept the best model")
        device = s["device"].split(",")[0]  # "cpu", not the precision detail the checkpoint records
        return (f"{how}: test accuracy {s['test_accuracy']:.2%}, {s['train_time_s']:.1f} s of training on "
                f"{device}. Saved as {s['model']}; pick it in Draw.")

    def loss_frame(self) -> pd.DataFrame:
        rows = [{"step": r["step"], "loss": min(r["loss"], LOSS_SHOWN_UP_TO)} for r in self.steps]
        return thin(pd.DataFrame(rows, columns=["step", "loss"]).astype({"step": "int64", "loss": "float64"}))

    def accuracy_chart(self) -> str:
        return accuracy_svg([r["train_acc"] for r in self.epochs], [r["val_acc"] for r in self.epochs])

    def epoch_table(self) -> pd.DataFrame:
        rows = [{"epoch": r["epoch"], "train loss": round(r["train_loss"], 4), "train acc": percent(r["train_acc"]),
                 "val loss": round(r["val_loss"], 4), "val acc": percent(r["val_acc"]),
                 "time": fmt_seconds(r["elapsed_s"])} for r in self.epochs]
        return pd.DataFrame(rows, columns=EPOCH_COLUMNS)

    def progress_html(self) -> str:
        pct = 100 * self.fraction
        return (f'<div id="run-progress" style="display:flex;gap:.75rem;align-items:center">'
                f'<progress value="{pct:.1f}" max="100" aria-label="training progress" '
                f'style="flex:1;min-width:8rem;height:1.1rem">'
                f'</progress><span style="white-space:nowrap">{pct:.0f}% {html.escape(self.detail)}</span></div>')

    def watch_picture(self) -> Image.Image | None:
        """The watched test digits with the latest guesses (None before the run's first record); drawn once per
        snapshot, however many views show it."""
        if self._picture is None and self.watched and self.snapshot:
            w = self.watched
            self._picture = watch_grid(w["images"], w["labels"], self.snapshot["guesses"], w["classes"])
        return self._picture

    def drawing_probabilities(self) -> dict[str, float] | None:
        """The current model's probabilities for the watched drawing, as Draw's bars take them; None without one."""
        if not (self.watched and self.snapshot and self.snapshot["drawing"]):
            return None
        return probabilities(np.asarray(self.snapshot["drawing"]), self.watched["classes"])

    def view(self) -> dict:
        """Everything the Train tab's live panel shows, by name."""
        view = {"progress": self.progress_html(), "status": self.status, "loss_plot": self.loss_frame(),
                "acc_plot": self.accuracy_chart(), "epoch_table": self.epoch_table(), "summary": self.summary,
                "result": self.result}
        if self.watch:
            view.update(watch_grid=self.watch_picture(), watch_probs=self.drawing_probabilities())
        return view
