"""What the app shows: words, pictures and tables built from predictions and results, as pure functions."""

import base64
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mnist_demo import figures
from mnist_demo.catalogue import ModelEntry
from mnist_demo.data import CLASS_NAMES, NORMALISATION
from mnist_demo.errors import BLANK_CANVAS
from mnist_demo.figures import ZOOM
from mnist_demo.finetune import COSTLY
from mnist_demo.inference import Prediction
from mnist_demo.models import create_model
from mnist_demo.train import MISTAKES_KEPT, evaluate
from mnist_demo.turns import TURNS

DIGITS = CLASS_NAMES["mnist"]
FASHION = CLASS_NAMES["fashion-mnist"]
GREEN, RED = "22,163,74", "220,38,38"


def _probs(top: int, p: float, second: int | None = None, p2: float | None = None) -> np.ndarray:
    """Ten probabilities summing to 1 with `top` at p (and `second` at p2), the rest shared evenly."""
    probs = np.zeros(10)
    probs[top] = p
    if second is not None:
        probs[second] = p2
    rest = [i for i in range(10) if probs[i] == 0]
    probs[rest] = (1 - probs.sum()) / len(rest)
    return probs


def test_percent_has_one_decimal():
    assert figures.percent(0.5) == "50.0%"
    assert figures.percent(0.98765) == "98.8%"
    assert figures.percent(1.0) == "100.0%"


@pytest.mark.parametrize("name, expected", [("8", "an"), ("Ankle boot", "an"), ("7", "a"), ("Bag", "a"),
                                            ("11", "a"), ("", "a")])
def test_article(name, expected):
    assert figures.article(name) == expected


def test_a_sure_verdict_names_the_answer_and_how_sure():
    probs = _probs(8, 0.93)
    assert figures.verdict(probs, DIGITS) == f"It's an **8** ({figures.percent(probs[8])} sure)."
    bag = _probs(FASHION.index("Bag"), 0.9)
    assert figures.verdict(bag, FASHION).startswith("It's a **Bag** (")


def test_an_unsure_verdict_names_the_top_two():
    p1 = figures.UNSURE_BELOW - 0.1
    probs = _probs(3, p1, second=5, p2=(1 - p1) * 0.7)
    text = figures.verdict(probs, DIGITS)
    assert "Not sure" in text and "sure)" not in text
    assert f"**3** ({figures.percent(probs[3])})" in text and f"**5** ({figures.percent(probs[5])})" in text
    assert text.index("**3**") < text.index("**5**")  # the likelier one first


def test_the_threshold_itself_reads_as_sure():
    assert "Not sure" not in figures.verdict(_probs(2, figures.UNSURE_BELOW), DIGITS)


def test_a_blank_canvas_verdict():
    assert figures.verdict(None, DIGITS) == BLANK_CANVAS
    assert figures.verdict(None, DIGITS, note="Too faint to read.") == "Too faint to read."
    assert figures.verdict(_probs(1, 0.9), DIGITS, note="(centred)").endswith(" (centred)")


def test_the_verdict_and_the_comparison_print_the_same_percentage():
    probs = _probs(8, 0.98765)  # a value whose rounding shows whether both use one format
    entry = ModelEntry("mine", Path("mine.safetensors"), {"arch": "logreg", "classes": DIGITS})
    pred = Prediction(probs.astype(np.float32), np.zeros((28, 28), np.float32))
    row = figures.comparison([(entry, pred)], selected="mine").iloc[0]
    assert row["model"] == "▶ mine" and row["answer"] == "8"
    assert f"({row['confidence']} sure)" in figures.verdict(pred.probabilities, DIGITS)


def test_the_comparison_marks_unreadable_models_and_blank_input():
    entry = ModelEntry("a", Path("a.safetensors"), {"arch": "cnn"}, place="bundled")
    other = ModelEntry("b", Path("b.safetensors"), {"arch": "logreg"})
    frame = figures.comparison([(entry, None), (other, Prediction(None, None))], selected="a")
    assert list(frame.columns) == figures.COMPARE_COLUMNS
    assert frame["model"].tolist() == ["▶ a", "b"]
    assert frame["answer"].tolist() == ["unreadable", "—"] and frame["confidence"].tolist() == ["—", "—"]


def test_digit_image_is_pixel_exact_at_zoom():
    digit = np.random.default_rng(0).random((28, 28), dtype=np.float32)
    img = figures.digit_image(digit)
    assert img.shape == (28 * ZOOM, 28 * ZOOM) and img.dtype == np.uint8
    blocks = img.reshape(28, ZOOM, 28, ZOOM)
    expected = np.round(digit * 255).astype(np.uint8)
    assert (blocks == expected[:, None, :, None]).all()  # every model pixel is one flat ZOOM×ZOOM square


def test_enlarge_keeps_pixels_and_channels():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    big = figures.enlarge(image, zoom=4)
    assert big.shape == (8, 12, 3)
    assert (big[::4, ::4] == image).all() and (big[3::4, 3::4] == image).all()


def test_saliency_overlay_shape_and_colours():
    digit = np.zeros((28, 28), np.float32)
    digit[10:18, 12:16] = 1.0
    quiet = figures.saliency_overlay(digit, np.zeros((28, 28), np.float32))
    assert quiet.shape == (28 * ZOOM, 28 * ZOOM, 3) and quiet.dtype == np.uint8
    # Without saliency the digit shows in dimmed grey.
    assert (quiet == figures.enlarge(np.repeat(np.round(digit * 0.6 * 255).astype(np.uint8)[..., None], 3, 2))).all()
    saliency = np.zeros((28, 28), np.float32)
    saliency[0, 0] = 0.5
    hot = figures.saliency_overlay(digit, saliency)
    r, g, b = (int(c) for c in hot[0, 0])
    assert r > g > b  # 'hot' scale: red, then yellow
    assert (hot[ZOOM:, ZOOM:] == quiet[ZOOM:, ZOOM:]).all()


@pytest.mark.parametrize("eps, classes", [(0.1, 10), (0.05, 10), (0.3, 10), (0.1, 3)])
def test_smoothing_floor_is_the_lowest_reachable_training_loss(eps, classes):
    target = 1
    q = torch.full((classes,), eps / classes, dtype=torch.float64)
    q[target] += 1 - eps  # the smoothed target; a model predicting exactly q reaches the floor
    loss = F.cross_entropy(q.log()[None], torch.tensor([target]), label_smoothing=eps)
    assert figures.smoothing_floor(eps, classes) == pytest.approx(float(loss), abs=1e-6)
    worse = F.cross_entropy((q.log() + 0.1 * torch.randn(classes, dtype=torch.float64))[None],
                            torch.tensor([target]), label_smoothing=eps)
    assert float(worse) > figures.smoothing_floor(eps, classes)


def test_no_smoothing_has_no_floor_and_no_note():
    assert figures.smoothing_floor(0.0) == 0.0
    assert figures.smoothing_note(0.0) == ""


def test_the_smoothing_note_states_the_floor():
    note = figures.smoothing_note(0.1)
    assert f"{figures.smoothing_floor(0.1):.2f}" in note and "0.1" in note
    assert f"{1 - 0.1 + 0.1 / 10:.0%}" in note


def test_class_labels_sort_in_class_order():
    assert figures.class_labels(DIGITS) == DIGITS
    labels = figures.class_labels(FASHION)
    assert sorted(FASHION) != FASHION  # the bare names alone would sort out of order...
    assert sorted(labels) == labels  # ...so each carries its index
    assert all(label.endswith(name) for label, name in zip(labels, FASHION))


def test_per_class_errors_are_what_is_missing_from_each_accuracy():
    acc = [1.0, 0.99, 0.975, 0.5, 0.9, 0.8, 0.7, 0.6, 0.95, 0.0]
    frame = figures.per_class_errors(acc, FASHION)
    assert frame["class"].tolist() == figures.class_labels(FASHION)
    assert np.allclose(frame["error %"], [100 * (1 - a) for a in acc])
    assert frame["error %"].dtype == np.float64


def _confusion() -> np.ndarray:
    m = np.diag([980, 1130, 1000, 990, 970, 880, 950, 1010, 960, 1000])
    m[4, 9], m[7, 2], m[3, 5] = 12, 20, 3
    return m


def test_confusion_table_data_holds_counts_and_accuracy():
    m = _confusion()
    data = figures.confusion_table(m.tolist(), DIGITS).data
    assert list(data.columns) == ["true", *[str(j) for j in range(10)], "acc."]
    assert data["true"].tolist() == figures.class_labels(DIGITS)
    assert (data[[str(j) for j in range(10)]].to_numpy() == m).all()
    assert data["acc."].tolist() == [figures.percent(m[i, i] / m[i].sum()) for i in range(10)]


def _style(ctx, row: int, col: int) -> dict[str, str]:
    return dict(ctx.get((row, col), []))


def test_confusion_table_colours_right_green_and_mistakes_red():
    m = _confusion()
    ctx = figures.confusion_table(m.tolist(), DIGITS)._compute().ctx
    for i in range(10):
        assert GREEN in _style(ctx, i, i + 1)["background-color"]  # column 0 holds the class label
        assert _style(ctx, i, 0) == {} and _style(ctx, i, 11) == {}  # label and accuracy cells stay plain
    alpha = lambda i, j: float(_style(ctx, i, j + 1)["background-color"].rstrip(")").split(",")[-1])
    for i, j in [(4, 9), (7, 2), (3, 5)]:
        assert RED in _style(ctx, i, j + 1)["background-color"] and alpha(i, j) > 0
    assert alpha(7, 2) > alpha(4, 9) > alpha(3, 5)  # the worst mistake is the reddest
    assert alpha(0, 1) == 0  # no mistakes, no colour
    assert "color" in _style(ctx, 7, 3) and "color" not in _style(ctx, 3, 6)  # white ink on the dark cells only


def test_mistakes_gallery_from_a_real_report(mnist):
    test = mnist.test.take(slice(0, 400))
    report = evaluate(create_model("logreg"), test, NORMALISATION["mnist"])  # untrained: mostly wrong
    assert len(report["mistakes"]) == MISTAKES_KEPT
    gallery = figures.mistakes_gallery(report["mistakes"], DIGITS)
    assert len(gallery) == MISTAKES_KEPT
    for (image, caption), m in zip(gallery, report["mistakes"]):
        assert image.shape == (28 * 4, 28 * 4) and image.dtype == np.uint8
        assert (image[::4, ::4] == test.images[m["index"]].numpy()).all()
        assert caption == f"{m['true']} → {m['predicted']} · {figures.percent(m['confidence'])}"


def test_mistakes_gallery_uses_class_names():
    mistake = {"index": 0, "true": 9, "predicted": 5, "confidence": 0.876, "image": np.zeros((28, 28)).tolist()}
    [(_, caption)] = figures.mistakes_gallery([mistake], FASHION)
    assert caption == f"Ankle boot → Sandal · {figures.percent(0.876)}"


def test_prediction_table():
    frame = figures.prediction_table([9, 1, 5], [9, 2, 5], FASHION)
    assert list(frame.columns) == ["index", "true", "predicted", "correct"]
    assert frame["index"].tolist() == [0, 1, 2]
    assert frame["true"].tolist() == [FASHION[9], FASHION[2], FASHION[5]]
    assert frame["predicted"].tolist() == [FASHION[9], FASHION[1], FASHION[5]]
    assert frame["correct"].tolist() == ["✓", "✗", "✓"]


def test_models_table_has_one_row_per_model():
    entries = [
        ModelEntry("cnn", Path("checkpoints/cnn.safetensors"),
                   {"arch": "cnn", "dataset": "mnist", "params": 123456, "metrics": {"test_accuracy": 0.9912},
                    "train_time_s": 75.4, "device": "cpu, bf16 autocast", "created": "2024-05-06T07:08:09Z"},
                   place="bundled"),
        ModelEntry("upload", Path("runs/upload.safetensors"), {"arch": "logreg", "dataset": "/tmp/x/digits.csv"}),
    ]
    frame = figures.models_table(entries)
    assert list(frame.columns) == figures.MODEL_COLUMNS and len(frame) == len(entries)
    first, second = frame.iloc[0], frame.iloc[1]
    assert first["model"] == "cnn (bundled)" and second["model"] == "upload"
    assert first["test accuracy"] == figures.percent(0.9912) and second["test accuracy"] == "—"
    assert first["parameters"] == "123,456" and first["training time"] == figures.fmt_seconds(75.4) == "1:15"
    assert first["device"] == "cpu" and first["date"] == "2024-05-06"
    assert second["dataset"] == "digits.csv" and second["training time"] == "—"


def test_models_table_of_nothing_still_has_its_columns():
    frame = figures.models_table([])
    assert isinstance(frame, pd.DataFrame) and frame.empty and list(frame.columns) == figures.MODEL_COLUMNS


def test_pictures_html_carries_every_picture_with_its_words():
    from mnist_demo.inside import Picture

    pictures = [Picture("conv 1 of 3 · 16 maps", "Where <each> detector fired.", Image.new("RGB", (30, 20))),
                Picture("first layer", "Orange & blue.", Image.new("RGB", (12, 12), "orange"))]
    page = figures.pictures_html(pictures)
    assert page.count("<figure>") == len(pictures)
    assert "&lt;each&gt;" in page and "Orange &amp; blue." in page  # captions are text, never markup
    sources = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    decoded = [Image.open(io.BytesIO(base64.b64decode(s))) for s in sources]
    assert [im.size for im in decoded] == [p.image.size for p in pictures]


def test_examples_gallery_and_notes_say_what_a_learner_needs():
    from mnist_demo import examples

    ex = examples.empty()
    assert "No examples yet" in figures.examples_note(ex, DIGITS)
    for label in ("7", "7", "1"):
        ex = examples.add(ex, np.eye(28, dtype=np.float32), label, DIGITS)
    note = figures.examples_note(ex, DIGITS)
    assert note.startswith(f"{len(ex)} examples") and "2 × 7" in note and "Ready" in note
    assert "two different" in figures.examples_note(ex.take(slice(0, 2)), DIGITS)
    tiles = figures.examples_gallery(ex, DIGITS)
    assert [caption for _, caption in tiles] == ["7", "7", "1"]
    taught = {"labels": [7, 7, 1], "before": [1, 7, 1], "after": [7, 7, 7]}
    captions = [caption for _, caption in figures.examples_gallery(ex, DIGITS, taught)]
    assert captions == ["7: 1 → 7 ✓", "7: 7 → 7 ✓", "1: 1 → 7 ✗"]


def taught(turned: dict[str, str] | None = None, images: int = 0, cost: dict[int, float] | None = None) -> dict:
    """A 'saved' record of teaching: the MNIST digits in `cost` lost that much accuracy, the others a little less
    than teaching's outcome names."""
    before = [0.99] * len(DIGITS)
    after = [b - (cost or {}).get(d, COSTLY / 2) for d, b in enumerate(before)]
    metrics = {"examples": 10, "examples_accuracy_before": 0.1, "examples_accuracy_after": 1.0,
               "test_accuracy_before": 0.9946, "test_accuracy": 0.9931, "per_class_accuracy_before": before,
               "per_class_accuracy": after}
    return {"metrics": metrics, "train_time_s": 4.2, "turned": turned or {}, "turned_images": images,
            "classes": DIGITS}


def test_taught_note_gives_both_sides_of_the_trade():
    note = figures.taught_note(taught(), "cnn", "cnn+you")
    assert "**cnn+you** (from cnn)" in note and "10.0% → 100.0%" in note and "99.46% → 99.31%" in note
    assert "It saw" not in note and "misreads" not in note and note.endswith(". Draw now uses it.")


def test_taught_note_says_what_it_did_with_turned_digits():
    way = TURNS[1].name
    note = figures.taught_note(taught({"4": way, "7": way}, 12107), "cnn", "cnn+you")
    assert f"your 4s and 7s are {way}" in note and "12,107 MNIST training digits" in note


def test_taught_note_names_the_real_digits_that_paid_for_it():
    note = figures.taught_note(taught(cost={2: 2 * COSTLY, 5: 3 * COSTLY}), "cnn", "cnn+you")
    two, five = (figures.percent(0.99 - c) for c in (2 * COSTLY, 3 * COSTLY))
    assert f"misreads more of MNIST's own 2s (99.0% → {two} read right) and 5s (99.0% → {five} read right)." in note
    assert "0s" not in note and note.endswith(". Draw now uses it.")
