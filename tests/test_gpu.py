"""The CUDA path: runs where a GPU is present and skips cleanly elsewhere (CI has none)."""

import pytest
import torch

from mnist_demo.api import train_and_save
from mnist_demo.checkpoint import load_checkpoint
from mnist_demo.train import TrainConfig, TrainingRun, augment_batch, available_devices, evaluate

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def test_cuda_is_offered():
    assert {"cuda", "cuda:0"} <= set(available_devices())


def test_augmentation_runs_on_the_gpu():
    x = torch.randn(256, 1, 28, 28, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    y = augment_batch(x, g)
    assert y.device.type == "cuda" and y.shape == x.shape and torch.isfinite(y).all()
    assert not torch.equal(x, y)


def test_cuda_training_learns_with_data_resident_on_gpu(mnist):
    run = TrainingRun(TrainConfig.for_arch("cnn", device="cuda", subset=6000, epochs=2, batch_size=128,
                                         augment=True), mnist)
    records = list(run)
    assert next(run.model.parameters()).device.type == "cuda"
    assert records[-2]["kind"] == "epoch" and records[-2]["val_acc"] > 0.9


def test_gpu_checkpoint_serves_on_cpu(mnist, tmp_path):
    cfg = TrainConfig.for_arch("mlp-128-64", device="cuda", subset=6000, epochs=2)
    saved = list(train_and_save(cfg, out=tmp_path / "g.safetensors", dataset=mnist))[-1]
    assert saved["device"].startswith("cuda")
    ckpt = load_checkpoint(tmp_path / "g.safetensors")
    cpu_acc = evaluate(ckpt.model, mnist.test, ckpt.normalisation, "cpu", details=False)["accuracy"]
    assert abs(cpu_acc - saved["metrics"]["test_accuracy"]) < 2e-3


def test_the_apps_training_process_trains_on_the_gpu(tmp_path):
    from mnist_demo.worker import Worker

    cfg = TrainConfig.for_arch("cnn", device="cuda", subset=6000, epochs=2, batch_size=128)
    saved = list(Worker().train(cfg, out=tmp_path / "w.safetensors"))[-1]
    assert saved["kind"] == "saved" and saved["device"].startswith("cuda")
    assert saved["metrics"]["test_accuracy"] > 0.9
