"""A person's own examples: adding and removing drawings, the session's limit, and the tutorial's CSV format."""

import numpy as np
import pytest
import torch

from mnist_demo import examples
from mnist_demo.data import CLASS_NAMES, DataError, Split, load_csv
from mnist_demo.errors import BLANK_CANVAS, UserError
from mnist_demo.examples import ExamplesError

DIGITS = CLASS_NAMES["mnist"]


def drawing(seed: int) -> np.ndarray:
    """A 28×28 image like preprocess makes: floats in [0, 1]."""
    return np.random.default_rng(seed).random((28, 28), dtype=np.float32)


def some(n: int) -> Split:
    found = examples.empty()
    for i in range(n):
        found = examples.add(found, drawing(i), i % len(DIGITS), DIGITS)
    return found


def test_add_keeps_the_image_the_model_saw_and_leaves_the_old_examples_alone():
    before = some(2)
    after = examples.add(before, drawing(7), "7", DIGITS)
    assert len(before) == 2 and len(after) == 3
    assert after.images.dtype == torch.uint8 and after.images.shape == (3, 28, 28)
    assert after.labels.tolist() == [0, 1, 7]
    assert np.abs(after.images[-1].numpy() / 255 - drawing(7)).max() <= 0.5 / 255


@pytest.mark.parametrize("label", [10, -1, "x", "", True, 3.5, None])
def test_a_label_outside_the_classes_is_refused_in_plain_words(label):
    with pytest.raises(ExamplesError, match=f"the label must be one of {DIGITS[0]}–{DIGITS[-1]}$"):
        examples.add(examples.empty(), drawing(0), label, DIGITS)


@pytest.mark.parametrize("digit, message", [(None, BLANK_CANVAS), (np.zeros((20, 20)), "must be a 28×28 image"),
                                            (np.full((28, 28), np.nan), "must be a 28×28 image")])
def test_a_drawing_that_is_not_a_digit_is_refused(digit, message):
    with pytest.raises(ExamplesError, match=message):
        examples.add(examples.empty(), digit, 3, DIGITS)


def test_a_session_keeps_at_most_the_limit(monkeypatch):
    monkeypatch.setattr(examples, "MAX_EXAMPLES", 3)
    full = some(3)
    with pytest.raises(ExamplesError, match="at most 3 examples"):
        examples.add(full, drawing(9), 1, DIGITS)


def test_join_adds_uploaded_examples_within_the_limit(monkeypatch):
    joined = examples.join(some(2), some(3))
    assert joined.labels.tolist() == [0, 1, 0, 1, 2] and torch.equal(joined.images[2:], some(3).images)
    monkeypatch.setattr(examples, "MAX_EXAMPLES", 4)
    with pytest.raises(ExamplesError, match="at most 4 examples"):
        examples.join(some(2), some(3))


def test_remove_takes_out_one_example():
    found = some(4)
    left = examples.remove(found, 1)
    assert left.labels.tolist() == [0, 2, 3] and len(found) == 4
    assert torch.equal(left.images[1], found.images[2])


@pytest.mark.parametrize("index", [-1, 4])
def test_removing_an_example_that_is_not_there_says_so(index):
    with pytest.raises(ExamplesError, match="there is no example number"):
        examples.remove(some(4), index)


def test_csv_round_trip_is_exact_in_the_tutorials_format(tmp_path):
    found = some(12)
    path = examples.to_csv(found, tmp_path / "mine.csv")
    header = path.read_text().splitlines()[0].split(",")
    assert header == ["label"] + [f"pixel{i}" for i in range(28 * 28)]
    back = examples.from_csv(path)
    assert torch.equal(back.images, found.images) and torch.equal(back.labels, found.labels)
    assert torch.equal(load_csv(path).images, found.images)  # the Train tab's CSV reader takes it too


def test_no_examples_to_download(tmp_path):
    with pytest.raises(ExamplesError, match=examples.no_examples("download")):
        examples.to_csv(examples.empty(), tmp_path / "none.csv")
    assert not (tmp_path / "none.csv").exists()


def _write(path, header: list[str], rows: list[list]) -> str:
    path.write_text("\n".join(",".join(map(str, r)) for r in [header, *rows]) + "\n")
    return str(path)


PIXELS = [f"pixel{i}" for i in range(28 * 28)]


@pytest.mark.parametrize("header, rows, message", [
    (["label"] + PIXELS[:100], [[1] + [0] * 100], "784 pixel columns, found 101 columns"),
    (PIXELS, [[0] * 784], "no 'label' column"),
    (["label"] + PIXELS, [[12] + [0] * 784], "label 12 is not a digit 0-9"),
    (["label"] + PIXELS, [[3] + [300] * 784], "outside 0-255"),
    (["label"] + PIXELS, [], "no data rows"),
])
def test_a_csv_in_the_wrong_shape_is_refused_without_server_paths(tmp_path, header, rows, message):
    path = _write(tmp_path / "mine.csv", header, rows)
    with pytest.raises(DataError, match=message) as err:
        examples.from_csv(path)
    assert str(tmp_path) not in str(err.value) and isinstance(err.value, UserError)


def test_a_csv_over_the_limit_is_refused(tmp_path, monkeypatch):
    path = examples.to_csv(some(5), tmp_path / "mine.csv")
    monkeypatch.setattr(examples, "MAX_EXAMPLES", 4)
    with pytest.raises(DataError, match="has 5 rows; the limit is 4"):
        examples.from_csv(path)
