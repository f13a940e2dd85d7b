"""One test over the whole registry: shapes, gradients and reported parameter counts."""

import pytest
import torch

from mnist_demo.models import count_params, create_model, list_models

ARCHS = [m.name for m in list_models()]
EXPECTED_PARAMS = {  # worked out by hand from the layer sizes in the tutorials
    "logreg": 784 * 10 + 10,
    "mlp-50-20": (784 * 50 + 50) + (50 * 20 + 20) + (20 * 10 + 10),
    "mlp-128-64": (784 * 128 + 128) + (128 * 64 + 64) + (64 * 10 + 10),
    "mlp-392-196-98": (784 * 392 + 392) + (392 * 196 + 196) + (196 * 98 + 98) + (98 * 10 + 10),
    "cnn-examples": (32 * 9 + 32) + (64 * 32 * 9 + 64) + (9216 * 128 + 128) + (128 * 10 + 10),
    # bias-free convolutions, each followed by a BatchNorm with weight and bias
    "cnn": (16 * 9 + 32) + (32 * 16 * 9 + 64) + (64 * 32 * 9 + 128) + (576 * 10 + 10),
    "cnn-deep": (24 * 9 + 48) + (48 * 24 * 9 + 96) + (48 * 48 * 9 + 96) + (96 * 48 * 9 + 192) + (96 * 96 * 9 + 192)
    + (864 * 10 + 10),
}


def test_registry_has_every_tutorial_architecture():
    assert {"logreg", "mlp-50-20", "mlp-128-64", "mlp-392-196-98", "cnn-examples", "cnn"} <= set(ARCHS)
    assert all(m.description for m in list_models())


@pytest.mark.parametrize("arch", ARCHS)
def test_architecture(arch):
    model = create_model(arch)
    x = torch.randn(42, 1, 28, 28)  # the tutorial's random-tensor check
    out = model(x)
    assert out.shape == (42, 10)
    out.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    # Counted by hand from the layer sizes: every registered architecture needs its entry in EXPECTED_PARAMS.
    info = next(m for m in list_models() if m.name == arch)
    assert info.params == count_params(model) == EXPECTED_PARAMS[arch]


def test_unknown_architecture_message():
    with pytest.raises(ValueError, match="unknown architecture 'resnet'.*logreg"):
        create_model("resnet")
