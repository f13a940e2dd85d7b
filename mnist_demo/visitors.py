"""Each visitor's own models, in a folder of their own under the runs folder, and the models shared with everyone:
who owns what, how much each may keep, and clearing a visitor's folder when they go."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

from .checkpoint import CheckpointError, publish
from .limits import Limits

VISITORS, SHARED = "visitors", "shared"  # sub-folders of the runs folder
_OWNER = re.compile(r"^[0-9a-f]{20}$")
# Process-wide: the secret that turns a session into its folder's name, and who shared how many models.
_SECRET = secrets.token_bytes(32)
_SHARES: Counter[str] = Counter()
_LOCK = threading.Lock()
ADJECTIVES = ("brave", "calm", "clever", "eager", "gentle", "happy", "jolly", "kind", "lively", "lucky", "merry",
              "nimble", "proud", "quick", "quiet", "sunny", "swift", "witty", "bright", "bold")
ANIMALS = ("otter", "falcon", "panda", "koala", "lynx", "heron", "badger", "beaver", "gecko", "walrus", "tapir",
           "puffin", "marten", "ibex", "okapi", "lemur", "bison", "crane", "robin", "whale")
log = logging.getLogger("mnist_demo")


def owner_of(session: str | None) -> str | None:
    """A session's folder name: keyed on a secret of this process, so no one can pick another visitor's folder,
    and a session's id never appears on disk. None for no session (the CLI, a test)."""
    if not session:
        return None
    return hmac.new(_SECRET, session.encode(), hashlib.sha256).hexdigest()[:20]


def _models(*folders: Path) -> list[Path]:
    """The folders' checkpoints, oldest first."""
    found = []
    for path in (p for folder in folders for p in folder.glob("*.safetensors")):
        try:
            found.append((path.stat().st_mtime_ns, path))
        except OSError:
            continue
    return [path for _, path in sorted(found)]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class Visitors:
    """The visitors' and the shared folders under one runs folder, and their bounds (limits.Limits)."""

    def __init__(self, runs: Path, limits: Limits) -> None:
        self.root, self.shared_dir, self.limits = runs / VISITORS, runs / SHARED, limits

    def folder(self, owner: str | None) -> Path | None:
        """Where a visitor's models go; None for no visitor or a name that is not one of ours."""
        return visitor_folder(self.root.parent, owner)

    def forget(self, owner: str | None) -> None:
        """A visitor has gone: their models and files go too (what they shared stays)."""
        folder = self.folder(owner)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        with _LOCK:
            _SHARES.pop(owner or "", None)

    def prune(self, owner: str | None = None) -> list[Path]:
        """Keep within the limits: the visitor's newest models (by count and bytes), then everyone's together, the
        shared ones last; the oldest goes first. Returns what was removed."""
        removed: list[Path] = []
        folder = self.folder(owner)
        if folder is not None:
            mine = _models(folder)
            while mine and (len(mine) > self.limits.visitor_models
                            or sum(map(_size, mine)) > self.limits.visitor_mb * 2**20):
                removed.append(mine.pop(0))
        shared = _models(self.shared_dir)
        while len(shared) > self.limits.shared_models:
            removed.append(shared.pop(0))
        everyone = [p for p in _models(*self.root.glob("*")) if p not in removed]
        total = sum(map(_size, everyone + shared))
        for path in everyone + shared:  # the visitors' oldest first, the shared ones last
            if total <= self.limits.runs_mb * 2**20:
                break
            total -= _size(path)
            removed.append(path)
        for path in removed:
            path.unlink(missing_ok=True)
            log.info("removed %s to stay within the limits", path)
        return removed

    def share(self, source: Path, arch: str, accuracy: float | None, owner: str) -> Path:
        """A copy of a visitor's model among the shared ones, named <arch>-<accuracy>-<nickname>."""
        with _LOCK:
            if _SHARES[owner] >= self.limits.visitor_shares:
                raise CheckpointError(f"you have shared {_SHARES[owner]} models already, the most one person may")
            _SHARES[owner] += 1
        score = f"-{accuracy * 100:.1f}" if accuracy is not None else ""
        nickname = f"{secrets.choice(ADJECTIVES)}-{secrets.choice(ANIMALS)}"
        path = publish(source.read_bytes(), self.shared_dir / f"{arch}{score}-{nickname}.safetensors",
                       replace=False, numbered=True)
        self.prune()
        return path

    def sweep(self, idle_s: float) -> int:
        """Clear visitors' folders untouched for `idle_s` (an API client that never said it left); how many."""
        cleared = 0
        now = time.time()
        for folder in self.root.glob("*"):
            try:
                newest = max([folder.stat().st_mtime, *(p.stat().st_mtime for p in folder.iterdir())])
            except OSError:
                continue
            if now - newest > idle_s and _OWNER.match(folder.name):
                shutil.rmtree(folder, ignore_errors=True)
                cleared += 1
        return cleared


def visitor_folder(runs: Path, owner: str | None) -> Path | None:
    """Where a visitor's models go under a runs folder; None for no visitor or a name that is not one of ours."""
    return runs / VISITORS / owner if owner and _OWNER.match(owner) else None


def examples_folder(runs: Path, owner: str | None) -> Path:
    """Where a visitor's examples CSV is written for download: inside their folder, so it goes with them."""
    target = (visitor_folder(runs, owner) or runs / VISITORS / "anonymous") / "examples"
    target.mkdir(parents=True, exist_ok=True)
    return target
