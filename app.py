"""Gradio web app for the MNIST demo: draw digits, train models and manage checkpoints (UI wiring only)."""

import contextlib
import html
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

# Gradio recomputes a pandas summary of its last 10,000 events after every event, for its monitoring page; at 50-80
# classify calls a second that cost more server CPU than the model itself. Once every 100 events is plenty.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "100")

import gradio as gr  # noqa: E402
import numpy as np
import pandas as pd

from mnist_demo import api
from mnist_demo.checkpoint import CheckpointError, checkpoint_dir, list_checkpoints, load_checkpoint
from mnist_demo.data import DataError, Dataset, fashion_available, load_dataset
from mnist_demo.inference import Classifier, Prediction
from mnist_demo.preprocess import ImageError, Prepared, prepare
from mnist_demo.train import (
    OPTIMIZERS,
    ConfigError,
    TrainConfig,
    TrainingDiverged,
    available_devices,
    prediction_table,
    resolve_device,
)
from mnist_demo.worker import Worker

CANVAS = 280  # drawing surface in pixels: 10× MNIST, so the brush maps to MNIST-like strokes
BRUSH_RADIUS = 11  # a 22 px stroke is ~2.2 px once the digit is fitted into MNIST's 20 px box
ZOOM = 8  # the 28×28 model input is shown at 224×224, pixel-exact
UNSURE_BELOW = 0.6  # top probability under this reads as "not sure"
UI_INTERVAL_S = 0.5  # at most two streamed step updates a second: plenty for a curve, and each costs server CPU
PLOT_POINTS = 300  # the loss curve is thinned to this many points so the browser stays fast
GALLERY_SIZE = 40  # most confident mistakes shown after training
OVERFIT_IMAGES, OVERFIT_EPOCHS, OVERFIT_BATCH = 64, 30, 16  # 4 steps × 30 epochs: enough to memorise 64 images
USER_ERRORS = (ConfigError, DataError, TrainingDiverged, CheckpointError, ImageError)

# After load and after every clear the 6.31 Sketchpad falls back to its "image" tool and ignores strokes.
# Whenever no drawing tool is highlighted, click the first toolbar tool (the brush) so the next stroke draws.
BRUSH_JS = """
() => {
  const ensureBrush = () => {
    const tools = document.querySelectorAll('#sketch .toolbar-wrap button');
    if (tools.length && ![...tools].some((b) => b.classList.contains('highlight'))) tools[0].click();
  };
  let queued = false;
  new MutationObserver(() => {
    if (!queued) { queued = true; requestAnimationFrame(() => { queued = false; ensureBrush(); }); }
  }).observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['class']});
  ensureBrush();
}
"""

CSS = """
#sketch button[aria-label="Pan"] { display: none; }  /* panning a fixed 280 px canvas only loses the digit */
#sketch button[aria-label="Color"] { display: none; }  /* one ink colour: the picker has nothing to offer */
#sketch canvas { touch-action: none; }               /* a finger draws instead of scrolling the page */
#verdict, #verdict p { font-size: 1.35rem; min-height: 2.5rem; }
#seen img, #saliency img { image-rendering: pixelated; }
.confusion td, .confusion th { padding: 2px 6px; text-align: right; font-variant-numeric: tabular-nums; }
.confusion { border-collapse: collapse; font-size: 0.85rem; }
"""


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint catalogue: bundled ones plus everything trained or uploaded in this app, keyed by file stem.

@dataclass(frozen=True)
class ModelEntry:
    key: str  # what the dropdowns and API clients use: the file stem, e.g. "cnn"
    path: Path
    meta: dict
    bundled: bool

    @property
    def accuracy(self) -> float | None:
        return (self.meta.get("metrics") or {}).get("test_accuracy")

    @property
    def choice(self) -> tuple[str, str]:
        acc = f" · {self.accuracy:.2%}" if self.accuracy is not None else ""
        return f"{self.key} ({self.meta.get('arch')}{acc}{' · bundled' if self.bundled else ''})", self.key


def catalogue() -> list[ModelEntry]:
    """Bundled checkpoints (best first), then the app's own runs (newest first)."""
    entries: list[ModelEntry] = []
    keys: set[str] = set()
    shipped, runs = checkpoint_dir().resolve(), api.runs_dir().resolve()
    for directory, bundled in ((shipped, True), (runs, False)):
        if not bundled and directory == shipped:  # one folder for both: list it once
            continue
        found = list_checkpoints(directory)
        if bundled:
            found.sort(key=lambda pm: -((pm[1].get("metrics") or {}).get("test_accuracy") or 0))
        for path, meta in found:
            key = path.stem if path.stem not in keys else f"runs/{path.stem}"
            keys.add(key)
            entries.append(ModelEntry(key, path, meta, bundled))
    return entries


def default_model(entries: list[ModelEntry]) -> str | None:
    """The bundled `cnn` when shipped, else the most accurate model there is; skipping any that will not load."""
    ranked = sorted(entries, key=lambda e: (e.bundled and e.key == "cnn", e.bundled, e.accuracy or 0), reverse=True)
    for entry in ranked:
        with contextlib.suppress(CheckpointError, OSError):
            classifier(entry)
            return entry.key
    return None


def find_model(key: str | None, entries: list[ModelEntry] | None = None) -> ModelEntry:
    entries = catalogue() if entries is None else entries
    key = key or default_model(entries)
    for entry in entries:
        if entry.key == key:
            return entry
    if key is None:
        raise gr.Error("No model yet: train one in the Train tab or upload a checkpoint in the Models tab.")
    raise gr.Error(f"Unknown model {key!r}; the Models tab lists the available ones.")


_classifiers: dict[Path, tuple[tuple[int, int], Classifier]] = {}
_classifiers_lock = threading.Lock()


def classifier(entry: ModelEntry) -> Classifier:
    """One inference copy per checkpoint file, reloaded if the file changes; never a model being trained."""
    stat = entry.path.stat()
    signature = (stat.st_mtime_ns, stat.st_size)
    with _classifiers_lock:
        hit = _classifiers.get(entry.path)
    if hit and hit[0] == signature:
        return hit[1]
    clf = Classifier(entry.path)  # loading outside the lock: a slow load never blocks other models
    with _classifiers_lock:
        _classifiers[entry.path] = (signature, clf)
    return clf


# ----------------------------------------------------------------------------------------------------------------
# Draw tab

def probabilities(pred: Prediction, classes: list[str]) -> dict[str, float] | None:
    if pred.probabilities is None:
        return None
    return {name: float(p) for name, p in zip(classes, pred.probabilities)}


def verdict(pred: Prediction, classes: list[str]) -> str:
    if pred.probabilities is None:
        return pred.message or "The canvas is blank: draw a digit."
    order = np.argsort(pred.probabilities)[::-1]
    first, second = (classes[i] for i in order[:2])
    p1, p2 = (float(pred.probabilities[i]) for i in order[:2])
    if p1 < UNSURE_BELOW:
        text = f"🤔 Not sure: maybe **{first}** ({p1:.0%}), or **{second}** ({p2:.0%})."
    else:
        text = f"It's a **{first}** ({p1:.0%} sure)."
    return f"{text} {pred.message}".strip()


def enlarge(image: np.ndarray, zoom: int = ZOOM) -> np.ndarray:
    """Nearest-neighbour upscale so every model pixel stays a crisp square."""
    return np.repeat(np.repeat(image, zoom, axis=0), zoom, axis=1)


def saliency_overlay(digit: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """The digit in grey with the saliency map laid over it in a black-red-yellow 'hot' scale."""
    grey = np.repeat(digit[..., None], 3, axis=2) * 0.6
    s = np.clip(saliency, 0, 1)[..., None]
    hot = np.concatenate([np.clip(3 * s, 0, 1), np.clip(3 * s - 1, 0, 1), np.clip(3 * s - 2, 0, 1)], axis=2)
    alpha = np.clip(s * 1.5, 0, 0.9)
    return enlarge((255 * ((1 - alpha) * grey + alpha * hot)).round().astype(np.uint8))


def compare_models(prepared: Prepared, selected: str, entries: list[ModelEntry]) -> pd.DataFrame:
    rows = []
    for entry in entries:
        try:
            clf = classifier(entry)
            pred = clf.predict(prepared)
            top = "—" if pred.label is None else clf.classes[pred.label]
            conf = "—" if pred.label is None else f"{pred.confidence:.1%}"
        except (CheckpointError, OSError) as exc:
            top, conf = "unreadable", str(exc)[:60]
        marker = "▶ " if entry.key == selected else ""
        rows.append({"model": marker + entry.key, "architecture": entry.meta.get("arch"), "top": top,
                     "confidence": conf})
    return pd.DataFrame(rows, columns=["model", "architecture", "top", "confidence"])


def draw_outputs(prepared: Prepared | None, model_key: str | None) -> tuple:
    """Everything the Draw tab shows for one input: probabilities, verdict, model input, saliency, comparison."""
    entries = catalogue()  # read the checkpoint folders once per stroke, not once per use
    entry = find_model(model_key, entries)
    try:
        clf = classifier(entry)
    except CheckpointError as exc:
        gr.Warning(str(exc))
        return None, f"⚠️ {exc}", None, None, None, prepared
    if prepared is None or prepared.blank:
        message = prepared.message if prepared else "The canvas is blank: draw a digit."
        return None, message, None, None, compare_models(Prepared(None), entry.key, entries), prepared
    pred = clf.predict(prepared)
    seen = enlarge((pred.digit * 255).round().astype(np.uint8))
    heat = saliency_overlay(pred.digit, clf.saliency(pred.digit, pred.label))
    return (probabilities(pred, clf.classes), verdict(pred, clf.classes), seen, heat,
            compare_models(prepared, entry.key, entries), prepared)


def prepare_or_warn(source) -> Prepared | str:
    """The library's preprocessing; an unreadable image becomes a message instead of an exception."""
    try:
        return prepare(source)
    except ImageError as exc:
        gr.Warning(str(exc))
        return f"⚠️ {exc}"


def draw(sketch: dict | str | None, model: str | None = None) -> tuple:
    """API: a Sketchpad value (or, from the upload box, an image path) → probabilities, verdict, model input,
    saliency overlay and the comparison of all models."""
    prepared = prepare_or_warn(sketch)
    if isinstance(prepared, str):
        return None, prepared, None, None, None, None
    return draw_outputs(prepared, model)


def on_upload(image: dict | None, model_key: str | None) -> tuple:
    # preprocess=False: Gradio hands over the uploaded file untouched, so the library decides what is readable.
    return draw(image["path"] if image else None, model_key)


def on_model_change(last: Prepared | None, model_key: str | None) -> tuple:
    # The sketchpad's value cannot be re-read by a second listener, so the last prepared input is kept in state.
    return draw_outputs(last, model_key)


def classify(image: dict | None, model: str | None = "") -> dict[str, float] | None:
    """API: an image file → {class: probability}; a blank image → empty."""
    if not image:
        return None
    try:
        prepared = prepare(image["path"])
    except ImageError as exc:
        raise gr.Error(f"Cannot classify this file: {exc}") from None
    entry = find_model(model or None)
    try:
        clf = classifier(entry)
    except CheckpointError as exc:
        raise gr.Error(str(exc)) from None
    return probabilities(clf.predict(prepared), clf.classes)


def model_dropdown(current: str | None = None) -> gr.Dropdown:
    entries = catalogue()
    keys = {e.key for e in entries}
    value = current if current in keys else default_model(entries)
    return gr.Dropdown(choices=[e.choice for e in entries], value=value)


# ----------------------------------------------------------------------------------------------------------------
# Train tab

_datasets: dict[str, Dataset] = {}
_datasets_lock = threading.Lock()


def get_dataset(name: str) -> Dataset:
    """MNIST and Fashion-MNIST are loaded once and shared; a CSV is read afresh (it is per upload)."""
    if name.lower().endswith(".csv"):
        return load_dataset(name)
    with _datasets_lock:
        if name not in _datasets:
            _datasets[name] = load_dataset(name)
        return _datasets[name]


DATASET_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


def dataset_choices() -> list[tuple[str, str]]:
    """Fashion-MNIST is offered only where its files are present (no download at run time)."""
    names = [n for n in DATASET_NAMES if n != "fashion-mnist" or fashion_available()]
    return [(DATASET_NAMES[n], n) for n in names] + [("CSV upload (label + 784 pixel columns)", "csv")]


def arch_choices() -> list[tuple[str, str]]:
    return [(f"{a['name']} — {a['params']:,} params", a["name"]) for a in api.list_architectures()]


def arch_description(arch: str) -> str:
    info = {a["name"]: a for a in api.list_architectures()}.get(arch)
    return f"*{info['description']}*" if info else ""


def recipe(arch: str, device: str = "auto") -> tuple:
    """Switching architecture or device loads the tuned recipe, so the defaults always train well."""
    cfg = TrainConfig.for_arch(arch, device=device)
    return cfg.optimizer, cfg.lr, cfg.batch_size, cfg.epochs, cfg.augment, arch_description(arch)


def build_config(dataset: str, csv_file: str | None, arch: str, device: str, optimizer: str, lr: float | None,
                 batch_size: float | None, epochs: float | None, subset: float | None, augment: bool,
                 seed: float | None, overfit: int | None = None) -> TrainConfig:
    if dataset == "csv":
        if not csv_file:
            raise ConfigError("Choose a CSV file first (columns: label, then 784 pixel values 0-255).")
        dataset = str(csv_file)
    settings = dict(arch=arch, dataset=dataset, device=device, optimizer=optimizer, lr=lr, batch_size=batch_size,
                    epochs=epochs, subset=subset or None, augment=augment, seed=seed)
    if overfit:
        settings.update(overfit=overfit, epochs=OVERFIT_EPOCHS, batch_size=OVERFIT_BATCH, augment=False, subset=None)
    return api.make_config(**settings)


def device_key(name: str) -> str:
    """The physical device a setting means ('auto' and 'cuda' included), so each one gets a single trainer."""
    device = str(resolve_device(name))
    return "cuda:0" if device == "cuda" else device


TRAIN_SLOTS = len({device_key(d) for d in available_devices()})  # one concurrent run per physical device
_device_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
_workers: dict[str, Worker] = defaultdict(Worker)  # one training process per device, used under its lock


class RunControl:
    """A session's Stop flag; the training loop polls it after every progress record."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.running = False


_runs: dict[str, RunControl] = {}
_runs_lock = threading.Lock()


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "anonymous"


def arm(request: gr.Request) -> tuple:
    """Runs before the (queued) training, so Stop also works while this session is still waiting in line."""
    with _runs_lock:
        current = _runs.get(_session(request))
        if current is None or not current.running:  # a fresh flag: an old Stop must not cancel this run
            _runs[_session(request)] = RunControl()
    message = "Queued: waiting for the trainer (your place in the queue shows at the right of this box)…"
    return message, gr.Button(interactive=False), gr.Button(interactive=False)


def stop(request: gr.Request) -> str:
    """API/Stop button: end this session's run after the current step; the best model so far is kept."""
    with _runs_lock:
        control = _runs.get(_session(request))
    if control is None:
        return "Nothing to stop."
    control.stop.set()
    return "Stopping: keeping the best model so far…"


def enable_buttons() -> tuple:
    return gr.Button(interactive=True), gr.Button(interactive=True)


def typed_frame(rows: list[dict], **columns: str) -> pd.DataFrame:
    """A DataFrame with fixed column dtypes even when empty: plots fix their axis types from the first value."""
    return pd.DataFrame(rows, columns=list(columns)).astype(columns)


def thin(frame: pd.DataFrame, points: int = PLOT_POINTS) -> pd.DataFrame:
    if len(frame) <= points:
        return frame
    return frame.iloc[np.unique(np.linspace(0, len(frame) - 1, points).round().astype(int))]


def fmt_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


@dataclass
class LiveRun:
    """The streaming view of one training run: curves, progress bar, status line and epoch table."""

    title: str
    epochs_planned: int
    steps: list[dict] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)
    status: str = ""
    fraction: float = 0.0
    detail: str = ""
    done: dict = field(default_factory=dict)

    def add(self, rec: dict) -> None:
        kind = rec["kind"]
        if kind == "step":
            self.steps.append(rec)
            self.fraction = rec["step"] / rec["steps"]
            self.detail = (f"step {rec['step']:,}/{rec['steps']:,} · {rec['images_per_s']:,.0f} images/s · "
                           f"ETA {fmt_seconds(rec['eta_s'])}")
            self.status = (f"{self.title}: epoch {rec['epoch']}/{self.epochs_planned}, loss {rec['loss']:.3f}, "
                           f"running train accuracy {rec['train_acc']:.1%}")
        elif kind == "epoch":
            self.epochs.append(rec)
            self.status = (f"{self.title}: epoch {rec['epoch']}/{self.epochs_planned} done: train accuracy "
                           f"{rec['train_acc']:.2%}, validation accuracy {rec['val_acc']:.2%}")
        elif kind == "done":
            self.done = rec
            self.fraction = 1.0
            self.status = f"{self.title}: evaluating on the test set…"

    def loss_frame(self) -> pd.DataFrame:
        rows = [{"step": r["step"], "loss": r["loss"]} for r in self.steps]
        return thin(typed_frame(rows, step="int64", loss="float64"))

    def accuracy_chart(self) -> str:
        return accuracy_svg([r["train_acc"] for r in self.epochs], [r["val_acc"] for r in self.epochs])

    def epoch_table(self) -> pd.DataFrame:
        rows = [{"epoch": r["epoch"], "train loss": round(r["train_loss"], 4), "train acc": f"{r['train_acc']:.2%}",
                 "val loss": round(r["val_loss"], 4), "val acc": f"{r['val_acc']:.2%}",
                 "time": fmt_seconds(r["elapsed_s"])} for r in self.epochs]
        return pd.DataFrame(rows, columns=["epoch", "train loss", "train acc", "val loss", "val acc", "time"])

    def progress_html(self) -> str:
        pct = 100 * self.fraction
        return (f'<div id="run-progress" style="display:flex;gap:.75rem;align-items:center">'
                f'<progress value="{pct:.1f}" max="100" style="flex:1;height:1.1rem"></progress>'
                f'<span style="white-space:nowrap">{pct:.0f}% {html.escape(self.detail)}</span></div>')

    def outputs(self, summary: dict | None = None, result: dict | None = None) -> tuple:
        return (self.progress_html(), self.status, self.loss_frame(), self.accuracy_chart(), self.epoch_table(),
                summary, result)


def accuracy_svg(train: list[float], val: list[float], width: int = 340, height: int = 240) -> str:
    """Per-epoch accuracy as a small SVG chart. Gradio's plots draw nothing for a one-point series, and a
    one-epoch run is the common case, so the markers here are always visible."""
    left, right, top, bottom = 44, 12, 40, 26
    n = len(train)
    lowest = min([*train, *val], default=0.9)
    tick_step = next(t for t in (0.01, 0.02, 0.05, 0.1, 0.2) if (1 - lowest) / t <= 5)
    lo = max(0.0, np.floor(lowest / tick_step) * tick_step - (tick_step if lowest % tick_step < tick_step / 4 else 0))
    px = lambda i: left + (i + 0.5) * (width - left - right) / max(n, 1)
    py = lambda a: top + (1 - (a - lo) / (1 - lo)) * (height - top - bottom)
    parts = [f'<svg id="acc-svg" viewBox="0 0 {width} {height}" width="100%" role="img" '
             f'aria-label="accuracy per epoch" style="font:12px sans-serif">',
             f'<text x="{width / 2}" y="14" text-anchor="middle" font-weight="600" fill="currentColor">'
             f'Accuracy per epoch</text>']
    for tick in np.arange(lo, 1.0 + tick_step / 2, tick_step):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{py(tick):.1f}" y2="{py(tick):.1f}" '
                     f'stroke="currentColor" stroke-opacity="0.15"/><text x="{left - 6}" y="{py(tick) + 4:.1f}" '
                     f'text-anchor="end" fill="currentColor" fill-opacity="0.7">{tick:.0%}</text>')
    step = max(1, n // 10)
    parts += [f'<text x="{px(i):.1f}" y="{height - 10}" text-anchor="middle" fill="currentColor" '
              f'fill-opacity="0.7">{i + 1}</text>' for i in range(0, n, step)]
    if not n:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="currentColor" '
                     f'fill-opacity="0.6">appears after the first epoch</text>')
    for k, (name, values, colour) in enumerate((("train", train, "#6366f1"), ("validation", val, "#f97316"))):
        points = " ".join(f"{px(i):.1f},{py(a):.1f}" for i, a in enumerate(values))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts += [f'<circle cx="{px(i):.1f}" cy="{py(a):.1f}" r="4" fill="{colour}"><title>{name} epoch {i + 1}: '
                  f'{a:.2%}</title></circle>' for i, a in enumerate(values)]
        label = f"{name} {values[-1]:.2%}" if values else name
        parts.append(f'<circle cx="{left + 8 + 140 * k}" cy="28" r="4" fill="{colour}"/>'
                     f'<text x="{left + 16 + 140 * k}" y="32" fill="currentColor">{label}</text>')
    return "".join(parts) + "</svg>"


def _claim_control(session: str) -> RunControl:
    with _runs_lock:
        control = _runs.setdefault(session, RunControl())
        control.running = True
        return control


def _release_control(session: str, control: RunControl) -> None:
    with _runs_lock:
        if _runs.get(session) is control:
            del _runs[session]


def _mistake_gallery(ds: Dataset, misclassified: list[dict]) -> list[tuple[np.ndarray, str]]:
    worst = sorted(misclassified, key=lambda m: -m["confidence"])[:GALLERY_SIZE]
    return [(enlarge(np.asarray(ds.test.images[m["index"]]), zoom=4),
             f"{ds.classes[m['true']]} → {ds.classes[m['predicted']]} · {m['confidence']:.0%}") for m in worst]


def _summarise(saved: dict, live: LiveRun, ds: Dataset, overfit: int | None) -> tuple[dict, dict | None]:
    """The API's final record (JSON-friendly) and, for real runs, what the results panel needs."""
    metrics = saved["metrics"]
    if overfit:
        final = live.epochs[-1] if live.epochs else {"train_acc": 0.0}
        passed = bool(live.done.get("overfit_passed"))
        return {"sanity_check": "passed" if passed else "failed", "images": overfit,
                "final_train_accuracy": final["train_acc"], "epochs": len(live.epochs)}, None
    path = Path(saved["path"])
    summary = {"checkpoint": path.name, "model": path.stem, "test_accuracy": metrics["test_accuracy"],
               "test_loss": metrics["test_loss"], "epochs_completed": metrics["epochs_completed"],
               "stopped_early": saved["stopped"], "train_time_s": round(saved["train_time_s"], 2),
               "device": saved["device"]}
    evaluation = saved["evaluation"]
    result = {"path": str(path), "classes": ds.classes, "accuracy": metrics["test_accuracy"],
              "per_class": evaluation["per_class_accuracy"], "confusion": evaluation["confusion"],
              "predicted": evaluation["predicted"], "true": ds.test.labels.tolist(),
              "gallery": _mistake_gallery(ds, evaluation["misclassified"])}
    return summary, result


def _final_status(summary: dict, live: LiveRun) -> str:
    if "sanity_check" in summary:
        verdict_text = ("PASSED ✅: the model memorised all 64 images, so the training loop can learn."
                        if summary["sanity_check"] == "passed" else
                        f"FAILED ❌: only {summary['final_train_accuracy']:.1%} of 64 images learnt in "
                        f"{summary['epochs']} epochs; check the learning rate and optimizer.")
        return f"Sanity check {verdict_text}"
    how = "Stopped early; kept the best model so far" if summary["stopped_early"] else "Done"
    return (f"{how}: test accuracy {summary['test_accuracy']:.2%} after {summary['epochs_completed']} epoch(s), "
            f"{summary['train_time_s']:.1f} s on {summary['device']}. Saved as {summary['model']}; pick it in Draw.")


def _stream(cfg: TrainConfig, control: RunControl, overfit: int | None):
    device = device_key(cfg.device)
    dataset_name = DATASET_NAMES.get(cfg.dataset, Path(cfg.dataset).name)
    live = LiveRun(f"{'Sanity check' if overfit else 'Training'} {cfg.arch} on {dataset_name}", cfg.epochs,
                   status=f"Loading {dataset_name}…")
    yield live.outputs()
    ds = get_dataset(cfg.dataset)
    lock = _device_locks[device]
    while not lock.acquire(timeout=0.5):
        if control.stop.is_set():
            live.status = "Stopped before it started."
            yield live.outputs()
            return
        live.status = f"Waiting: another run is using {device}…"
        yield live.outputs()
    scratch = tempfile.TemporaryDirectory(prefix="overfit-") if overfit else contextlib.nullcontext()
    try:
        with scratch as tmp:
            # A sanity-check model is useless for drawing, so it goes to a scratch file, not the model list.
            out = Path(tmp) / "overfit.safetensors" if overfit else None
            live.status = f"{live.title}: starting on {device}…"
            yield live.outputs()
            records = _workers[device].train(cfg, out=out or api.checkpoint_path(cfg), should_stop=control.stop.is_set)
            with contextlib.closing(records):  # closing (page closed, cancel) makes the worker keep the best model
                last_ui = 0.0
                for rec in records:
                    if rec["kind"] != "saved":
                        live.add(rec)
                        # Rendering an update costs server CPU that training (2 cores) could use, so steps are spaced.
                        if rec["kind"] != "step" or time.monotonic() - last_ui >= UI_INTERVAL_S:
                            last_ui = time.monotonic()
                            yield live.outputs()
                        continue
                    summary, result = _summarise(rec, live, ds, overfit)
                    live.status = _final_status(summary, live)
                    yield live.outputs(summary, result)
    finally:
        lock.release()


def _run(settings: tuple, request: gr.Request | None, overfit: int | None = None):
    session = _session(request)
    control = _claim_control(session)
    try:
        if control.stop.is_set():
            yield LiveRun("", 0, status="Stopped before it started.").outputs()
            return
        cfg = build_config(*settings, overfit=overfit)
        yield from _stream(cfg, control, overfit)
    except USER_ERRORS as exc:
        raise gr.Error(str(exc)) from None
    except Exception as exc:  # a bug or a resource fault: this user is told, the server and other runs go on
        logging.exception("training run failed")
        raise gr.Error(f"Training failed: {type(exc).__name__}: {exc}") from None
    finally:
        _release_control(session, control)


# API defaults of None mean "the architecture's tuned recipe" (TrainConfig.for_arch), as in the CLI.
def train(dataset: str = "mnist", csv_file: str | None = None, arch: str = "cnn", device: str = "auto",
          optimizer: str | None = None, lr: float | None = None, batch_size: float | None = None,
          epochs: float | None = None, subset: float | None = 0, augment: bool = False, seed: float | None = 0,
          request: gr.Request = None):
    """API: train a model; streams progress and ends with the checkpoint name and its test accuracy."""
    yield from _run((dataset, csv_file, arch, device, optimizer, lr, batch_size, epochs, subset, augment, seed),
                    request)


def sanity_check(dataset: str = "mnist", csv_file: str | None = None, arch: str = "cnn", device: str = "auto",
                 optimizer: str | None = None, lr: float | None = None, batch_size: float | None = None,
                 epochs: float | None = None, subset: float | None = 0, augment: bool = False,
                 seed: float | None = 0, request: gr.Request = None):
    """API: can these settings memorise 64 training images? A model that cannot has a bug or a bad learning rate."""
    yield from _run((dataset, csv_file, arch, device, optimizer, lr, batch_size, epochs, subset, augment, seed),
                    request, overfit=OVERFIT_IMAGES)


def confusion_html(matrix: list[list[int]], classes: list[str]) -> str:
    """A heatmap table: green diagonal (share of the class right), red cells for mistakes (scaled to the worst),
    and each class's accuracy at the end of its row."""
    m = np.asarray(matrix)
    off = m - np.diag(np.diag(m))
    worst = max(int(off.max()), 1)
    head = "".join(f'<th title="{html.escape(c)}">{i}</th>' for i, c in enumerate(classes))
    rows = []
    for i, name in enumerate(classes):
        total = max(int(m[i].sum()), 1)
        cells = []
        for j in range(len(classes)):
            n = int(m[i, j])
            alpha = n / total if i == j else (n / worst) ** 0.5 * 0.85
            rgb = "22,163,74" if i == j else "220,38,38"
            ink = "#fff" if alpha > 0.55 else "inherit"
            cells.append(f'<td style="background:rgba({rgb},{alpha:.2f});color:{ink}" '
                         f'title="true {html.escape(name)}, predicted {html.escape(classes[j])}: {n}">{n}</td>')
        accuracy = f'<td class="class-accuracy"><b>{m[i, i] / total:.1%}</b></td>'
        rows.append(f"<tr><th>{i} {html.escape(name) if name != str(i) else ''}</th>{''.join(cells)}{accuracy}</tr>")
    return (f'<table class="confusion" id="confusion-table"><caption>rows: true class · columns: predicted class'
            f'</caption><tr><th></th>{head}<th>accuracy</th></tr>{"".join(rows)}</table>')


def show_results(result: dict | None, current_model: str | None) -> tuple:
    """After a training run: the test metrics, mistakes and tables, the download, and refreshed model lists."""
    if not result:
        return (gr.skip(),) * 6 + (model_dropdown(current_model), models_frame(), download_dropdown())
    classes = result["classes"]
    # Accuracies of 97-100% all look full as bars, so the chart shows what is missing: the error rate.
    per_class = typed_frame([{"class": c, "error %": 100 * (1 - a)} for c, a in zip(classes, result["per_class"])],
                            **{"class": "str", "error %": "float64"})
    table = prediction_table(result["predicted"], result["true"])[["true", "predicted"]].map(classes.__getitem__)
    table.insert(0, "index", range(len(table)))
    table["correct"] = np.where(table["true"] == table["predicted"], "✓", "✗")
    headline = f"### Test accuracy: {result['accuracy']:.2%}  ({len(table):,} test images)"
    lists = (model_dropdown(current_model), models_frame(), download_dropdown(Path(result["path"]).stem))
    return (headline, per_class, confusion_html(result["confusion"], classes),
            result["gallery"], table, result["path"], *lists)


# ----------------------------------------------------------------------------------------------------------------
# Models tab

def models_frame() -> pd.DataFrame:
    rows = []
    for e in catalogue():
        meta = e.meta
        rows.append({
            "model": e.key, "source": "bundled" if e.bundled else "this app", "architecture": meta.get("arch"),
            "dataset": Path(str(meta.get("dataset", ""))).name, "parameters": f"{meta.get('params', 0):,}",
            "test accuracy": f"{e.accuracy:.2%}" if e.accuracy is not None else "—",
            "training time": fmt_seconds(meta["train_time_s"]) if meta.get("train_time_s") else "—",
            "device": meta.get("device") or "—", "date": str(meta.get("created", "")).replace("T", " ")[:16],
        })
    columns = ["model", "source", "architecture", "dataset", "parameters", "test accuracy", "training time",
               "device", "date"]
    return pd.DataFrame(rows, columns=columns)


def download_pick(value: str | None) -> tuple[str | None, list[str]]:
    keys = [e.key for e in catalogue()]
    return (value if value in keys else (keys[0] if keys else None)), keys


def download_dropdown(value: str | None = None) -> gr.Dropdown:
    value, keys = download_pick(value)
    return gr.Dropdown(choices=keys, value=value, label="Checkpoint to download", elem_id="model-pick")


def checkpoint_file(key: str | None) -> str | None:
    return str(find_model(key).path) if key else None


def refresh_on_load(current_model: str | None, current_pick: str | None) -> tuple:
    pick, _ = download_pick(current_pick)
    return model_dropdown(current_model), models_frame(), download_dropdown(pick), checkpoint_file(pick)


def _free_name(stem: str) -> Path:
    """A name in the runs folder that clashes with no model at all, so an upload never replaces anything."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip(".-")[:80] or "uploaded"
    taken = {e.key for e in catalogue()} | {p.stem for p in api.runs_dir().glob("*.safetensors")}
    name, n = stem, 2
    while name in taken:
        name, n = f"{stem}-{n}", n + 1
    return api.runs_dir() / f"{name}.safetensors"


def upload_checkpoint(file: dict | None, current_model: str | None) -> tuple:
    """Accept a .safetensors checkpoint after loading it once (header, architecture and weights are checked)."""
    if not file:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    name = Path(file.get("orig_name") or file["path"]).name
    try:
        if not name.lower().endswith(".safetensors"):
            raise CheckpointError(f"{name}: only .safetensors checkpoints are accepted "
                                  "(pickle-based .pt/.pth files can run code when loaded)")
        ckpt = load_checkpoint(file["path"])
    except CheckpointError as exc:
        gr.Warning(str(exc))
        return f"⚠️ Refused: {exc}", gr.skip(), gr.skip(), gr.skip()
    dest = _free_name(Path(name).stem)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".upload-{dest.name}")
    shutil.copyfile(file["path"], tmp)
    os.replace(tmp, dest)  # appears whole or not at all in everyone's model list
    gr.Info(f"Added {dest.stem}")
    message = f"✅ Added **{dest.stem}** ({ckpt.arch}); it is now in the Draw tab's model picker."
    return message, models_frame(), download_dropdown(dest.stem), model_dropdown(current_model)


# ----------------------------------------------------------------------------------------------------------------
# Layout and wiring

def build_draw_tab() -> dict:
    entries = catalogue()
    ui: dict = {}
    gr.Markdown("Draw a digit with your mouse or finger: the brush is ready. The prediction updates after every "
                "stroke; the bin icon clears the canvas.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=300):
            ui["sketch"] = gr.Sketchpad(
                label="Draw a digit", elem_id="sketch", type="numpy", image_mode="RGBA", canvas_size=(CANVAS, CANVAS),
                height=CANVAS + 140, layers=False, transforms=(), fixed_canvas=True,
                brush=gr.Brush(default_size=BRUSH_RADIUS, colors=["#000000"], color_mode="fixed"),
                eraser=gr.Eraser(default_size=2 * BRUSH_RADIUS))
            ui["model"] = gr.Dropdown(choices=[e.choice for e in entries], value=default_model(entries),
                                      label="Model", elem_id="model", interactive=True,
                                      # API clients name models trained after the page (and its choices) loaded.
                                      allow_custom_value=True)
        with gr.Column(scale=4, min_width=260):
            ui["verdict"] = gr.Markdown("The canvas is blank: draw a digit.", label="Verdict", elem_id="verdict")
            ui["probs"] = gr.Label(num_top_classes=10, label="Probabilities", elem_id="probs")
        with gr.Column(scale=3, min_width=200):
            # PNG, not Gradio's default lossy WebP: the model's pixels arrive exactly, and encoding both images
            # costs ~0.9 ms of server CPU per stroke instead of ~3.6 ms.
            shown = dict(interactive=False, height=240, buttons=[], format="png")
            ui["seen"] = gr.Image(label="What the model sees (28×28)", elem_id="seen", **shown)
            ui["saliency"] = gr.Image(label="Pixels that drove the decision", elem_id="saliency", **shown)
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Accordion("Compare all models on this drawing", open=True):
                ui["compare"] = gr.Dataframe(label="Every model's answer", elem_id="compare", interactive=False,
                                             headers=["model", "architecture", "top", "confidence"], max_height=320)
        with gr.Column(scale=2):
            with gr.Accordion("…or upload an image instead", open=True):
                ui["upload"] = gr.Image(label="Image of a digit (any colours, any size)", type="filepath",
                                        sources=["upload", "clipboard"], elem_id="upload", height=220)
    ui["last"] = gr.State(None)
    return ui


def build_train_tab() -> dict:
    ui: dict = {}
    default_arch = "cnn"
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            ui["dataset"] = gr.Radio(dataset_choices(), value="mnist", label="Dataset", elem_id="dataset")
            ui["csv"] = gr.File(label="CSV file: label + 784 pixel columns (0-255), like Kaggle's train.csv",
                                file_types=[".csv"], type="filepath", visible=False, elem_id="csv")
            ui["arch"] = gr.Dropdown(arch_choices(), value=default_arch, label="Architecture", elem_id="arch")
            ui["arch_info"] = gr.Markdown(arch_description(default_arch))
            with gr.Row():
                ui["device"] = gr.Dropdown([(f"auto ({device_key('auto')})", "auto")]
                                           + [(d, d) for d in available_devices() if d != "auto"],
                                           value="auto", label="Device", elem_id="device")
                # Recipe-dependent settings start empty (so the API's default is "the recipe") and are filled
                # with the architecture's recipe when the page loads. No min/max here: the library's range
                # checks name the setting in their message, Gradio's do not.
                ui["optimizer"] = gr.Dropdown(list(OPTIMIZERS), value=None, label="Optimizer", elem_id="optimizer")
            with gr.Row():
                ui["lr"] = gr.Number(None, label="Learning rate", elem_id="lr")
                ui["batch"] = gr.Number(None, label="Batch size", precision=0, elem_id="batch")
            with gr.Row():
                ui["epochs"] = gr.Number(None, label="Epochs", precision=0, elem_id="epochs")
                ui["subset"] = gr.Number(0, label="Training subset (images; 0 = all)", precision=0,
                                         elem_id="subset")
            with gr.Row():
                ui["augment"] = gr.Checkbox(False, label="Augment (small rotations, shifts, zoom)", elem_id="augment")
                ui["seed"] = gr.Number(0, label="Seed", precision=0, elem_id="seed")
            with gr.Row():
                ui["train"] = gr.Button("Train", variant="primary", elem_id="train-btn")
                ui["stop"] = gr.Button("Stop", variant="stop", elem_id="stop-btn")
            ui["overfit"] = gr.Button("Sanity check: overfit 64 images", elem_id="overfit-btn", size="sm")
        with gr.Column(scale=3, min_width=400):
            ui["progress"] = gr.HTML(LiveRun("", 0).progress_html(), label="Progress", elem_id="progress")
            ui["status"] = gr.Textbox(label="Status", elem_id="train-status", interactive=False, lines=2)
            with gr.Row():
                ui["loss_plot"] = gr.LinePlot(LiveRun("", 0).loss_frame(), x="step", y="loss",
                                              title="Training loss (per step)", label="Loss curve", show_label=False,
                                              elem_id="loss-plot", height=300)
                ui["acc_plot"] = gr.HTML(LiveRun("", 0).accuracy_chart(), label="Accuracy per epoch",
                                         elem_id="acc-plot")
            ui["epoch_table"] = gr.Dataframe(LiveRun("", 0).epoch_table(), label="Epochs", elem_id="epoch-table",
                                             interactive=False,
                                             max_height=200)
            ui["summary"] = gr.JSON(label="Run summary (the /train API ends with this)", elem_id="summary",
                                    open=False)
    with gr.Accordion("Results on the test set", open=True, elem_id="results"):
        ui["headline"] = gr.Markdown("Train a model to see its test accuracy, mistakes and confusion matrix here.",
                                     elem_id="headline")
        with gr.Row(equal_height=False):
            ui["per_class"] = gr.BarPlot(typed_frame([], **{"class": "str", "error %": "float64"}), x="class",
                                         y="error %", title="Per-class error rate (100% − class accuracy)",
                                         label="Per-class error rate", show_label=False, elem_id="per-class",
                                         y_lim=[0, None], height=300)
            ui["confusion"] = gr.HTML(label="Confusion matrix", elem_id="confusion")
        ui["gallery"] = gr.Gallery(label="Most confident mistakes (true → predicted)", columns=8, height=300,
                                   elem_id="mistakes", object_fit="contain")
        with gr.Row(equal_height=False):
            ui["table"] = gr.Dataframe(label="Predicted vs true, every test image", elem_id="pred-table",
                                       interactive=False, max_height=300)
            ui["ckpt_file"] = gr.File(label="Download the checkpoint", elem_id="ckpt-file", interactive=False)
    ui["result"] = gr.State(None)
    return ui


def build_models_tab() -> dict:
    ui: dict = {}
    ui["table"] = gr.Dataframe(models_frame(), label="Checkpoints", elem_id="models-table", interactive=False,
                               max_height=420)
    with gr.Row(equal_height=False):
        with gr.Column():
            ui["refresh"] = gr.Button("Refresh", size="sm")
            ui["pick"] = download_dropdown()
            ui["file"] = gr.File(label="Download", interactive=False, elem_id="model-file")
        with gr.Column():
            ui["upload"] = gr.File(label="Upload a checkpoint (.safetensors only)", file_types=[".safetensors"],
                                   elem_id="ckpt-upload")
            ui["upload_status"] = gr.Markdown(label="Upload result", elem_id="upload-status")
    return ui


def wire_draw(d: dict) -> None:
    outputs = [d["probs"], d["verdict"], d["seen"], d["saliency"], d["compare"], d["last"]]
    fast = dict(concurrency_id="classify", concurrency_limit=4, show_progress="hidden")
    # Exactly one listener reads the sketchpad: a second one would find its uploaded strokes already consumed.
    d["sketch"].change(draw, [d["sketch"], d["model"]], outputs, api_name="draw", trigger_mode="always_last",
                       **fast)
    d["model"].input(on_model_change, [d["last"], d["model"]], outputs, api_visibility="private", **fast)
    d["upload"].upload(on_upload, [d["upload"], d["model"]], outputs, preprocess=False, api_visibility="private",
                       **fast)
    d["upload"].clear(on_upload, [d["upload"], d["model"]], outputs, preprocess=False, api_visibility="private",
                      **fast)
    # /classify for API clients: an image file in, {class: probability} out. Its components stay hidden.
    with gr.Group(visible=False):
        image = gr.Image(type="filepath", label="image")
        model = gr.Textbox("", label="model (a name from /models; empty = default)")
        label = gr.Label(label="probabilities")
    image.upload(classify, [image, model], label, api_name="classify", preprocess=False, **fast)


def wire_train(demo: gr.Blocks, t: dict, d: dict, m: dict) -> None:
    settings = [t[k] for k in ("dataset", "csv", "arch", "device", "optimizer", "lr", "batch", "epochs", "subset",
                               "augment", "seed")]
    stream = [t["progress"], t["status"], t["loss_plot"], t["acc_plot"], t["epoch_table"], t["summary"], t["result"]]
    results = [t["headline"], t["per_class"], t["confusion"], t["gallery"], t["table"], t["ckpt_file"], d["model"],
               m["table"], m["pick"]]
    buttons = [t["train"], t["overfit"]]
    t["dataset"].change(lambda ds: gr.File(visible=ds == "csv"), t["dataset"], t["csv"], api_visibility="private")
    recipe_fields = [t["optimizer"], t["lr"], t["batch"], t["epochs"], t["augment"], t["arch_info"]]
    for trigger in (t["arch"].input, t["device"].input, demo.load):
        trigger(recipe, [t["arch"], t["device"]], recipe_fields, api_visibility="private")
    for button, fn in ((t["train"], train), (t["overfit"], sanity_check)):
        run = button.click(arm, None, [t["status"], *buttons], api_visibility="private").then(
            fn, settings, stream, concurrency_id="train", concurrency_limit=TRAIN_SLOTS, show_progress="minimal",
            show_progress_on=[t["status"]], api_name=fn.__name__)
        run.success(show_results, [t["result"], d["model"]], results, api_visibility="private")
        run.then(enable_buttons, None, buttons, api_visibility="private")
    # Stop must never queue behind the run it stops, so it has no concurrency limit.
    t["stop"].click(stop, None, t["status"], concurrency_limit=None, api_name="stop")


def wire_models(m: dict, d: dict, models_tab: gr.Tab) -> None:
    # /models returns just the table; the download picker follows it.
    m["refresh"].click(models_frame, None, m["table"], api_name="models").then(
        download_dropdown, m["pick"], m["pick"], api_visibility="private")
    models_tab.select(models_frame, None, m["table"], api_visibility="private").then(
        download_dropdown, m["pick"], m["pick"], api_visibility="private")
    m["pick"].change(checkpoint_file, m["pick"], m["file"], api_visibility="private")
    m["upload"].upload(upload_checkpoint, [m["upload"], d["model"]],
                       [m["upload_status"], m["table"], m["pick"], d["model"]], preprocess=False,
                       api_name="upload_checkpoint")


def build_demo() -> gr.Blocks:
    """The whole app; launch it with `build_demo().launch(**launch_options())`."""
    with gr.Blocks(title="MNIST playground") as demo:
        gr.Markdown("# ✍️ MNIST playground\nDraw digits for a neural network, train your own models live, "
                    "and compare them.")
        with gr.Tabs():
            with gr.Tab("Draw", id="draw") as draw_tab:
                d = build_draw_tab()
            with gr.Tab("Train", id="train"):
                t = build_train_tab()
            with gr.Tab("Models", id="models") as models_tab:
                m = build_models_tab()
        wire_draw(d)
        wire_train(demo, t, d, m)
        wire_models(m, d, models_tab)
        # Other sessions may have trained or uploaded models since the server started or the tab was last seen.
        draw_tab.select(model_dropdown, d["model"], d["model"], api_visibility="private")
        demo.load(None, None, None, js=BRUSH_JS)
        demo.load(refresh_on_load, [d["model"], m["pick"]], [d["model"], m["table"], m["pick"], m["file"]],
                  api_visibility="private")
    return demo.queue(max_size=64, default_concurrency_limit=4)


def launch_options() -> dict:
    """Settings that Gradio 6 takes at launch() rather than in Blocks(); tests use them too."""
    # Checkpoint folders may live outside the working directory (env settings), yet must stay downloadable.
    folders = [str(checkpoint_dir().resolve()), str(api.runs_dir().resolve())]
    return dict(theme=gr.themes.Soft(primary_hue="indigo"), css=CSS, max_file_size="25mb", allowed_paths=folders)


if __name__ == "__main__":
    api.serve_only()
    _workers[device_key("auto")].start()  # imports torch in the background, so the first Train starts at once
    build_demo().launch(**launch_options())  # GRADIO_SERVER_NAME / GRADIO_SERVER_PORT are honoured by launch()
