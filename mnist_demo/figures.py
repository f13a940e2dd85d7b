"""What the app shows, as pure functions: arrays to images, predictions to words, results to tables and charts."""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from .catalogue import PLACES, ModelEntry
from .data import Split
from .errors import BLANK_CANVAS
from .finetune import describe_cost
from .inference import Prediction
from .turns import describe

if TYPE_CHECKING:  # inside.py draws with this module's helpers
    from .inside import Picture

ZOOM = 8  # the 28×28 model input is shown at 224×224, pixel-exact
UNSURE_BELOW = 0.6  # top probability under this reads as "not sure"
SMOOTHING_NOTE = ("Label smoothing {eps:g} is on: the training targets give the right class {right:.0%}, so the "
                  "training loss cannot go below {floor:.2f}. The validation loss is plain cross-entropy.")


def percent(p: float) -> str:
    """One rounding for every probability the app prints, so the verdict and the comparison always agree."""
    return f"{100 * p:.1f}%"


def article(name: str) -> str:
    """'an 8', 'an Ankle boot', 'a 7', 'a Bag'."""
    return "an" if name[:1].lower() in "8aeiou" and name else "a"


def enlarge(image: np.ndarray, zoom: int = ZOOM) -> np.ndarray:
    """Nearest-neighbour upscale so every model pixel stays a crisp square."""
    return np.repeat(np.repeat(image, zoom, axis=0), zoom, axis=1)


def digit_image(digit: np.ndarray, zoom: int = ZOOM) -> np.ndarray:
    """A [0, 1] float digit as the uint8 picture of exactly what the model saw."""
    return enlarge((np.asarray(digit) * 255).round().astype(np.uint8), zoom)


def saliency_overlay(digit: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """The digit in grey with the saliency map laid over it in a black-red-yellow 'hot' scale."""
    grey = np.repeat(digit[..., None], 3, axis=2) * 0.6
    s = np.clip(saliency, 0, 1)[..., None]
    hot = np.concatenate([np.clip(3 * s, 0, 1), np.clip(3 * s - 1, 0, 1), np.clip(3 * s - 2, 0, 1)], axis=2)
    alpha = np.clip(s * 1.5, 0, 0.9)
    return enlarge((255 * ((1 - alpha) * grey + alpha * hot)).round().astype(np.uint8))


def png_data_uri(image: Image.Image, optimize: bool = True) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=optimize)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def inline_image(image: np.ndarray | None, alt: str) -> str | None:
    """A picture drawn at every stroke, inside the page's HTML: no file to write, and none for the page to fetch."""
    if image is None:
        return None
    return f'<img src="{png_data_uri(Image.fromarray(image), optimize=False)}" alt="{html.escape(alt)}">'


def pictures_html(pictures: list[Picture]) -> str:
    """Captioned pictures as one block of figures: how many there are depends on the model, not on the layout."""
    items = "".join(
        f'<figure><img src="{png_data_uri(p.image)}" alt="{html.escape(p.title)}" width="{p.image.width}">'
        f"<figcaption><strong>{html.escape(p.title)}</strong><br>{html.escape(p.caption)}</figcaption></figure>"
        for p in pictures)
    return f'<div class="pictures">{items}</div>'


def probabilities(probs: np.ndarray | None, classes: list[str]) -> dict[str, float] | None:
    return None if probs is None else {name: float(p) for name, p in zip(classes, probs)}


def verdict(probs: np.ndarray | None, classes: list[str], note: str = "") -> str:
    """One line a learner reads first: the answer and how sure, or the two candidates when unsure."""
    if probs is None:
        return note or BLANK_CANVAS
    order = np.argsort(probs)[::-1]
    first, second = (classes[i] for i in order[:2])
    p1, p2 = (float(probs[i]) for i in order[:2])
    if p1 < UNSURE_BELOW:
        text = f"🤔 Not sure: maybe **{first}** ({percent(p1)}), or **{second}** ({percent(p2)})."
    else:
        text = f"It's {article(first)} **{first}** ({percent(p1)} sure)."
    return f"{text} {note}".strip()


COMPARE_COLUMNS = ["model", "answer", "confidence"]
COMPARE_NOTE = ("Models trained with label smoothing (the CNNs' recipes use 0.1) are rarely more than ~95% sure: "
                "their training targets gave the right class 91%. A lower confidence there is no worse answer.")


def comparison(answers: list[tuple[ModelEntry, Prediction | None]], selected: str) -> pd.DataFrame:
    """Every model's answer to the same input, the selected one marked ▶."""
    rows = []
    for entry, pred in answers:
        answer = "unreadable" if pred is None else ("—" if pred.label is None else entry.classes[pred.label])
        confidence = percent(pred.confidence) if pred is not None and pred.label is not None else "—"
        rows.append({"model": ("▶ " if entry.key == selected else "") + entry.key, "answer": answer,
                     "confidence": confidence})
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def smoothing_floor(eps: float, classes: int = 10) -> float:
    """The lowest cross-entropy a model can reach against label-smoothed targets: their own entropy."""
    right, other = 1 - eps + eps / classes, eps / classes
    return float(-(right * np.log(right) + (classes - 1) * other * np.log(other))) if eps > 0 else 0.0


def smoothing_note(eps: float, classes: int = 10) -> str:
    if eps <= 0:
        return ""
    return SMOOTHING_NOTE.format(eps=eps, right=1 - eps + eps / classes, floor=smoothing_floor(eps, classes))


def class_labels(classes: list[str]) -> list[str]:
    """'3' for digits, '3 Dress' for named classes: the index keeps charts in class order and labels short."""
    return [name if name == str(i) else f"{i} {name}" for i, name in enumerate(classes)]


def per_class_errors(per_class_accuracy: list[float], classes: list[str]) -> pd.DataFrame:
    """Accuracies of 97-100% all look full as bars, so the chart shows what is missing: the error rate."""
    rows = [{"class": c, "error %": 100 * (1 - a)} for c, a in zip(class_labels(classes), per_class_accuracy)]
    return pd.DataFrame(rows, columns=["class", "error %"]).astype({"class": "str", "error %": "float64"})


def confusion_table(matrix: list[list[int]], classes: list[str]):
    """A heatmap as a styled table: green diagonal (share of the class right), red mistakes (scaled to the worst),
    each class's accuracy at the end of its row."""
    m = np.asarray(matrix)
    totals = np.maximum(m.sum(1), 1)
    frame = pd.DataFrame(m, columns=[str(j) for j in range(len(classes))])
    frame.insert(0, "true", class_labels(classes))
    frame["acc."] = [percent(m[i, i] / totals[i]) for i in range(len(classes))]
    worst = max(int((m - np.diag(np.diag(m))).max()), 1)

    def shade(i: int, j: int) -> str:
        alpha = m[i, j] / totals[i] if i == j else (m[i, j] / worst) ** 0.5 * 0.85
        rgb = "22,163,74" if i == j else "220,38,38"
        ink = "color: #fff;" if alpha > 0.55 else ""
        return f"background-color: rgba({rgb},{alpha:.2f}); {ink}"

    styles = pd.DataFrame("", index=frame.index, columns=frame.columns)
    for i in range(len(classes)):
        for j in range(len(classes)):
            styles.iat[i, j + 1] = shade(i, j)
    return frame.style.apply(lambda _: styles, axis=None)


def mistakes_gallery(mistakes: list[dict], classes: list[str]) -> list[tuple[np.ndarray, str]]:
    """The most confident test mistakes, each captioned 'true → predicted · confidence'."""
    return [(enlarge(np.asarray(m["image"], dtype=np.uint8), zoom=4),
             f"{classes[m['true']]} → {classes[m['predicted']]} · {percent(m['confidence'])}") for m in mistakes]


def examples_gallery(examples: Split, classes: list[str], taught: dict | None = None) -> list[tuple[np.ndarray, str]]:
    """A person's examples with their labels; after teaching, also the answers before → after ('7: 1 → 7 ✓')."""
    images = [digit_image(im.numpy() / 255, zoom=2) for im in examples.images]
    if taught is None:
        return [(im, classes[y]) for im, y in zip(images, examples.labels.tolist())]
    return [(im, f"{classes[y]}: {classes[b]} → {classes[a]} {'✓' if a == y else '✗'}")
            for im, y, b, a in zip(images, taught["labels"], taught["before"], taught["after"])]


def examples_note(examples: Split, classes: list[str]) -> str:
    """How many examples there are, of which digits, and what Teach needs."""
    if not len(examples):
        return "No examples yet: after a wrong answer, pick the right digit under the bars."
    counts = examples.labels.bincount(minlength=len(classes)).tolist()
    kinds = ", ".join(f"{n} × {classes[c]}" for c, n in enumerate(counts) if n)
    ready = " Ready to teach." if sum(1 for n in counts if n) > 1 else " Teaching needs at least two different digits."
    return f"{len(examples)} example{'s' if len(examples) != 1 else ''} ({kinds}).{ready}"


def taught_note(saved: dict, base: str, key: str) -> str:
    """The outcome of teaching, in the words a learner wants: my examples before/after, what it cost on MNIST, and
    what it did with digits I draw turned or mirrored."""
    m = saved["metrics"]
    mine = (f"your {m['examples']} examples read right {percent(m['examples_accuracy_before'])} → "
            f"{percent(m['examples_accuracy_after'])}")
    mnist = f"MNIST test {m['test_accuracy_before']:.2%} → {m['test_accuracy']:.2%}"
    took = fmt_seconds(saved["train_time_s"])
    turned = describe(saved["turned"], saved["turned_images"])
    cost = describe_cost(m, saved["classes"])
    return " ".join(filter(None, [f"✅ Taught **{key}** (from {base}) in {took}: {mine}; {mnist}.", turned, cost,
                                  "Draw now uses it."]))


def prediction_table(predicted: list[int], true: list[int], classes: list[str]) -> pd.DataFrame:
    """The tutorial-004 table: one row per test image with its true and predicted class."""
    names = np.asarray(classes, dtype=object)
    true_names, predicted_names = names[np.asarray(true)], names[np.asarray(predicted)]
    return pd.DataFrame({"index": np.arange(len(true)), "true": true_names, "predicted": predicted_names,
                         "correct": np.where(true_names == predicted_names, "✓", "✗")})


def fmt_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


MODEL_COLUMNS = ["model", "architecture", "dataset", "parameters", "test accuracy", "training time", "device", "date"]


def models_table(entries: list[ModelEntry]) -> pd.DataFrame:
    """The Models tab: one row per checkpoint, short enough to fit a laptop screen without scrolling sideways."""
    rows = []
    for e in entries:
        meta = e.meta
        rows.append({
            "model": e.key + (f" ({PLACES[e.place]})" if e.place in PLACES else ""), "architecture": e.arch,
            "dataset": str(meta.get("dataset", "")).rsplit("/", 1)[-1], "parameters": f"{meta.get('params', 0):,}",
            "test accuracy": percent(e.accuracy) if e.accuracy is not None else "—",
            "training time": fmt_seconds(meta["train_time_s"]) if meta.get("train_time_s") else "—",
            "device": str(meta.get("device") or "—").split(",")[0], "date": str(meta.get("created", ""))[:10],
        })
    return pd.DataFrame(rows, columns=MODEL_COLUMNS)


def accuracy_svg(train: list[float], val: list[float], width: int = 340, height: int = 240) -> str:
    """Per-epoch accuracy as a small SVG chart."""
    # Hand-made because Gradio's LinePlot draws nothing for a one-point series, and one epoch is the common case.
    left, right, top, bottom = 44, 12, 40, 26
    n = len(train)
    lowest = min([*train, *val], default=0.9)
    tick_step = next(t for t in (0.01, 0.02, 0.05, 0.1, 0.2) if (1 - lowest) / t <= 5)
    lo = max(0.0, np.floor(lowest / tick_step) * tick_step - (tick_step if lowest % tick_step < tick_step / 4 else 0))
    px = lambda i: left + (i + 0.5) * (width - left - right) / max(n, 1)
    py = lambda a: top + (1 - (a - lo) / (1 - lo)) * (height - top - bottom)
    parts = [f'<svg id="acc-svg" viewBox="0 0 {width} {height}" width="100%" role="img" '
             f'aria-label="accuracy per epoch" style="font:13px sans-serif;max-height:{height}px">',
             f'<text x="{width / 2}" y="14" text-anchor="middle" font-weight="600" fill="currentColor">'
             f'Accuracy per epoch</text>']
    for tick in np.arange(lo, 1.0 + tick_step / 2, tick_step):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{py(tick):.1f}" y2="{py(tick):.1f}" '
                     f'stroke="currentColor" stroke-opacity="0.15"/><text x="{left - 6}" y="{py(tick) + 4:.1f}" '
                     f'text-anchor="end" fill="currentColor">{tick:.0%}</text>')
    step = max(1, n // 10)
    parts += [f'<text x="{px(i):.1f}" y="{height - 10}" text-anchor="middle" fill="currentColor">{i + 1}</text>'
              for i in range(0, n, step)]
    if not n:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="currentColor">'
                     f'appears after the first epoch</text>')
    for k, (name, values, colour) in enumerate((("train", train, "#4f46e5"), ("validation", val, "#c2410c"))):
        points = " ".join(f"{px(i):.1f},{py(a):.1f}" for i, a in enumerate(values))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts += [f'<circle cx="{px(i):.1f}" cy="{py(a):.1f}" r="4" fill="{colour}"><title>{name} epoch {i + 1}: '
                  f'{a:.2%}</title></circle>' for i, a in enumerate(values)]
        label = f"{name} {values[-1]:.2%}" if values else name
        parts.append(f'<circle cx="{left + 8 + 140 * k}" cy="28" r="4" fill="{colour}"/>'
                     f'<text x="{left + 16 + 140 * k}" y="32" fill="currentColor">{label}</text>')
    return "".join(parts) + "</svg>"


WATCH_ZOOM = 2  # the watched digits at 56×56: ten columns fit ~600 px
WATCH_COLUMN, WATCH_CAPTION, WATCH_PAD = 58, 24, 6  # px: a column's width, the caption under each digit, margins
# The largest that fits is used: a digit gets 20 px, which a phone's 390 px screen shows at ~11 px (14 px came out at
# ~7); Fashion-MNIST's long names shrink.
WATCH_FONT_SIZES = (20, 18, 16, 14, 12, 10, 9)
WATCH_MARK = 10  # px: the tick or cross before a guess
RIGHT_RGB, WRONG_RGB, INK_RGB = (22, 163, 74), (220, 38, 38), (55, 65, 81)


def watch_grid(images, labels, guesses, classes: list[str]) -> Image.Image:
    """The watched test digits, a column per class, each with the model's current guess under it. A right guess
    has a thin green frame and a tick; a wrong one a thick red frame, a cross and the wrong class: shape and words
    tell them apart, not colour alone."""
    images, labels, guesses = np.asarray(images, dtype=np.uint8), np.asarray(labels), np.asarray(guesses)
    columns = [np.flatnonzero(labels == c) for c in range(len(classes))]
    side, rows = 28 * WATCH_ZOOM, max(len(c) for c in columns)
    top = 2 * WATCH_CAPTION
    picture = Image.new("RGB", (2 * WATCH_PAD + WATCH_COLUMN * len(classes),
                                top + rows * (side + WATCH_CAPTION) + WATCH_PAD), "white")
    draw = ImageDraw.Draw(picture)
    right = int((labels == guesses).sum())
    draw.text((WATCH_PAD, 2), f"Current guesses: {right} of {len(labels)} right", fill=INK_RGB,
              font=ImageFont.load_default(size=WATCH_FONT_SIZES[0]))
    for c, members in enumerate(columns):
        x = WATCH_PAD + c * WATCH_COLUMN
        _caption(draw, classes[c], x, WATCH_CAPTION, INK_RGB)
        for r, i in enumerate(members):
            y = top + r * (side + WATCH_CAPTION)
            picture.paste(Image.fromarray(enlarge(images[i], WATCH_ZOOM)), (x + 1, y))
            _verdict(draw, classes[int(guesses[i])], bool(guesses[i] == labels[i]), x, y, side)
    return picture


def _font(draw: ImageDraw.ImageDraw, text: str, width: float) -> ImageFont.FreeTypeFont:
    """The largest font size in which `text` fits `width` px (the smallest size when none does)."""
    for size in WATCH_FONT_SIZES:
        font = ImageFont.load_default(size=size)
        if draw.textlength(text, font=font) <= width:
            break
    return font


def _caption(draw: ImageDraw.ImageDraw, text: str, x: int, y: int, colour: tuple, indent: int = 0) -> None:
    """Text centred in a column (after `indent` px kept for a mark), shrunk to fit it."""
    room = WATCH_COLUMN - 2 - indent
    font = _font(draw, text, room)
    draw.text((x + 1 + indent + room / 2, y + WATCH_CAPTION / 2), text, fill=colour, font=font, anchor="mm")


def _verdict(draw: ImageDraw.ImageDraw, guess: str, right: bool, x: int, y: int, side: int) -> None:
    """A frame over the digit's empty border, and under it a tick or a cross before the guessed class."""
    colour = RIGHT_RGB if right else WRONG_RGB
    draw.rectangle((x + 1, y, x + side, y + side - 1), outline=colour, width=2 if right else 4)
    mx, my, h = x + 3, y + side + WATCH_CAPTION / 2, WATCH_MARK / 2
    if right:
        draw.line([(mx, my), (mx + 0.7 * h, my + 0.8 * h), (mx + 2 * h, my - h)], fill=colour, width=2)
    else:
        draw.line([(mx, my - h), (mx + 2 * h, my + h)], fill=colour, width=3)
        draw.line([(mx, my + h), (mx + 2 * h, my - h)], fill=colour, width=3)
    _caption(draw, guess, x, y + side, colour, indent=WATCH_MARK + 4)
