"""Self-describing safetensors checkpoints: weights plus the metadata needed to rebuild and judge the model."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
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
from .metadata import MetadataError, checked_metadata
from .models import count_params, create_model, model_names

FORMAT = "mnist_demo/1"
CHECKPOINT_DIR_ENV = "MNIST_DEMO_CHECKPOINTS"
MAX_BYTES = 64 * 1024 * 1024  # the largest registry model is ~5 MB; anything far bigger is not ours
HEADER_MAX_BYTES = 64 * 1024  # a registry model's header (tensor index and metadata) is 1-4 KB
NAME_MAX = 60  # characters in a model's name, as the Teach box allows
_NAME = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._+-]{{0,{NAME_MAX - 1}}}$")  # '+': a taught model is <base>+you
log = logging.getLogger("mnist_demo")


class CheckpointError(UserError, ValueError):
    """A checkpoint file is missing, corrupt, foreign or does not fit its architecture."""


class NameTaken(CheckpointError):
    """A model of that name exists already; nothing is ever replaced."""


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
        raise CheckpointError(f"invalid name: use up to {NAME_MAX} letters, digits, '.', '_', '+' and '-', starting "
                              "with a letter or digit")  # not echoed: it would be shown as Markdown
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
                    device: str | None = None, extra: dict | None = None, replace: bool = True,
                    numbered: bool = False) -> Path:
    """Write weights and metadata atomically (publish: a crash mid-write leaves any older file intact); returns
    the path written. `extra` adds metadata of the caller's own (a taught model's base, say); it cannot replace the
    fields above."""
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
    return publish(blob, path, replace=replace, numbered=numbered)


def publish(blob: bytes, path: str | os.PathLike, *, replace: bool = True, numbered: bool = False) -> Path:
    """Write a file so that it appears whole or not at all, and return where it went. With `replace`, an older
    file at `path` is replaced; else a taken path raises NameTaken or, when `numbered`, the file goes to the first
    free <stem>-2, <stem>-3, … beside it. The check and the write are one step, so writers at once never collide."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; the app decides who sees a checkpoint
        if replace:
            os.replace(tmp, path)
            return path
        return _link_new(Path(tmp), path, numbered)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _link_new(tmp: Path, path: Path, numbered: bool) -> Path:
    candidate, n = path, 2
    while True:
        try:
            os.link(tmp, candidate)  # fails if the name exists, unlike a rename
            return candidate
        except FileExistsError:
            if not numbered:
                raise NameTaken(f"a model named {path.stem!r} exists already: choose another name") from None
            candidate, n = path.with_name(f"{path.stem}-{n}{path.suffix}"), n + 1


def read_metadata(blob: bytes, source: str = "checkpoint") -> dict:
    """Parse the safetensors header only; never executes anything from the file."""
    if len(blob) < 8:
        raise CheckpointError(f"{source}: file is empty or truncated")
    header_len = int.from_bytes(blob[:8], "little")
    if header_len > len(blob) - 8:
        raise CheckpointError(f"{source}: not a safetensors file, or truncated")
    if header_len > HEADER_MAX_BYTES:
        raise CheckpointError(f"{source}: its header is over {HEADER_MAX_BYTES // 1024} KB, far more than a "
                              "checkpoint of ours has")
    try:
        header = json.loads(blob[8:8 + header_len])
        raw = header.get("__metadata__") or {}
        raw = {k: json.loads(v) for k, v in raw.items()}
    except (ValueError, AttributeError, TypeError):
        raise CheckpointError(f"{source}: not a safetensors file (unreadable header)") from None
    if raw.get("format") != FORMAT:
        raise CheckpointError(f"{source}: not an mnist_demo checkpoint (format {str(raw.get('format'))[:40]!r})")
    try:
        return checked_metadata(raw)
    except MetadataError as exc:
        raise CheckpointError(f"{source}: {exc}") from None


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
        except OSError:  # removed since the folder was read
            continue
        meta = _header(path, stat.st_mtime_ns, stat.st_size)
        if meta is not None:
            found.append((path, meta))
    return sorted(found, key=lambda pm: pm[1].get("created", ""), reverse=True)


def weights_digest(path: str | os.PathLike) -> str:
    """A fingerprint of a checkpoint's weights alone (what follows its header), whatever its metadata says."""
    path = Path(path)
    stat = path.stat()
    return _weights_digest(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _weights_digest(path: Path, mtime_ns: int, size: int) -> str:
    with open(path, "rb") as f:
        f.seek(8 + int.from_bytes(f.read(8), "little"))
        return hashlib.file_digest(f, "sha256").hexdigest()


@functools.lru_cache(maxsize=1024)
def _header(path: Path, mtime_ns: int, size: int) -> dict | None:
    """A checkpoint's checked metadata (a few KB at most), read once per version of the file, since the app lists
    the folders on every stroke; None, logged once, for a file that is not a checkpoint of ours."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            return read_metadata(head + f.read(min(n, HEADER_MAX_BYTES)), path.name)
    except (OSError, CheckpointError) as exc:
        log.warning("skipping %s: %s", path, exc)
        return None
