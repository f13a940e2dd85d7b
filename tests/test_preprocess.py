"""Sketch preprocessing: any input becomes an MNIST-like digit, wherever and however it was drawn."""

import math

import numpy as np
import pytest
from PIL import Image

from mnist_demo.errors import BLANK_CANVAS
from mnist_demo.inference import Classifier
from mnist_demo.preprocess import (
    MAX_PIXELS,
    SKETCH_MAX_PIXELS,
    ImageError,
    centre_of_mass,
    pack,
    prepare,
    unpack,
)

CNN = "checkpoints/cnn.safetensors"


def _stroke_canvas(size=400, mode="L"):
    """A thick vertical bar ("1") drawn off-centre in the top-left of a white canvas."""
    img = np.full((size, size), 255, np.uint8)
    img[40:200, 60:80] = 0
    return img


def test_output_is_mnist_shaped_white_on_black_and_centred():
    digit = prepare(_stroke_canvas()).digit
    assert digit.shape == (28, 28) and digit.dtype == np.float32
    assert digit.max() == pytest.approx(1.0) and digit[0].max() == 0  # white ink, black border
    ys, xs = np.nonzero(digit > 0.05)
    assert ys.max() - ys.min() + 1 <= 21  # the longer side fits the 20-pixel box
    cy, cx = centre_of_mass(digit)
    assert abs(cy - 13.5) <= 1 and abs(cx - 13.5) <= 1


def test_sketchpad_value_uses_layer_alpha_not_background():
    layer = np.zeros((280, 280, 4), np.uint8)
    layer[50:150, 100:115] = (0, 0, 0, 255)
    dark_theme_background = np.full((280, 280, 4), (51, 51, 51, 255), np.uint8)
    value = {"background": dark_theme_background, "layers": [layer], "composite": dark_theme_background}
    digit = prepare(value).digit
    assert digit is not None and digit[14, 14] > 0.5
    # The same stroke given as a plain image gives the same digit.
    assert np.allclose(digit, prepare(layer).digit, atol=1e-5)


@pytest.mark.parametrize("value", [
    None,
    {"background": np.full((280, 280, 4), 255, np.uint8), "layers": [], "composite": None},
    {"background": None, "layers": [np.zeros((280, 280, 4), np.uint8)], "composite": None},
    np.zeros((50, 50), np.uint8),
    np.full((50, 50), 255, np.uint8),
])
def test_blank_inputs_say_so(value):
    prepared = prepare(value)
    assert prepared.blank and "blank" in prepared.message


def test_polarity_and_modes_agree(tmp_path):
    dark_on_light = _stroke_canvas()
    reference = prepare(dark_on_light).digit
    light_on_dark = 255 - dark_on_light
    rgba = np.zeros((400, 400, 4), np.uint8)
    rgba[..., 3] = 255 - dark_on_light  # black ink on a transparent background
    sixteen = Image.fromarray((light_on_dark.astype(np.uint16) * 257), mode="I;16")
    palette = Image.fromarray(dark_on_light).convert("P")
    cmyk = Image.fromarray(dark_on_light).convert("CMYK")
    cmyk.save(tmp_path / "cmyk.jpg", quality=95)
    sixteen.save(tmp_path / "16.png")
    for source in (light_on_dark, rgba, Image.fromarray(dark_on_light).convert("RGB"), palette,
                   str(tmp_path / "16.png"), tmp_path / "cmyk.jpg", dark_on_light.astype(np.float32) / 255):
        assert np.abs(prepare(source).digit - reference).max() < 0.1, type(source)


def test_exif_rotation_is_applied(tmp_path):
    img = Image.fromarray(_stroke_canvas(300))  # a vertical bar
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    img.save(tmp_path / "rot.jpg", exif=exif)
    digit = prepare(tmp_path / "rot.jpg").digit
    ys, xs = np.nonzero(digit > 0.3)
    assert np.ptp(xs) > 2 * np.ptp(ys)  # displayed horizontally


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.fromarray(_stroke_canvas(100)), Image.new("L", (100, 100), 255)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert not prepare(tmp_path / "a.gif").blank


def test_tiny_and_huge_images(tmp_path):
    one_pixel = prepare(np.full((1, 1), 255, np.uint8))
    assert one_pixel.blank and one_pixel.message  # a single pixel is its own background: nothing drawn
    side = math.isqrt(MAX_PIXELS)  # the largest square read: shrunk before anything else
    huge = Image.new("L", (side, side), 255)
    huge.paste(0, (side // 3, side // 5, side // 3 + side // 16, side * 3 // 5))
    huge.save(tmp_path / "huge.png")
    digit = prepare(tmp_path / "huge.png").digit
    assert digit is not None and digit.max() == pytest.approx(1.0)


@pytest.mark.parametrize("mode", ["1", "L", "RGBA"])
def test_an_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path, mode):
    """A 1-bit PNG of 10,900×10,900 pixels is 14 KB on disk and gigabytes decoded: refused before decoding, as
    bytes (a stroke), as a file (an upload) and as a canvas layer."""
    side = math.isqrt(MAX_PIXELS) + 1
    path = tmp_path / "bomb.png"
    Image.new(mode, (side, side)).save(path, optimize=True)
    for source in (path, path.read_bytes()):
        with pytest.raises(ImageError, match="too large"):
            prepare(source)
    small_side = math.isqrt(SKETCH_MAX_PIXELS) + 1
    Image.new("RGBA", (small_side, small_side)).save(path)
    with pytest.raises(ImageError, match="too large"):
        prepare({"layers": [path.read_bytes()], "composite": None})


@pytest.mark.parametrize("content, words", [(b"hello, not an image", "not an image"),
                                             (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "damaged")])
def test_unreadable_files_raise_a_plain_message(tmp_path, content, words):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=words) as caught:
        prepare(path)
    # Plain words only: no exception class name and no server path.
    assert "Error" not in str(caught.value) and str(tmp_path) not in str(caught.value)


def test_truncated_png(tmp_path):
    Image.fromarray(_stroke_canvas()).save(tmp_path / "ok.png")
    blob = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ImageError):
        prepare(tmp_path / "cut.png")


def test_wrong_array_shape():
    with pytest.raises(ImageError, match="array"):
        prepare(np.zeros((5, 5, 7)))


def _place(digit_u8, scale, top, left, style, canvas=400):
    """An MNIST digit enlarged `scale` times and put at (top, left) of a canvas in one of several styles."""
    size = 28 * scale
    big = np.asarray(Image.fromarray(digit_u8).resize((size, size), Image.Resampling.BICUBIC))
    ink = np.zeros((canvas, canvas), np.uint8)
    ink[top:top + size, left:left + size] = big
    if style == "inverted":  # dark ink on white paper, as people draw
        return Image.fromarray(255 - ink).convert("RGB")
    if style == "transparent":  # black ink on a transparent background, as the sketchpad layer
        rgba = np.zeros((canvas, canvas, 4), np.uint8)
        rgba[..., 3] = ink
        return Image.fromarray(rgba, mode="RGBA")
    return Image.fromarray(ink)


def test_invariant_to_position_size_and_polarity(mnist):
    clf = Classifier(CNN)
    rng = np.random.default_rng(0)
    picks = rng.choice(len(mnist.test), 300, replace=False)
    agree = 0
    for n, i in enumerate(picks):
        digit = mnist.test.images[i].numpy()
        original = clf.predict(digit).label
        scale = int(rng.integers(3, 13))
        top, left = rng.integers(0, 400 - 28 * scale + 1, size=2)
        moved = _place(digit, scale, top, left, ("inverted", "transparent", "plain")[n % 3])
        agree += clf.predict(moved).label == original
    assert agree / len(picks) >= 0.98, agree


def test_fully_inked_canvas_is_flagged():
    layer = np.zeros((280, 280, 4), np.uint8)
    layer[..., 3] = 255  # every pixel painted
    prepared = prepare({"background": None, "layers": [layer], "composite": None})
    assert prepared.digit is not None and "mostly ink" in prepared.message


def test_a_packed_input_comes_back_as_the_pixels_the_model_read(mnist):
    prepared = prepare(mnist.test.images[0].numpy())
    back = unpack(pack(prepared))
    assert back.message == prepared.message and np.abs(back.digit - prepared.digit).max() <= 0.5 / 255
    assert np.array_equal(unpack(pack(back)).digit, back.digit)  # packing is exact once quantised
    blank = unpack(pack(prepare(None)))
    assert blank.blank and blank.message == BLANK_CANVAS and unpack(None).blank


@pytest.mark.parametrize("damaged", [{"pixels": "AAAA"}, {"pixels": "not base64!"}, {"pixels": 7}, ["x"], "x"])
def test_a_damaged_packed_input_is_refused_in_plain_words(damaged):
    with pytest.raises(ImageError, match="damaged"):
        unpack(damaged)
