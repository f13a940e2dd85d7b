"""The model catalogue: bundled checkpoints, the server's own runs, models shared with everyone and each visitor's
own, with a bounded classifier cache. Visitors' folders are bounded (the oldest model goes first) and go with them."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from .api import runs_dir
from .checkpoint import (
    MAX_BYTES,
    CheckpointError,
    NameTaken,
    checkpoint_dir,
    classes_of,
    list_checkpoints,
    load_bytes,
    publish,
    require_safetensors,
    safe_path,
    weights_digest,
)
from .data import CLASS_NAMES
from .inference import Classifier, Prediction
from .limits import Limits
from .preprocess import Prepared
from .visitors import Visitors

DEFAULT_MODEL = "cnn"  # the bundled model Draw starts with
CACHE_SIZE = 16  # classifiers kept in memory; the least recently used one goes first
PLACES = {"bundled": "bundled", "mine": "yours", "shared": "shared"}  # whose a model is, as the lists say it
PREFIXES = {**PLACES, "server": "runs"}  # a model whose file stem another place has already is <prefix>/<stem>
log = logging.getLogger("mnist_demo")


@dataclass(frozen=True)
class ModelEntry:
    key: str  # what the dropdowns and API clients use: the file stem, e.g. "cnn"
    path: Path
    meta: dict
    place: str = "server"  # "bundled", "mine" (the asking visitor's), "shared" (everyone's) or "server" (the CLI's)

    @property
    def bundled(self) -> bool:
        return self.place == "bundled"

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
        where = f" · {PLACES[self.place]}" if self.place in PLACES else ""
        return f"{self.key} ({self.arch}{acc}{where})"

    @property
    def digits(self) -> bool:
        return self.classes == CLASS_NAMES["mnist"]


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
    """Every model the app offers a visitor; the folders are read on each call, since others add models any time.
    `owner` is a visitor's folder name (visitors.owner_of); None sees only what everyone sees."""

    def __init__(self, shipped: str | os.PathLike | None = None, runs: str | os.PathLike | None = None,
                 cache: ClassifierCache | None = None, limits: Limits | None = None) -> None:
        self._shipped, self._runs = shipped, runs
        self.cache = cache if cache is not None else ClassifierCache()  # an empty cache is falsy (it has a len)
        self.limits = limits or Limits.from_env()

    @property
    def shipped_dir(self) -> Path:
        return checkpoint_dir(self._shipped).resolve()

    @property
    def runs_dir(self) -> Path:
        return Path(self._runs or runs_dir()).resolve()

    @property
    def visitors(self) -> Visitors:
        return Visitors(self.runs_dir, self.limits)

    def entries(self, owner: str | None = None, digits: bool = False) -> list[ModelEntry]:
        """Bundled checkpoints (most accurate first), then the visitor's own, the shared ones and the server's own
        runs (each newest first); with `digits`, only models that read digits."""
        entries: list[ModelEntry] = []
        keys: set[str] = set()
        places = [(self.shipped_dir, "bundled"), (self.visitors.folder(owner), "mine"),
                  (self.visitors.shared_dir, "shared"), (self.runs_dir, "server")]
        for directory, place in places:
            if directory is None or (place == "server" and directory == self.shipped_dir):
                continue
            found = list_checkpoints(directory)
            if place == "bundled":
                found.sort(key=lambda pm: -((pm[1].get("metrics") or {}).get("test_accuracy") or 0))
            for path, meta in found:
                # Two places may hold the same file stem; the later one is named by its place too.
                key = path.stem if path.stem not in keys else f"{PREFIXES[place]}/{path.stem}"
                keys.add(key)
                entries.append(ModelEntry(key, path, meta, place))
        return [e for e in entries if e.digits] if digits else entries

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
            except Exception as exc:  # one bad model never breaks the others' answers
                log.warning("model %s gave no answer: %s", entry.path, exc)
                found.append((entry, None))
        return found

    def check_name(self, name: str, owner: str | None) -> str:
        """A name a visitor chose for a new model: letters, digits and a few signs, not too long, and no model's
        they can see (a bundled `cnn` included)."""
        safe_path(name, self.runs_dir)  # refuses what could never be a file's name
        if name in {e.key for e in self.entries(owner)}:
            raise NameTaken(f"a model named {name!r} exists already: choose another name")
        return name

    def key_of(self, path: str | os.PathLike, owner: str | None) -> str | None:
        """The key under which the visitor sees the model at `path` (None: not among theirs)."""
        path = Path(path).resolve()
        return next((e.key for e in self.entries(owner) if e.path.resolve() == path), None)

    def free_stem(self, stem: str, owner: str | None) -> str:
        """A name for a visitor's new model that is no other model's key, so that its key is its file's stem."""
        stem = re.sub(r"[^A-Za-z0-9._+-]+", "-", stem).strip(".-")[:40] or "uploaded"
        taken = {e.key for e in self.entries(owner)}
        name, n = stem, 2
        while name in taken:
            name, n = f"{stem}-{n}", n + 1
        return name

    def add_upload(self, source: str | os.PathLike, name: str, owner: str) -> ModelEntry:
        """Check an uploaded file (size, type, header, architecture, weights), then add it to the visitor's own
        models under a name of its own: it never replaces anything, however many arrive at once."""
        require_safetensors(name)
        size = Path(source).stat().st_size
        if size > MAX_BYTES:
            raise CheckpointError(f"{name}: {size / 2**20:.0f} MB is over the {MAX_BYTES // 2**20} MB limit")
        folder = self.visitors.folder(owner)
        if folder is None:
            raise CheckpointError("an upload needs a visitor's session to belong to")
        blob = Path(source).read_bytes()
        meta = load_bytes(blob, Path(name).name).meta
        dest = publish(blob, folder / f"{self.free_stem(Path(name).stem, owner)}.safetensors", replace=False,
                       numbered=True)
        self.visitors.prune(owner)
        return ModelEntry(dest.stem, dest, meta, "mine")

    def share(self, key: str | None, owner: str) -> ModelEntry:
        """Share one of the visitor's own models with everyone, under a name the app makes (its architecture, its
        accuracy and a nickname), never the visitor's own words."""
        entries = self.entries(owner)
        entry = self.find(key, entries)
        if entry.place != "mine":
            raise CheckpointError(f"{entry.key} is not one of your models: only your own can be shared")
        weights = weights_digest(entry.path)
        same = next((e for e in entries if e.place != "mine" and weights_digest(e.path) == weights), None)
        if same is not None:  # shared twice, or a copy of a bundled model: everyone has it already
            raise CheckpointError(f"everyone has these weights already, as {same.key}")
        path = self.visitors.share(entry.path, entry.arch, entry.accuracy, owner)
        return ModelEntry(path.stem, path, entry.meta, "shared")
