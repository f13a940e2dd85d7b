"""Digits a person draws turned or mirrored: which way, and MNIST digits turned the same way to teach from."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import Split, to_float

MIN_DRAWINGS = 2  # one drawing read right after a turn could be chance; two of one digit are a habit
FOUND = 0.7  # the model's mean probability for a digit's drawings once turned back (digits tilted 45°: 0.41-0.64)
POOL_SAMPLE = 100  # MNIST images of a digit that tell whether a turn changes it


@dataclass(frozen=True)
class Turn:
    """A way of drawing a digit: `quarters` quarter turns anticlockwise, then mirrored left to right if `mirror`."""

    name: str
    quarters: int
    mirror: bool

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """Images (…, H, W) drawn this way."""
        turned = torch.rot90(images, self.quarters, dims=(-2, -1))
        return turned.flip(-1) if self.mirror else turned

    def undo(self, images: torch.Tensor) -> torch.Tensor:
        """Images drawn this way, turned back upright."""
        unmirrored = images.flip(-1) if self.mirror else images
        return torch.rot90(unmirrored, -self.quarters, dims=(-2, -1))


# Every way to turn or mirror a square, but as drawn: the seven a person's digits can be (the names say how they look).
TURNS = (
    Turn("turned a quarter anticlockwise", 1, False),
    Turn("upside down", 2, False),
    Turn("turned a quarter clockwise", 3, False),
    Turn("mirrored", 0, True),
    Turn("mirrored across the diagonal from the top right", 1, True),
    Turn("flipped top to bottom", 2, True),
    Turn("mirrored across the diagonal from the top left", 3, True),
)


def _probs(model: torch.nn.Module, normalisation: tuple[float, float], images: torch.Tensor,
           device: torch.device | str) -> torch.Tensor:
    return model(to_float(images.to(device), normalisation)).float().softmax(1)


def _read(model: torch.nn.Module, normalisation: tuple[float, float], images: torch.Tensor, digit: int,
          device: torch.device | str) -> float:
    """The model's mean probability that `images` show `digit`."""
    return _probs(model, normalisation, images, device)[:, digit].mean().item()


def _share(model: torch.nn.Module, normalisation: tuple[float, float], images: torch.Tensor, digit: int,
           device: torch.device | str) -> float:
    """The share of `images` the model reads as `digit`."""
    return (_probs(model, normalisation, images, device).argmax(1) == digit).float().mean().item()


@torch.inference_mode()
def find(model: torch.nn.Module, normalisation: tuple[float, float], examples: Split, pool: Split,
         device: torch.device | str = "cpu") -> dict[int, Turn]:
    """The digits a person draws turned or mirrored, each with its way: the model's mean probability for that digit
    is under one half for the drawings as drawn, and at least FOUND once they are turned back (the turn it reads
    best). Only turns that change the digit count: the model reads under half of `pool`'s images of it right once
    turned so (a 0 upside down is a 0). Probabilities, not the share read right: a 4 upside down is often read as a
    4, though barely, and a 4 tilted 45° read right once turned a quarter is not a 4 turned a quarter."""
    model.eval()
    found = {}
    for digit in examples.labels.unique().tolist():
        drawn = examples.images[examples.labels == digit]
        if len(drawn) < MIN_DRAWINGS or _read(model, normalisation, drawn, digit, device) >= 0.5:
            continue
        mnist = pool.images[pool.labels == digit][:POOL_SAMPLE]
        readings = [(_read(model, normalisation, turn.undo(drawn), digit, device), turn) for turn in TURNS
                    if _share(model, normalisation, turn.apply(mnist), digit, device) < 0.5]
        if readings and (best := max(readings, key=lambda reading: reading[0]))[0] >= FOUND:
            found[digit] = best[1]
    return found


def turned_digits(pool: Split, turns: dict[int, Turn]) -> Split:
    """Every image of each found digit in `pool`, drawn that digit's way."""
    parts = [(turn.apply(pool.images[pool.labels == digit]), pool.labels[pool.labels == digit])
             for digit, turn in sorted(turns.items())]
    if not parts:
        return Split(pool.images[:0], pool.labels[:0])
    return Split(torch.cat([images for images, _ in parts]), torch.cat([labels for _, labels in parts]))


def describe(turned: dict[str, str], images: int) -> str:
    """What teaching did with a person's turned digits ({digit: way}, and how many MNIST images it drew their way, as
    a 'saved' record has them) in a sentence; empty if none was turned."""
    by_way: dict[str, list[str]] = {}
    for digit, way in turned.items():
        by_way.setdefault(way, []).append(f"{digit}s")
    if not by_way:
        return ""
    ways = "; ".join(f"your {' and '.join(filter(None, [', '.join(names[:-1]), names[-1]]))} are {way}"
                     for way, names in by_way.items())
    return f"It saw that {ways}, so it also learned from {images:,} MNIST training digits drawn the same way."
