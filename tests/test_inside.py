"""Look inside: feature maps, first-layer weights and signed contributions for every registered architecture."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mnist_demo import inside
from mnist_demo.data import CLASS_NAMES, NORMALISATION
from mnist_demo.figures import ZOOM
from mnist_demo.inference import Classifier
from mnist_demo.models import create_model, model_names

CLASSES = CLASS_NAMES["mnist"]
MEAN, STD = NORMALISATION["mnist"]
BLANK = (0 - MEAN) / STD  # an empty pixel, normalised
CHECKPOINTS = sorted(Path(__file__).parent.parent.joinpath("checkpoints").glob("*.safetensors"))
MLPS = [n for n in model_names() if n.startswith("mlp")]


def _drawing() -> torch.Tensor:
    """A '7'-like stroke with MNIST's empty border, normalised as the models expect."""
    digit = torch.zeros(28, 28)
    digit[6:9, 8:21] = 1.0
    for row in range(9, 23):
        digit[row, 19 - (row - 9) // 2: 21 - (row - 9) // 2] = 1.0
    return ((digit - MEAN) / STD)[None, None]


def _layers(model: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


def _conv_outputs(model: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """Every Conv2d's output, by running the registry's Sequential one layer at a time (no hooks)."""
    outputs = []
    with torch.no_grad():
        for layer in model.eval():
            x = layer(x)
            if isinstance(layer, nn.Conv2d):
                outputs.append(x[0].clone())
    return outputs


def _first_is_linear(model: nn.Module) -> bool:
    return isinstance(_layers(model, nn.Linear | nn.Conv2d)[0], nn.Linear)


@pytest.mark.parametrize("name", model_names())
def test_every_architecture_yields_captioned_pictures(name):
    pictures = inside.look_inside(create_model(name), _drawing(), CLASSES)
    assert pictures
    for picture in pictures:
        assert picture.title and picture.image.mode == "RGB"
        assert 0 < picture.image.width <= inside.MAX_WIDTH
        # one plain sentence: a capital, a full stop at the end and nowhere before it
        assert picture.caption[0].isupper() and picture.caption.endswith(".") and ". " not in picture.caption


@pytest.mark.parametrize("name", model_names())
def test_one_feature_map_picture_per_convolution_in_forward_order(name):
    model, x = create_model(name), _drawing()
    expected = _conv_outputs(model, x)
    assert len(expected) == len(_layers(model, nn.Conv2d))
    maps = inside.feature_maps(model, x)
    assert [n for n, _ in maps] == [f"conv {i} of {len(expected)}" for i in range(1, len(expected) + 1)]
    for (_, got), want in zip(maps, expected):
        torch.testing.assert_close(got, want)
    pictures = inside.look_inside(model, x, CLASSES)
    for (map_name, _), want, picture in zip(maps, expected, pictures):
        channels, h, w = want.shape
        assert picture.title == f"{map_name} · {channels} maps of {h}×{w}"
    assert sum(" maps of " in p.title for p in pictures) == len(expected)


@pytest.mark.parametrize("name", model_names())
def test_first_layer_weights_are_titled_by_the_first_layer(name):
    model = create_model(name)
    first, *rest = _layers(model, nn.Linear | nn.Conv2d)
    title = inside.first_layer_weights(model, CLASSES).title
    if isinstance(first, nn.Conv2d):
        kh, kw = first.kernel_size
        assert title == f"first layer · {first.out_channels} filters of {kh}×{kw}"
    elif rest:
        shown = min(inside.TOP_UNITS, first.out_features)
        assert title.startswith(f"first layer · {shown} of {first.out_features} units")
    else:
        assert title.startswith(f"first layer · {len(CLASSES)} class templates")


@pytest.mark.parametrize("name", model_names())
def test_contributions_only_for_models_that_read_pixels_directly(name):
    model, x = create_model(name), _drawing()
    pictures = inside.look_inside(model, x, CLASSES)
    last = pictures[-1]
    if _first_is_linear(model):
        predicted = CLASSES[int(model.eval()(x).argmax())]
        assert last.title.startswith(f"contributions to {predicted} ") and predicted in last.caption
    assert sum(p.title.startswith("contributions") for p in pictures) == _first_is_linear(model)


def test_logreg_contributions_are_the_drawing_times_the_weights():
    model, x = create_model("logreg"), _drawing()
    (layer,) = _layers(model, nn.Linear)
    blank = torch.full_like(x, BLANK)
    for target in range(len(CLASSES)):
        got = inside.contributions(model, x, target, blank=BLANK)
        want = ((x - blank)[0, 0] * layer.weight[target].detach().view(28, 28)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        with torch.no_grad():
            change = float(model(x)[0, target] - model(blank)[0, target])
        assert got.sum() == pytest.approx(change, rel=1e-4, abs=1e-5)


def test_the_default_blank_is_the_drawings_empty_border():
    model, x = create_model("logreg"), _drawing()
    np.testing.assert_allclose(inside.contributions(model, x, 3), inside.contributions(model, x, 3, blank=BLANK),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_contributions_work_under_a_callers_no_grad(mode):
    model = create_model("mlp-50-20")
    want = inside.contributions(model, _drawing(), 3)
    with mode():
        got = inside.contributions(model, _drawing(), 3)
    np.testing.assert_array_equal(got, want)


def _completeness_gap(model: nn.Module, x: torch.Tensor, blank: float) -> tuple[float, float]:
    """The contributions' sum and the logit change they should add up to, for the predicted class."""
    with torch.no_grad():
        logits = model.eval()(torch.cat([x, torch.full_like(x, blank)]))
    target = int(logits[0].argmax())
    total = float(inside.contributions(model, x, target, blank=blank).sum())
    return total, float(logits[0, target] - logits[1, target])


@pytest.mark.parametrize("name", MLPS)
def test_mlp_contributions_add_up_to_the_logit_change(name):
    total, change = _completeness_gap(create_model(name), _drawing(), BLANK)
    assert total == pytest.approx(change, rel=0.05, abs=0.02)


def test_the_contributions_picture_is_orange_for_and_blue_against():
    model, x = create_model("logreg"), _drawing()
    pictures = inside.look_inside(model, x, CLASSES, target=3, blank=BLANK)
    values = inside.contributions(model, x, 3, blank=BLANK)
    image = np.asarray(pictures[-1].image)
    for pixel, colour in ((values.argmax(), inside.ORANGE), (values.argmin(), inside.BLUE)):
        row, col = np.unravel_index(pixel, values.shape)
        r, _, b = image[row * ZOOM, col * ZOOM].astype(int)
        assert (r > b) == (colour[0] > colour[2])
    assert pictures[-1].title.startswith("contributions to 3 ")


@pytest.mark.parametrize("name", model_names())
def test_the_model_is_left_exactly_as_it_was(name):
    model = create_model(name).train()
    modes = [m.training for m in model.modules()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inside.look_inside(model, _drawing(), CLASSES)
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_hooks_are_removed_when_the_forward_pass_fails():
    model = create_model("cnn")
    with pytest.raises(RuntimeError):
        inside.feature_maps(model, torch.zeros(1, 3, 28, 28))
    assert not any(m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("path", CHECKPOINTS, ids=lambda p: p.stem)
def test_every_bundled_checkpoint_on_a_real_digit(path, mnist):
    clf = Classifier(path)
    digit = mnist.test.images[0].numpy().astype(np.float32) / 255
    x = clf.tensor(digit)
    pictures = inside.look_inside(clf.model, x, clf.classes)
    assert len(pictures) == len(_layers(clf.model, nn.Conv2d)) + 1 + _first_is_linear(clf.model)
    if _first_is_linear(clf.model):
        blank = float(clf.tensor(np.zeros_like(digit)).flatten()[0])
        total, change = _completeness_gap(clf.model, x, blank)
        assert total == pytest.approx(change, rel=0.05, abs=0.02)
