"""Checkpoints: self-describing, atomic, and refusing anything they cannot trust."""

import json
import logging
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as safetensors_save

from mnist_demo.checkpoint import (
    HEADER_MAX_BYTES,
    NAME_MAX,
    CheckpointError,
    NameTaken,
    list_checkpoints,
    load_checkpoint,
    publish,
    safe_path,
    save_checkpoint,
)
from mnist_demo.metadata import TEXT_MAX
from mnist_demo.models import create_model, list_models
from mnist_demo.train import evaluate


def _save(path, arch="logreg", **kw):
    return save_checkpoint(create_model(arch), path, arch=arch, dataset="mnist", normalisation=(0.1307, 0.3081),
                           metrics={"test_accuracy": 0.9}, **kw)


def test_roundtrip_rebuilds_model_from_metadata(tmp_path):
    model = create_model("mlp-50-20")
    path = save_checkpoint(model, tmp_path / "m.safetensors", arch="mlp-50-20", dataset="mnist",
                           normalisation=(0.1307, 0.3081), config={"epochs": 3}, metrics={"test_accuracy": 0.97},
                           train_time_s=1.5, device="cpu")
    ckpt = load_checkpoint(path)
    assert ckpt.arch == "mlp-50-20" and ckpt.normalisation == (0.1307, 0.3081)
    for key in ("format", "dataset", "config", "metrics", "train_time_s", "device", "torch_version", "created",
                "params"):
        assert key in ckpt.meta
    x = torch.randn(3, 1, 28, 28)
    model.eval()
    assert torch.equal(ckpt.model(x), model(x))


def test_nan_weights_are_never_saved(tmp_path):
    model = create_model("logreg")
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN"):
        save_checkpoint(model, tmp_path / "nan.safetensors", arch="logreg", dataset="mnist",
                        normalisation=(0.1307, 0.3081))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("blob, message", [
    (b"", "empty or truncated"),
    (b"\x00" * 3, "empty or truncated"),
    (b"PK\x03\x04 this is a zip file really", "not a safetensors file"),
])
def test_garbage_files(tmp_path, blob, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(blob)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_truncated_file(tmp_path):
    path = _save(tmp_path / "t.safetensors")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)


def test_foreign_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not an mnist_demo checkpoint"):
        load_checkpoint(path)


def test_mismatched_architecture(tmp_path):
    path = save_checkpoint(create_model("logreg"), tmp_path / "m.safetensors", arch="mlp-50-20", dataset="mnist",
                           normalisation=(0.1307, 0.3081))
    with pytest.raises(CheckpointError, match="do not fit architecture 'mlp-50-20'"):
        load_checkpoint(path)


def test_pickle_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for name in ("evil.pt", "evil.pth", "evil.safetensors"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(Evil()))
        with pytest.raises(CheckpointError):
            load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["../../x", "/etc/passwd", "..", "a/b", "", ".hidden", "x\\..\\y", "a b"])
def test_names_cannot_escape_the_directory(tmp_path, name):
    with pytest.raises(CheckpointError, match="invalid name"):
        safe_path(name, tmp_path)


def test_safe_name_is_kept_inside(tmp_path):
    assert safe_path("my-model_1", tmp_path) == (tmp_path / "my-model_1.safetensors").resolve()


def test_kill_during_save_leaves_previous_checkpoint(tmp_path):
    """SIGKILL a process while it writes a checkpoint over an existing one: the old file must survive."""
    path = _save(tmp_path / "model.safetensors")
    before = path.read_bytes()
    script = textwrap.dedent(f"""
        import os, signal, mnist_demo.checkpoint as c
        real_fsync = os.fsync
        def die(fd):  # the new bytes are written to the temporary file; die before the rename
            os.kill(os.getpid(), signal.SIGKILL)
        c.os.fsync = die
        from mnist_demo.models import create_model
        c.save_checkpoint(create_model("logreg"), {str(path)!r}, arch="logreg", dataset="mnist",
                          normalisation=(0.1, 0.3))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd(), capture_output=True)
    assert proc.returncode == -9
    assert path.read_bytes() == before
    load_checkpoint(path)


def test_full_disk_keeps_older_checkpoints(tmp_path, monkeypatch):
    old = _save(tmp_path / "old.safetensors")
    import mnist_demo.checkpoint as c

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(c.os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        _save(tmp_path / "old.safetensors")
    monkeypatch.undo()
    assert load_checkpoint(old).arch == "logreg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.safetensors"]


SHIPPED_MIN_ACCURACY = {"logreg": 0.925, "mlp-50-20": 0.978, "mlp-128-64": 0.978, "mlp-392-196-98": 0.978,
                        "cnn-examples": 0.990, "cnn": 0.993, "cnn-deep": 0.996}


@pytest.mark.parametrize("arch", [m.name for m in list_models()])
def test_shipped_checkpoint_meets_its_accuracy(arch, mnist):
    ckpt = load_checkpoint(f"checkpoints/{arch}.safetensors")
    assert ckpt.arch == arch and ckpt.meta["dataset"] == "mnist"
    acc = evaluate(ckpt.model, mnist.test, ckpt.normalisation, details=False)["accuracy"]
    assert acc >= SHIPPED_MIN_ACCURACY[arch]
    assert abs(acc - ckpt.meta["metrics"]["test_accuracy"]) < 1e-4  # the metadata tells the truth


def test_shipped_checkpoints_are_small():
    total = sum(p.stat().st_size for p in Path("checkpoints").glob("*.safetensors"))
    assert total < 15 * 2**20


# ---- Metadata from a stranger: one checked schema ----

def _with_metadata(path: Path, change: dict, drop: tuple = ()) -> Path:
    """A real checkpoint whose metadata is changed as a stranger might (values as JSON, as save_checkpoint writes)."""
    good = load_checkpoint(_save(path))
    raw = {k: json.dumps(v) for k, v in {**good.meta, **change}.items() if k not in drop}
    path.write_bytes(safetensors_save(good.model.state_dict(), metadata=raw))
    return path


@pytest.mark.parametrize("change, drop, field", [
    ({"created": 5}, (), "created"),
    ({"created": "yesterday"}, (), "created"),
    ({"params": "many"}, (), "params"),
    ({"metrics": {"test_accuracy": "high"}}, (), "metrics.test_accuracy"),
    ({"metrics": {"test_accuracy": 7}}, (), "metrics.test_accuracy"),
    ({"metrics": ["not", "a", "dict"]}, (), "metrics"),
    ({}, ("normalisation",), "normalisation"),
    ({"normalisation": [0.1, 0]}, (), "normalisation"),
    ({"classes": ["only one"]}, (), "classes"),
    ({"classes": ["x" * (TEXT_MAX + 1)] * 10}, (), "classes"),
    ({"config": {"label_smoothing": "lots"}}, (), "config.label_smoothing"),
    ({"config": {"junk": [1] * 999}}, (), "config.junk"),
    ({"config": {f"s{i}": 1 for i in range(999)}}, (), "config"),
    ({"arch": ["logreg"]}, (), "arch"),
])
def test_metadata_of_the_wrong_shape_is_refused_naming_the_field(tmp_path, change, drop, field):
    path = _with_metadata(tmp_path / "m.safetensors", change, drop)
    with pytest.raises(CheckpointError, match=f"field {field}"):
        load_checkpoint(path)
    assert list_checkpoints(tmp_path) == []  # a folder listing skips it


def test_unknown_metadata_is_dropped_and_what_is_kept_is_small(tmp_path):
    path = _with_metadata(tmp_path / "m.safetensors", {"notes": "x" * 50_000, "config": {"epochs": 3}})
    meta = load_checkpoint(path).meta
    assert "notes" not in meta and meta["config"] == {"epochs": 3}
    assert len(json.dumps(list_checkpoints(tmp_path)[0][1])) < 4096


def test_a_header_over_the_cap_is_refused_and_the_listing_logs_it(tmp_path, caplog):
    path = _with_metadata(tmp_path / "padded.safetensors", {"notes": "x" * HEADER_MAX_BYTES})
    with pytest.raises(CheckpointError, match=f"over {HEADER_MAX_BYTES // 1024} KB"):
        load_checkpoint(path)
    _save(tmp_path / "good.safetensors")
    with caplog.at_level(logging.WARNING, logger="mnist_demo"):
        assert [p.name for p, _ in list_checkpoints(tmp_path)] == ["good.safetensors"]
    assert "padded.safetensors" in caplog.text


def test_a_name_is_checked_for_length_and_characters():
    assert safe_path("a" * NAME_MAX, "runs").stem == "a" * NAME_MAX
    for name in ("a" * (NAME_MAX + 1), "-starts-with-a-dash", "has space", "ümlaut", "new\nline"):
        with pytest.raises(CheckpointError, match="invalid name"):
            safe_path(name, "runs")


def test_publishing_never_replaces_unless_asked(tmp_path):
    first = publish(b"one", tmp_path / "m.safetensors", replace=False)
    with pytest.raises(NameTaken):
        publish(b"two", first, replace=False)
    numbered = publish(b"two", first, replace=False, numbered=True)
    assert numbered.name == "m-2.safetensors" and first.read_bytes() == b"one"
    assert publish(b"three", first).read_bytes() == b"three"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-2.safetensors", "m.safetensors"]
