"""What a model does inside: feature maps, first-layer weights and signed input contributions, any architecture."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from .figures import ZOOM, enlarge

SIDE = 28  # the model input is SIDE×SIDE pixels
MAX_WIDTH = 600  # pixels: a gallery item stays cheap to send and fits a phone held sideways
MAX_TILE_ZOOM = 16  # a 3×3 filter is shown at 48×48, not blown up to the full width
GAP = 3  # grey pixels between tiles: they set white-edged tiles apart
GAP_GREY = 160
LABEL_HEIGHT = 16
TOP_UNITS = 16  # hidden units shown for an MLP's first layer
SCALE_PERCENTILE = 99
TINY = 1e-12  # keeps an all-equal map or an all-zero scale from dividing by zero
# Integrated-gradient steps from the blank canvas. On 50 MNIST test digits the bundled MLPs' maps summed to the
# logit change within 0.4% (median) and 3.6% (worst) at 64 steps, against 1.5% and 18% at 16; 64 cost ~2 ms.
IG_STEPS = 64
WHITE = np.array([255.0, 255.0, 255.0])
# Orange for "for", blue for "against": a pair colour-blind readers tell apart (as in ColorBrewer's PuOr).
ORANGE = np.array([230.0, 97.0, 1.0])
BLUE = np.array([33.0, 102.0, 172.0])
# Viridis at nine even steps: perceptually uniform, so equal steps in a map look like equal steps in brightness.
VIRIDIS = np.array([[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141], [39, 173, 129],
                    [92, 200, 99], [170, 220, 50], [253, 231, 37]], dtype=float)


@dataclass(frozen=True)
class Picture:
    """One captioned picture, ready for a gallery: RGB, enlarged pixel-exact."""

    title: str
    caption: str
    image: Image.Image


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout, BatchNorm's running statistics) for the duration; every module's own flag restored."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def _weighted_layers(model: nn.Module) -> list[nn.Module]:
    layers = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    if not layers:
        raise ValueError("the model has no linear or convolution layer to look inside")
    return layers


def _forward(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[str, torch.Tensor]]]:
    """The logits for x and every Conv2d's output, in the order the forward pass ran them."""
    maps: list[torch.Tensor] = []
    # Cloned, because an in-place ReLU right after a convolution would overwrite what the hook kept.
    keep = lambda _module, _inputs, output: maps.append(output.detach()[0].clone())
    handles = [m.register_forward_hook(keep) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with _evaluating(model), torch.inference_mode():
            logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return logits[0], [(f"conv {i} of {len(maps)}", m) for i, m in enumerate(maps, 1)]


def feature_maps(model: nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Each convolution layer's output (C, H, W) for the (1, 1, 28, 28) input x, in forward order, named."""
    return _forward(model, x)[1]


def contributions(model: nn.Module, x: torch.Tensor, target: int, blank: float | None = None) -> np.ndarray:
    """How much each input pixel moved the target logit away from its value on a blank canvas, signed (28×28).

    Integrated gradients from the blank canvas: the map sums to logit(x) − logit(blank), and for a linear model it
    is exactly (x − blank) × the class's weights. `blank` is the normalised value of an empty pixel; by default x's
    lowest value, since a prepared drawing always has an empty border.
    """
    x = x.detach()
    base = torch.full_like(x, float(x.min()) if blank is None else blank)
    alphas = ((torch.arange(IG_STEPS, dtype=x.dtype) + 0.5) / IG_STEPS).view(-1, 1, 1, 1)
    # Gradients are needed even when the caller runs under no_grad or inference_mode.
    with _evaluating(model), torch.inference_mode(False), torch.enable_grad():
        path = (base + alphas * (x - base)).requires_grad_(True)
        # autograd.grad on the inputs leaves the parameters' .grad untouched.
        (grad,) = torch.autograd.grad(model(path)[:, target].sum(), path)
    return ((x - base)[0, 0] * grad.mean(0)[0]).numpy()


def _viridis(values: np.ndarray) -> np.ndarray:
    pos = np.clip(values, 0, 1) * (len(VIRIDIS) - 1)
    low = np.minimum(pos.astype(int), len(VIRIDIS) - 2)
    t = (pos - low)[..., None]
    return ((1 - t) * VIRIDIS[low] + t * VIRIDIS[low + 1]).round().astype(np.uint8)


def _diverging(values: np.ndarray, scale: float) -> np.ndarray:
    """Orange for positive, blue for negative, white for zero; ±scale is full colour."""
    t = np.clip(values / max(scale, TINY), -1, 1)[..., None]
    return (WHITE + np.abs(t) * (np.where(t >= 0, ORANGE, BLUE) - WHITE)).round().astype(np.uint8)


def _diverging_tiles(weights: np.ndarray) -> np.ndarray:
    """One shared symmetric scale, so the same colour means the same weight on every tile; the few weights beyond
    its SCALE_PERCENTILE show in full colour rather than fading all the others."""
    return _diverging(weights, float(np.percentile(np.abs(weights), SCALE_PERCENTILE)))


def _columns(n: int) -> int:
    """A divisor of n near its square root, so the grid has no ragged last row; else the square root."""
    root = math.ceil(math.sqrt(n))
    return next((c for c in range(root, 2 * root + 1) if n % c == 0), root)


@functools.cache
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(LABEL_HEIGHT - 4)


def _grid(tiles: np.ndarray, labels: list[str] | None = None) -> Image.Image:
    """(n, h, w, 3) uint8 tiles in rows, enlarged pixel-exact to fit MAX_WIDTH, an optional label under each."""
    n, h, w, _ = tiles.shape
    cols = _columns(n)
    rows = math.ceil(n / cols)
    zoom = max(1, min(MAX_TILE_ZOOM, (MAX_WIDTH - GAP * (cols - 1)) // (cols * w)))
    label_h = LABEL_HEIGHT if labels else 0
    # Each cell is the enlarged tile, a white label strip and a grey gap to the right and below; one reshape lays
    # the cells out in rows, which is ~10× faster than pasting tile by tile.
    cells = np.full((rows * cols, h * zoom + label_h + GAP, w * zoom + GAP, 3), GAP_GREY, np.uint8)
    cells[:n, :h * zoom, :w * zoom] = tiles.repeat(zoom, axis=1).repeat(zoom, axis=2)
    cells[:n, h * zoom:h * zoom + label_h, :w * zoom] = 255
    cell_h, cell_w = cells.shape[1:3]
    grid = cells.reshape(rows, cols, cell_h, cell_w, 3).transpose(0, 2, 1, 3, 4)
    canvas = Image.fromarray(grid.reshape(rows * cell_h, cols * cell_w, 3)[:-GAP, :-GAP])
    draw = ImageDraw.Draw(canvas)
    for i, label in enumerate(labels or []):
        left, top = (i % cols) * cell_w, (i // cols) * cell_h + h * zoom + 1
        draw.text((left + w * zoom // 2, top), label, fill="black", font=_font(), anchor="ma")
    return canvas


def _maps_picture(name: str, maps: torch.Tensor) -> Picture:
    flat = maps.flatten(1)
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    scaled = ((flat - low) / (high - low).clamp_min(TINY)).view_as(maps).numpy()
    channels, h, w = maps.shape
    return Picture(f"{name} · {channels} maps of {h}×{w}",
                   f"Each square shows where one of this layer's {channels} pattern detectors responded to your "
                   "drawing, from dark purple (least) to yellow (most).",
                   _grid(_viridis(scaled)))


def _templates_picture(layer: nn.Linear, classes: list[str]) -> Picture:
    weights = layer.weight.detach().view(layer.out_features, SIDE, SIDE).numpy()
    return Picture(f"first layer · {layer.out_features} class templates, {layer.in_features} → {layer.out_features}",
                   "Each class's template: orange pixels count for that class when drawn on, blue ones against it.",
                   _grid(_diverging_tiles(weights), labels=classes))


def _units_picture(layer: nn.Linear, after: nn.Module) -> Picture:
    weights = layer.weight.detach()
    # A unit matters when it both reads the pixels strongly and is read strongly by the next layer.
    influence = weights.norm(dim=1) * after.weight.detach().flatten(1).norm(dim=0)
    top = influence.argsort(descending=True)[:TOP_UNITS]
    return Picture(f"first layer · {len(top)} of {layer.out_features} units, {layer.in_features} → "
                   f"{layer.out_features}",
                   f"The {len(top)} hidden units that matter most, most important first: orange pixels "
                   "excite a unit when drawn on, blue ones hold it back.",
                   _grid(_diverging_tiles(weights[top].view(-1, SIDE, SIDE).numpy())))


def _filters_picture(layer: nn.Conv2d) -> Picture:
    kh, kw = layer.kernel_size
    # The model's input has one channel, so each filter is one k×k patch of weights.
    filters = layer.weight.detach()[:, 0].numpy()
    return Picture(f"first layer · {layer.out_channels} filters of {kh}×{kw}",
                   f"The {layer.out_channels} small patterns the first layer looks for, enlarged: orange parts "
                   "respond to ink, blue ones to blank paper.",
                   _grid(_diverging_tiles(filters)))


def first_layer_weights(model: nn.Module, classes: list[str]) -> Picture:
    """The first weighted layer as pictures: class templates (logreg), top hidden units (MLPs) or filters (CNNs)."""
    layers = _weighted_layers(model)
    if isinstance(layers[0], nn.Conv2d):
        return _filters_picture(layers[0])
    return _units_picture(*layers[:2]) if len(layers) > 1 else _templates_picture(layers[0], classes)


def _contributions_picture(values: np.ndarray, name: str) -> Picture:
    image = enlarge(_diverging(values, float(np.abs(values).max())), ZOOM)
    return Picture(f"contributions to {name} · {SIDE}×{SIDE}",
                   f"Orange pixels pushed the answer towards {name}, blue ones away from it, compared with a blank "
                   "canvas.",
                   Image.fromarray(image))


def look_inside(model: nn.Module, x: torch.Tensor, classes: list[str], target: int | None = None,
                blank: float | None = None) -> list[Picture]:
    """Every conv layer's feature maps, the first layer's weights and, for linear-first models, the signed
    contributions to the target class (default: the predicted one) of the normalised (1, 1, 28, 28) input x."""
    logits, maps = _forward(model, x)
    target = int(logits.argmax()) if target is None else target
    pictures = [_maps_picture(name, m) for name, m in maps] + [first_layer_weights(model, classes)]
    first = _weighted_layers(model)[0]
    if isinstance(first, nn.Linear) and first.in_features == x[0].numel():
        pictures.append(_contributions_picture(contributions(model, x, target, blank), classes[target]))
    return pictures
