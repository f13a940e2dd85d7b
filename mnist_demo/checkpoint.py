"""Self-describing safetensors checkpoints: weights plus the metadata needed to rebuild and judge the model."""

from __future__ import annotations

import functools
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import nn

from .data import CLASS_NAMES
from .errors import UserError
from .models import count_params, create_model, model_names

FORMAT = "mnist_demo/1"
CHECKPOINT_DIR_ENV = "MNIST_DEMO_CHECKPOINTS"
MAX_BYTES = 64 * 1024 * 1024  # the largest registry model is ~5 MB; anything far bigger is not ours
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,100}$")  # '+': a taught model is <base>+you


class CheckpointError(UserError, ValueError):
    """A checkpoint file is missing, corrupt, foreign or does not fit its architecture."""


@dataclass(frozen=True)
class Checkpoint:
    model: nn.Module
    meta: dict

    @property
    def arch(self) -> str:
        return self.meta["arch"]

    @property
    def normalisation(self) -> tuple[float, float]:
        return tuple(self.meta["normalisation"])

    @property
    def classes(self) -> list[str]:
        return classes_of(self.meta)


def classes_of(meta: dict) -> list[str]:
    """A checkpoint's class names; older checkpoints without them are digit models."""
    return meta.get("classes") or CLASS_NAMES["mnist"]


def checkpoint_dir(directory: str | os.PathLike | None = None) -> Path:
    return Path(directory or os.environ.get(CHECKPOINT_DIR_ENV) or "checkpoints")


def safe_path(name: str, directory: str | os.PathLike) -> Path:
    """Resolve a user-supplied checkpoint name inside `directory`; anything that could escape it is refused."""
    base = Path(name).name if name else ""
    if base != name or not _NAME.match(name) or name.startswith(".."):
        raise CheckpointError(f"invalid checkpoint name {name!r}: use letters, digits, '.', '_', '+' and '-' only")
    if not name.endswith(".safetensors"):
        name += ".safetensors"
    directory = Path(directory).resolve()
    path = (directory / name).resolve()
    if path.parent != directory:
        raise CheckpointError(f"invalid checkpoint name {name!r}")
    return path


def save_checkpoint(model: nn.Module, path: str | os.PathLike, *, arch: str, dataset: str,
                    normalisation: tuple[float, float], classes: list[str] | None = None,
                    config: dict | None = None, metrics: dict | None = None, train_time_s: float | None = None,
                    device: str | None = None, extra: dict | None = None) -> Path:
    """Write weights and metadata atomically: a crash mid-write leaves any older file at `path` intact. `extra`
    adds metadata of the caller's own (a taught model's base, say); it cannot replace the fields above."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise CheckpointError("refusing to save a model with NaN or infinite weights")
    meta = {
        **(extra or {}),
        "format": FORMAT, "arch": arch, "dataset": dataset, "normalisation": list(normalisation),
        "classes": classes or CLASS_NAMES["mnist"], "config": config or {}, "metrics": metrics or {},
        "params": count_params(model), "train_time_s": train_time_s, "device": device,
        "torch_version": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    blob = save(state, metadata={k: json.dumps(v) for k, v in meta.items()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; checkpoints are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_metadata(blob: bytes, source: str = "checkpoint") -> dict:
    """Parse the safetensors header only; never executes anything from the file."""
    if len(blob) < 8:
        raise CheckpointError(f"{source}: file is empty or truncated")
    header_len = int.from_bytes(blob[:8], "little")
    if header_len > len(blob) - 8 or header_len > 10_000_000:
        raise CheckpointError(f"{source}: not a safetensors file, or truncated")
    try:
        header = json.loads(blob[8:8 + header_len])
        raw = header.get("__metadata__") or {}
        meta = {k: json.loads(v) for k, v in raw.items()}
    except (ValueError, AttributeError):
        raise CheckpointError(f"{source}: not a safetensors file (unreadable header)") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{source}: not an mnist_demo checkpoint (format {meta.get('format')!r})")
    return meta


def load_bytes(blob: bytes, source: str = "checkpoint") -> Checkpoint:
    meta = read_metadata(blob, source)
    arch = meta.get("arch")
    if arch not in model_names():
        raise CheckpointError(f"{source}: unknown architecture {arch!r}")
    try:
        state = load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{source}: corrupt or truncated safetensors data ({exc})") from None
    model = create_model(arch)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        detail = detail if len(detail) <= 160 else detail[:160] + "…"
        raise CheckpointError(f"{source}: weights do not fit architecture {arch!r} (saved by an older version of "
                              f"it? then retrain it): {detail}") from None
    return Checkpoint(model.eval(), meta)


def require_safetensors(name: str) -> None:
    """Refuse any other file type before reading a byte of it."""
    if not name.endswith(".safetensors"):
        raise CheckpointError(f"{name}: only .safetensors checkpoints are accepted "
                              "(pickle-based .pt/.pth files can run code when loaded)")


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load a .safetensors checkpoint written by save_checkpoint; any problem raises CheckpointError."""
    path = Path(path)
    require_safetensors(path.name)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path.name}")
    if path.stat().st_size > MAX_BYTES:
        raise CheckpointError(f"{path.name}: {path.stat().st_size / 2**20:.0f} MB is over the "
                              f"{MAX_BYTES // 2**20} MB limit")
    return load_bytes(path.read_bytes(), path.name)


def list_checkpoints(directory: str | os.PathLike | None = None) -> list[tuple[Path, dict]]:
    """(path, metadata) of every readable checkpoint in a directory, newest first; unreadable files are skipped."""
    found = []
    for path in Path(checkpoint_dir(directory)).glob("*.safetensors"):
        try:
            stat = path.stat()
            found.append((path, _header(path, stat.st_mtime_ns, stat.st_size)))
        except (OSError, CheckpointError):
            continue
    return sorted(found, key=lambda pm: pm[1].get("created", ""), reverse=True)


@functools.lru_cache(maxsize=1024)
def _header(path: Path, mtime_ns: int, size: int) -> dict:
    """A checkpoint's metadata, read once per version of the file: the app lists the folders on every stroke."""
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        return read_metadata(head + f.read(min(n, 10_000_000)), path.name)
