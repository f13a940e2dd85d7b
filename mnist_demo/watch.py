"""Watching a run learn: a fixed grid of test digits (and a person's drawing) with the model's current guesses."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .data import Dataset, to_float
from .errors import UserError

WATCH_PER_CLASS = 3  # test images of each class in the grid: 30 for ten classes
WATCH_INTERVAL_S = 0.5  # snapshots at most this often from step records, and at every epoch end
DRAWING_SHAPE = (28, 28)
Drawing = np.ndarray | torch.Tensor | list  # 28×28 floats in [0, 1], as preprocess makes them


class DrawingError(UserError, ValueError):
    """The drawing to watch is not a 28×28 image with values from 0 to 1."""


def grid_indices(labels: torch.Tensor, classes: int, per_class: int = WATCH_PER_CLASS) -> torch.Tensor:
    """The first `per_class` images of each class in split order, class by class (fewer where a class has fewer)."""
    return torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in range(classes)])


def drawing_tensor(drawing: Drawing) -> torch.Tensor:
    """A drawing (array, tensor or nested lists) as a 28×28 float tensor in [0, 1], as preprocess makes them."""
    d = torch.as_tensor(drawing, dtype=torch.float32)
    if tuple(d.shape) != DRAWING_SHAPE or not bool(((d >= 0) & (d <= 1)).all()):
        raise DrawingError(f"the drawing to watch must be a {DRAWING_SHAPE[0]}×{DRAWING_SHAPE[1]} image with "
                           "values from 0 to 1")
    return d


class Watch:
    """The images a run shows its guesses on, held on the training device; each snapshot is one eval-mode forward."""

    def __init__(self, dataset: Dataset, drawing: torch.Tensor | None, device: torch.device,
                 interval: float = WATCH_INTERVAL_S) -> None:
        test = dataset.test.take(grid_indices(dataset.test.labels, len(dataset.classes)))
        self.images, self.labels, self.classes = test.images, test.labels, dataset.classes
        self.drawing, self.interval, self.last = drawing, interval, -math.inf
        x = to_float(test.images, dataset.normalisation)
        if drawing is not None:  # normalised as the Draw tab's classifier does it
            mean, std = dataset.normalisation
            x = torch.cat([x, ((drawing - mean) / std)[None, None]])
        self.x = x.to(device).contiguous(memory_format=torch.channels_last)

    def start(self, model: nn.Module) -> dict:
        """The 'watch' record: the grid's images and labels (sent once) and the untrained model's first snapshot."""
        drawing = None if self.drawing is None else (self.drawing * 255).round().to(torch.uint8).tolist()
        return {"kind": "watch", "images": self.images.tolist(), "labels": self.labels.tolist(),
                "classes": list(self.classes), "drawing": drawing, "snapshot": self.snapshot(model, 0, 0.0)}

    def due(self, now: float) -> bool:
        return now - self.last >= self.interval

    @torch.no_grad()
    def snapshot(self, model: nn.Module, step: int, now: float) -> dict:
        """The model's guesses on the grid and its probabilities for the drawing, in eval mode (BatchNorm's running
        statistics stay as they are; dropout is off and draws no random numbers), then the model's mode restored."""
        was_training = model.training
        model.eval()
        probs = model(self.x).float().softmax(1).cpu()  # one transfer: on a GPU, the snapshot's only sync
        model.train(was_training)
        self.last = now
        n = len(self.labels)
        return {"step": step, "guesses": probs[:n].argmax(1).tolist(),
                "drawing": probs[n].tolist() if self.drawing is not None else None}
