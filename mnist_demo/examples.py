"""A person's own labelled drawings: add, remove, and the tutorial's CSV format."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .data import CLASS_NAMES, DataError, Split, load_csv
from .errors import BLANK_CANVAS
from .preprocess import SIZE

MAX_EXAMPLES = 500  # per session: far more than a person draws, and teaching on them stays within seconds
CSV_MAX_BYTES = 4 * 2**20  # MAX_EXAMPLES rows of 785 numbers are under 2 MB
PIXELS = SIZE * SIZE
CSV_HEADER = ",".join(["label"] + [f"pixel{i}" for i in range(PIXELS)])


class ExamplesError(DataError):
    """A drawing or label cannot join the examples, or the examples cannot be used; the message says why."""


def no_examples(to: str) -> str:
    return f"there are no examples to {to} yet: correct a drawing first"


def empty() -> Split:
    """No examples: what a session starts with."""
    return Split(torch.zeros((0, SIZE, SIZE), dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))


def label_index(label: int | str, classes: list[str]) -> int:
    """A label given as a class index or a class name, as its index; anything else is refused in plain words."""
    names = [str(c) for c in classes]
    if isinstance(label, str) and label.strip() in names:
        return names.index(label.strip())
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool) and 0 <= label < len(names):
        return int(label)
    span = f"{names[0]}–{names[-1]}" if names == CLASS_NAMES["mnist"] else ", ".join(names)
    raise ExamplesError(f"the label must be one of {span}")


def check_room(count: int) -> None:
    if count > MAX_EXAMPLES:
        raise ExamplesError(f"a session keeps at most {MAX_EXAMPLES} examples (this would make {count}): "
                            "remove some first")


def add(examples: Split, digit: np.ndarray | None, label: int | str, classes: list[str]) -> Split:
    """The examples plus one drawing (the 28×28 image the model saw, floats in [0, 1]) with its right label."""
    if digit is None:
        raise ExamplesError(BLANK_CANVAS)
    digit = np.asarray(digit, dtype=np.float32)
    if digit.shape != (SIZE, SIZE) or not np.isfinite(digit).all():
        raise ExamplesError(f"an example must be a {SIZE}×{SIZE} image, got shape {digit.shape}")
    index = label_index(label, classes)
    check_room(len(examples) + 1)
    image = torch.from_numpy(np.round(np.clip(digit, 0, 1) * 255).astype(np.uint8))
    return Split(torch.cat([examples.images, image[None]]), torch.cat([examples.labels, torch.tensor([index])]))


def join(examples: Split, more: Split) -> Split:
    """The examples followed by more of them (an uploaded CSV's, say), within the session's limit."""
    check_room(len(examples) + len(more))
    return Split(torch.cat([examples.images, more.images]), torch.cat([examples.labels, more.labels]))


def remove(examples: Split, index: int) -> Split:
    """The examples without the one at `index` (counting from 0, as a gallery does)."""
    if not 0 <= index < len(examples):
        raise ExamplesError(f"there is no example number {index + 1}; there are {len(examples)}")
    keep = torch.arange(len(examples)) != index
    return examples.take(keep)


def to_csv(examples: Split, path: str | os.PathLike) -> Path:
    """Write the examples in tutorial 004's format: a `label` column, then pixel0 … pixel783 as 0–255 integers."""
    if not len(examples):
        raise ExamplesError(no_examples("download"))
    rows = np.column_stack([examples.labels.numpy(), examples.images.reshape(-1, PIXELS).numpy()])
    path = Path(path)
    np.savetxt(path, rows, fmt="%d", delimiter=",", header=CSV_HEADER, comments="")
    return path


def from_csv(path: str | os.PathLike) -> Split:
    """Read examples written by to_csv (or any CSV in the tutorial's format) back, within the session's limit."""
    return load_csv(path, max_rows=MAX_EXAMPLES, max_bytes=CSV_MAX_BYTES)
