"""Turn any user image (sketchpad value, PIL image, array, path) into an MNIST-style 28×28 digit."""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import BLANK_CANVAS, UserError

BOX = 20  # MNIST fits each digit into a 20×20 box ...
SIZE = 28  # ... and centres it by centre of mass in a 28×28 field
INK_THRESHOLD = 0.15  # ink below this (0..1) is paper noise, not stroke
MAX_SIDE = 1024  # larger inputs are shrunk first, so memory stays bounded
# Pixels decoded at most, checked from the file's header before decoding: a photo (a JPEG decodes at a reduced size)
# or a scan of a digit fits; a 14 KB PNG of 10,900×10,900 pixels, which would take gigabytes, does not.
MAX_PIXELS = 16_000_000
SKETCH_MAX_PIXELS = 1024 * 1024  # a stroke's canvas is 280×280


class ImageError(UserError, ValueError):
    """The input cannot be read as an image; the message says why."""


@dataclass(frozen=True)
class Prepared:
    """`digit` is (28, 28) float32 in [0, 1], white on black, or None when the input holds no ink."""

    digit: np.ndarray | None
    message: str = ""

    @property
    def blank(self) -> bool:
        return self.digit is None


def too_large(width: int, height: int, max_pixels: int) -> str:
    return (f"the image is too large ({width:,}×{height:,} pixels); the limit is {max_pixels / 1e6:.3g} megapixels "
            f"(for example {math.isqrt(max_pixels):,}×{math.isqrt(max_pixels):,})")


def _open(path: str | os.PathLike | io.BytesIO, max_pixels: int = MAX_PIXELS) -> Image.Image:
    try:
        with warnings.catch_warnings():  # PIL's bomb warning starts above our own, stricter limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)  # reads the header only
        img.draft("L", (MAX_SIDE, MAX_SIDE))  # a JPEG decodes straight to a smaller size
        if img.width * img.height > max_pixels:
            raise ImageError(too_large(img.width, img.height, max_pixels))
        img.load()
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except UnidentifiedImageError:
        raise ImageError("this file is not an image that can be read; try a PNG or JPEG") from None
    except Image.DecompressionBombError:
        raise ImageError(too_large(0, 0, max_pixels)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError("the image file is damaged or incomplete") from None
    return img


def _array_to_image(arr: np.ndarray) -> Image.Image:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or min(arr.shape[:2]) < 1:
        raise ImageError(f"expected an H×W, H×W×3 or H×W×4 array, got shape {arr.shape}")
    if arr.dtype == np.uint16:
        arr = (arr / 257).round().astype(np.uint8)
    elif arr.dtype.kind == "f":
        arr = np.nan_to_num(arr.astype(np.float32))
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        arr = np.clip(arr * scale, 0, 255).round().astype(np.uint8)
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    else:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def _ink_from_sketch(value: dict) -> np.ndarray | None:
    """Sketchpad strokes live in the layers' alpha, whatever the theme's background colour."""
    layers = [np.asarray(_to_image(layer, SKETCH_MAX_PIXELS).convert("RGBA"))[..., 3]
              for layer in value.get("layers") or [] if layer is not None]
    if layers:
        ink = np.max(np.stack(layers), axis=0).astype(np.float32) / 255.0
        if ink.max() > INK_THRESHOLD:
            return ink
    for key in ("composite", "background"):
        if value.get(key) is not None:
            return ink_map(_to_image(value[key], SKETCH_MAX_PIXELS))
    return None


def _to_image(obj, max_pixels: int = MAX_PIXELS) -> Image.Image:
    if isinstance(obj, (str, os.PathLike)):
        return _open(obj, max_pixels)
    if isinstance(obj, bytes):  # an encoded image, as a browser sends it
        return _open(io.BytesIO(obj), max_pixels)
    if isinstance(obj, Image.Image):
        img = obj
    elif isinstance(obj, np.ndarray):
        if obj.ndim >= 2 and obj.shape[0] * obj.shape[1] > max_pixels:  # no copy of a huge array
            raise ImageError(too_large(obj.shape[1], obj.shape[0], max_pixels))
        img = _array_to_image(obj)
    else:
        raise ImageError(f"unsupported input type {type(obj).__name__}")
    if img.width * img.height > max_pixels:
        raise ImageError(too_large(img.width, img.height, max_pixels))
    return img


def _luminance(img: Image.Image) -> np.ndarray:
    """Grey levels in [0, 1], keeping 16-bit precision (PIL's convert('L') would clip I;16 images)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        return (arr / (65535.0 if arr.max(initial=0) > 255 else 255.0)).astype(np.float32)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        return arr / 255.0 if arr.max(initial=0) > 1 else arr
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def ink_map(img: Image.Image) -> np.ndarray:
    """Ink in [0, 1] from any image: alpha where the background is transparent, else luminance with the
    polarity read off the border (dark ink on light paper is inverted)."""
    img = ImageOps.exif_transpose(img)
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    if max(img.size) > MAX_SIDE:
        img = img.copy()
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BOX)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        alpha = np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0
        if alpha.min() < 0.5:  # a transparent background: the opaque part is the ink
            return alpha
        img = img.convert("RGB")
    if img.mode == "CMYK":
        img = img.convert("RGB")
    grey = _luminance(img)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return 1.0 - grey if np.median(border) > 0.5 else grey


def _resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Anti-aliased resize of a float image; size is (width, height)."""
    return np.asarray(Image.fromarray(arr.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS))


def centre_of_mass(arr: np.ndarray) -> tuple[float, float]:
    total = arr.sum()
    ys, xs = np.indices(arr.shape)
    return float((ys * arr).sum() / total), float((xs * arr).sum() / total)


def mnist_digit(ink: np.ndarray) -> Prepared:
    """Crop to the ink, fit the longer side into 20 px keeping aspect, centre by centre of mass in 28×28."""
    if ink.size == 0 or ink.max(initial=0) < INK_THRESHOLD:
        return Prepared(None, BLANK_CANVAS)
    ink = np.where(ink >= INK_THRESHOLD, ink, 0).astype(np.float32)
    ys, xs = np.nonzero(ink)
    crop = ink[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    small = np.clip(_resize(crop, (max(1, round(w * scale)), max(1, round(h * scale)))), 0, None)
    small /= max(float(small.max()), 1e-6)  # MNIST strokes peak at full white, however thin ours were
    nh, nw = small.shape
    cy, cx = centre_of_mass(small)
    top = int(np.clip(round((SIZE - 1) / 2 - cy), 0, SIZE - nh))
    left = int(np.clip(round((SIZE - 1) / 2 - cx), 0, SIZE - nw))
    digit = np.zeros((SIZE, SIZE), np.float32)
    digit[top:top + nh, left:left + nw] = small
    message = "The image is mostly ink; is it a digit?" if (ink > 0.5).mean() > 0.6 else ""
    return Prepared(np.clip(digit, 0, 1), message)


def prepare(source) -> Prepared:
    """The one entry point: a sketchpad dict, PIL image, numpy array or file path → Prepared."""
    if source is None:
        return Prepared(None, BLANK_CANVAS)
    if isinstance(source, dict):
        ink = _ink_from_sketch(source)
        return Prepared(None, BLANK_CANVAS) if ink is None else mnist_digit(ink)
    return mnist_digit(ink_map(_to_image(source)))


def pack(prepared: Prepared) -> dict:
    """A Prepared input as the page keeps it between events (JSON): the 28×28 as 0–255 bytes in base64, the
    precision of MNIST itself and of the examples' CSV, so every later view reads the pixels the answer read."""
    pixels = None if prepared.blank else np.round(prepared.digit * 255).astype(np.uint8).tobytes()
    return {"pixels": pixels and base64.b64encode(pixels).decode("ascii"), "message": prepared.message}


def unpack(packed: dict | None) -> Prepared:
    """The page's copy back; it comes from a browser, so anything but a packed 28×28 is refused in plain words."""
    if not packed:
        return Prepared(None, BLANK_CANVAS)
    try:
        pixels, message = packed.get("pixels"), str(packed.get("message") or "")[:200]
        raw = None if pixels is None else base64.b64decode(pixels, validate=True)
    except (AttributeError, TypeError, ValueError, binascii.Error):
        raw = b""
    if raw is None:
        return Prepared(None, message or BLANK_CANVAS)
    if len(raw) != SIZE * SIZE:
        raise ImageError("the page sent back a damaged copy of the drawing; draw it again")
    return Prepared(np.frombuffer(raw, np.uint8).reshape(SIZE, SIZE).astype(np.float32) / 255, message)
