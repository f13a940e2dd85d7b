"""Classify user images with a checkpointed model: probabilities, top class and a saliency map."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import numpy as np
import torch

from .checkpoint import Checkpoint, load_checkpoint
from .preprocess import Prepared, prepare


@dataclass(frozen=True)
class Prediction:
    probabilities: np.ndarray | None  # (10,) float, None when the input was blank
    digit: np.ndarray | None  # the 28×28 image the model saw
    message: str = ""

    @property
    def label(self) -> int | None:
        return None if self.probabilities is None else int(self.probabilities.argmax())

    @property
    def confidence(self) -> float:
        return 0.0 if self.probabilities is None else float(self.probabilities.max())


class Classifier:
    """Wraps one checkpoint for inference; keeps a private copy of the model so training never touches it."""

    def __init__(self, checkpoint: Checkpoint | str | os.PathLike):
        if not isinstance(checkpoint, Checkpoint):
            checkpoint = load_checkpoint(checkpoint)
        self.meta = checkpoint.meta
        self.classes = checkpoint.classes
        self.normalisation = checkpoint.normalisation
        self.model = copy.deepcopy(checkpoint.model).cpu().eval()

    def tensor(self, digit: np.ndarray) -> torch.Tensor:
        mean, std = self.normalisation
        return ((torch.from_numpy(digit) - mean) / std)[None, None]

    def predict(self, source) -> Prediction:
        prepared = source if isinstance(source, Prepared) else prepare(source)
        if prepared.blank:
            return Prediction(None, None, prepared.message)
        with torch.inference_mode():
            probs = self.model(self.tensor(prepared.digit)).softmax(1)[0].numpy()
        return Prediction(probs, prepared.digit, prepared.message)

    def saliency(self, digit: np.ndarray, target: int | None = None) -> np.ndarray:
        """|gradient × input| of the target logit, smoothed over a few noisy copies (SmoothGrad), in [0, 1]."""
        x = self.tensor(digit).repeat(8, 1, 1, 1)
        x = (x + 0.15 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
        logits = self.model(x)
        target = int(logits.mean(0).argmax()) if target is None else target
        # autograd.grad leaves the parameters' .grad alone, so concurrent calls cannot interfere.
        (grad,) = torch.autograd.grad(logits[:, target].sum(), x)
        sal = (grad * (x.detach() - x.detach().amin())).abs().mean(0)[0].numpy()
        return sal / max(float(sal.max()), 1e-12)
