"""The model catalogue: bundled checkpoints plus the app's own runs and uploads, and a bounded classifier cache."""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from .api import runs_dir
from .checkpoint import (
    CheckpointError,
    checkpoint_dir,
    classes_of,
    list_checkpoints,
    load_checkpoint,
    require_safetensors,
)
from .inference import Classifier, Prediction
from .preprocess import Prepared

DEFAULT_MODEL = "cnn"  # the bundled model Draw starts with
CACHE_SIZE = 16  # classifiers kept in memory; the least recently used one goes first


@dataclass(frozen=True)
class ModelEntry:
    key: str  # what the dropdowns and API clients use: the file stem, e.g. "cnn"
    path: Path
    meta: dict
    bundled: bool

    @property
    def accuracy(self) -> float | None:
        return (self.meta.get("metrics") or {}).get("test_accuracy")

    @property
    def classes(self) -> list[str]:
        return classes_of(self.meta)

    @property
    def arch(self) -> str:
        return self.meta.get("arch", "?")

    @property
    def label(self) -> str:
        acc = f" · {self.accuracy:.2%}" if self.accuracy is not None else ""
        return f"{self.key} ({self.arch}{acc}{' · bundled' if self.bundled else ''})"


class ClassifierCache:
    """One inference copy per checkpoint file, re-read when the file changes (mtime or size), at most `size` kept."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[Path, tuple[tuple[int, int], Classifier]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path) -> Classifier:
        stat = path.stat()
        signature = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            hit = self._items.get(path)
            if hit and hit[0] == signature:
                self._items.move_to_end(path)
                return hit[1]
        clf = Classifier(path)  # loading outside the lock: a slow load never blocks other models
        with self._lock:
            self._items[path] = (signature, clf)
            self._items.move_to_end(path)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return clf

    def __len__(self) -> int:
        return len(self._items)


class Catalogue:
    """Every model the app offers; the folders are read on each call, since other sessions add models any time."""

    def __init__(self, shipped: str | os.PathLike | None = None, runs: str | os.PathLike | None = None,
                 cache: ClassifierCache | None = None) -> None:
        self._shipped, self._runs = shipped, runs
        self.cache = cache if cache is not None else ClassifierCache()  # an empty cache is falsy (it has a len)

    @property
    def shipped_dir(self) -> Path:
        return checkpoint_dir(self._shipped).resolve()

    @property
    def runs_dir(self) -> Path:
        return Path(self._runs or runs_dir()).resolve()

    def entries(self) -> list[ModelEntry]:
        """Bundled checkpoints (most accurate first), then the app's own runs (newest first)."""
        entries: list[ModelEntry] = []
        keys: set[str] = set()
        folders = [(self.shipped_dir, True)] + ([(self.runs_dir, False)] if self.runs_dir != self.shipped_dir else [])
        for directory, bundled in folders:
            found = list_checkpoints(directory)
            if bundled:
                found.sort(key=lambda pm: -((pm[1].get("metrics") or {}).get("test_accuracy") or 0))
            for path, meta in found:
                # A run may share a bundled model's file stem; it keeps its own key.
                key = path.stem if path.stem not in keys else f"runs/{path.stem}"
                keys.add(key)
                entries.append(ModelEntry(key, path, meta, bundled))
        return entries

    def default_key(self, entries: list[ModelEntry] | None = None) -> str | None:
        """The bundled `cnn` when shipped, else the most accurate bundled model, else the most accurate run; skipping
        any that will not load."""
        entries = self.entries() if entries is None else entries
        ranked = sorted(entries, key=lambda e: (e.bundled and e.key == DEFAULT_MODEL, e.bundled, e.accuracy or 0),
                        reverse=True)
        for entry in ranked:
            try:
                self.cache.get(entry.path)
            except (CheckpointError, OSError):
                continue
            return entry.key
        return None

    def keep(self, key: str | None, entries: list[ModelEntry] | None = None) -> str | None:
        """`key` while that model exists, else the first model's (None when there is none)."""
        keys = [e.key for e in (self.entries() if entries is None else entries)]
        return key if key in keys else (keys[0] if keys else None)

    def find(self, key: str | None, entries: list[ModelEntry] | None = None) -> ModelEntry:
        """The entry for a key (None: the default model); an unknown key is a UserError with a plain message."""
        entries = self.entries() if entries is None else entries
        key = key or self.default_key(entries)
        for entry in entries:
            if entry.key == key:
                return entry
        if key is None:
            raise CheckpointError("No model yet: train one in the Train tab or upload a checkpoint in the Models tab.")
        raise CheckpointError(f"Unknown model {key!r}; the Models tab lists the available ones.")

    def classifier(self, key: str | None, entries: list[ModelEntry] | None = None) -> tuple[ModelEntry, Classifier]:
        entry = self.find(key, entries)
        return entry, self.cache.get(entry.path)

    def answers(self, prepared: Prepared, entries: list[ModelEntry]) -> list[tuple[ModelEntry, Prediction | None]]:
        """The first `cache.size` models' predictions for one input (bundled, then the newest runs); None for a model
        that cannot be loaded. More would evict each other from the cache and reload on every stroke."""
        found = []
        for entry in entries[:self.cache.size]:
            try:
                found.append((entry, self.cache.get(entry.path).predict(prepared)))
            except (CheckpointError, OSError):
                found.append((entry, None))
        return found

    def free_path(self, stem: str) -> Path:
        """A path in the runs folder that clashes with no model at all, so an upload never replaces anything."""
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip(".-")[:80] or "uploaded"
        taken = {e.key for e in self.entries()} | {p.stem for p in self.runs_dir.glob("*.safetensors")}
        name, n = stem, 2
        while name in taken:
            name, n = f"{stem}-{n}", n + 1
        return self.runs_dir / f"{name}.safetensors"

    def add_upload(self, source: str | os.PathLike, name: str) -> ModelEntry:
        """Check an uploaded file (type, header, architecture, weights), then add it under a name of its own."""
        require_safetensors(name)
        ckpt = load_checkpoint(source)
        dest = self.free_path(Path(name).stem)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".upload-{dest.name}")
        shutil.copyfile(source, tmp)
        os.replace(tmp, dest)  # appears whole or not at all in everyone's model list
        return ModelEntry(dest.stem, dest, ckpt.meta, bundled=False)
