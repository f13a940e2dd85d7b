"""The model catalogue: bundled models and runs listed apart, uploads that never replace, a bounded fresh cache."""

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from mnist_demo.catalogue import CACHE_SIZE, DEFAULT_MODEL, Catalogue, ClassifierCache
from mnist_demo.checkpoint import CheckpointError, save_checkpoint
from mnist_demo.data import CLASS_NAMES, NORMALISATION
from mnist_demo.limits import Limits
from mnist_demo.models import create_model
from mnist_demo.preprocess import Prepared
from mnist_demo.visitors import owner_of


def _save(directory, stem, accuracy=0.9, seed=0, arch="logreg", model_arch=None):
    """A small checkpoint; model_arch builds the weights of another architecture (a file that will not load)."""
    torch.manual_seed(seed)
    return save_checkpoint(create_model(model_arch or arch), directory / f"{stem}.safetensors", arch=arch,
                           dataset="mnist", normalisation=NORMALISATION["mnist"],
                           metrics={"test_accuracy": accuracy})


def _save_at(directory, stem, created: float, monkeypatch, **kw):
    """Save with a given creation time: 'created' has one-second resolution, too coarse for quick saves."""
    real_gmtime = time.gmtime
    with monkeypatch.context() as m:
        m.setattr(time, "gmtime", lambda secs=None: real_gmtime(created))
        return _save(directory, stem, **kw)


def _sample() -> Prepared:
    return Prepared(np.random.default_rng(0).random((28, 28), dtype=np.float32))


@pytest.fixture
def dirs(tmp_path):
    shipped, runs = tmp_path / "shipped", tmp_path / "runs"
    shipped.mkdir()
    runs.mkdir()
    return shipped, runs


def test_bundled_by_accuracy_then_runs_newest_first(dirs, monkeypatch):
    shipped, runs = dirs
    for stem, acc in [("low", 0.80), ("high", 0.95), ("mid", 0.90)]:
        _save(shipped, stem, acc)
    now = time.time()
    for stem, age in [("old", 3000), ("newest", 0), ("middle", 60)]:
        _save_at(runs, stem, now - age, monkeypatch, accuracy=0.99 - age / 1e5)
    entries = Catalogue(shipped, runs).entries()
    assert [e.key for e in entries] == ["high", "mid", "low", "newest", "middle", "old"]
    assert [e.bundled for e in entries] == [True] * 3 + [False] * 3
    assert [e.accuracy for e in entries[:3]] == [0.95, 0.90, 0.80]


def test_a_run_with_a_bundled_models_name_stays_distinct(dirs):
    shipped, runs = dirs
    bundled_path = _save(shipped, "x", 0.9, seed=1)
    run_path = _save(runs, "x", 0.8, seed=2)
    cat = Catalogue(shipped, runs)
    assert [e.key for e in cat.entries()] == ["x", "runs/x"]
    assert cat.find("x").path == bundled_path.resolve() and cat.find("x").bundled
    assert cat.find("runs/x").path == run_path.resolve() and not cat.find("runs/x").bundled
    _, a = cat.classifier("x")
    _, b = cat.classifier("runs/x")
    assert not np.allclose(a.predict(_sample()).probabilities, b.predict(_sample()).probabilities)


def test_the_same_folder_for_both_is_listed_once(dirs):
    shipped, _ = dirs
    _save(shipped, "only")
    assert [e.key for e in Catalogue(shipped, shipped).entries()] == ["only"]


def test_default_is_the_bundled_default_model_even_when_less_accurate(dirs):
    shipped, runs = dirs
    _save(shipped, DEFAULT_MODEL, 0.90)
    _save(shipped, "better", 0.95)
    _save(runs, "best-run", 0.99)
    cat = Catalogue(shipped, runs)
    assert cat.default_key() == DEFAULT_MODEL
    assert cat.find(None).key == DEFAULT_MODEL


def test_default_skips_a_model_that_will_not_load(dirs):
    shipped, runs = dirs
    _save(shipped, DEFAULT_MODEL, 0.99, model_arch="mlp-50-20")  # readable header, weights that do not fit
    _save(shipped, "fallback", 0.90)
    cat = Catalogue(shipped, runs)
    assert DEFAULT_MODEL in [e.key for e in cat.entries()]
    assert cat.default_key() == "fallback"
    with pytest.raises(CheckpointError, match="do not fit"):
        cat.classifier(DEFAULT_MODEL)


def test_no_model_at_all(dirs):
    cat = Catalogue(*dirs)
    assert cat.entries() == [] and cat.default_key() is None
    with pytest.raises(CheckpointError, match="No model yet"):
        cat.find(None)


def test_an_unknown_model_is_named_in_the_error(dirs):
    shipped, runs = dirs
    _save(shipped, "real")
    with pytest.raises(CheckpointError, match="'no-such-model'"):
        Catalogue(shipped, runs).find("no-such-model")


def test_the_cache_rereads_a_changed_file(tmp_path):
    path = _save(tmp_path, "m", seed=1)
    cache = ClassifierCache()
    first = cache.get(path)
    assert cache.get(path) is first  # unchanged: the same object
    before = first.predict(_sample()).probabilities
    stat = path.stat()
    _save(tmp_path, "m", seed=2)  # new weights, the same size
    assert path.stat().st_size == stat.st_size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    second = cache.get(path)
    assert second is not first and len(cache) == 1
    assert not np.allclose(second.predict(_sample()).probabilities, before)
    assert np.allclose(first.predict(_sample()).probabilities, before)  # a copy in use elsewhere is untouched


def test_the_cache_keeps_at_most_its_size_and_drops_the_least_recently_used(tmp_path):
    assert ClassifierCache().size == CACHE_SIZE
    a, b, c = (_save(tmp_path, stem) for stem in "abc")
    cache = ClassifierCache(size=2)
    clf_a, clf_b = cache.get(a), cache.get(b)
    assert cache.get(a) is clf_a  # a is now the most recently used
    cache.get(c)
    assert len(cache) == 2
    assert cache.get(a) is clf_a  # kept
    assert cache.get(b) is not clf_b  # evicted, so read again
    assert len(cache) == 2


A, B = owner_of("visitor-a"), owner_of("visitor-b")


def test_an_upload_must_be_safetensors(dirs, tmp_path):
    shipped, runs = dirs
    source = _save(tmp_path, "good")
    with pytest.raises(CheckpointError, match=r"\.safetensors"):
        Catalogue(shipped, runs).add_upload(source, "model.pt", A)
    assert list(runs.iterdir()) == []


def test_a_garbage_upload_is_refused_and_leaves_nothing(dirs, tmp_path):
    shipped, runs = dirs
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError):
        Catalogue(shipped, runs).add_upload(junk, "junk.safetensors", A)
    assert not list(runs.rglob("*.safetensors"))


def test_an_upload_never_replaces_a_model(dirs, tmp_path):
    shipped, runs = dirs
    bundled = _save(shipped, "x", seed=1)
    bundled_bytes = bundled.read_bytes()
    cat = Catalogue(shipped, runs)
    first = cat.add_upload(_save(tmp_path, "up1", seed=2), "mine.safetensors", A)
    first_bytes = first.path.read_bytes()
    second = cat.add_upload(_save(tmp_path, "up2", seed=3), "mine.safetensors", A)
    clash = cat.add_upload(_save(tmp_path, "up3", seed=4), "x.safetensors", A)
    assert (first.key, second.key, clash.key) == ("mine", "mine-2", "x-2")
    assert first.path.read_bytes() == first_bytes and bundled.read_bytes() == bundled_bytes
    assert {e.key for e in cat.entries(A)} == {"x", "mine", "mine-2", "x-2"}
    assert all(e.path.parent == cat.visitors.folder(A) for e in (first, second, clash))
    assert not any(p.name.startswith(".") for p in cat.visitors.folder(A).iterdir())


def test_uploads_at_once_never_replace_each_other(dirs, tmp_path):
    shipped, runs = dirs
    limits = Limits(visitor_models=100)
    cat = Catalogue(shipped, runs, limits=limits)
    sources = [_save(tmp_path, f"s{i}", seed=i) for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        added = list(pool.map(lambda src: cat.add_upload(src, "same.safetensors", A), sources))
    assert len({e.path for e in added}) == len(sources) == len(cat.entries(A))
    assert sorted(e.path.read_bytes() for e in added) == sorted(src.read_bytes() for src in sources)


def test_a_visitors_models_are_theirs_alone(dirs, tmp_path):
    shipped, runs = dirs
    _save(shipped, "bundled")
    cat = Catalogue(shipped, runs)
    mine = cat.add_upload(_save(tmp_path, "up", seed=2), "private.safetensors", A)
    assert mine.key in {e.key for e in cat.entries(A)}
    for other in (B, None, "../" + A, A.upper()):
        assert [e.key for e in cat.entries(other)] == ["bundled"]
        with pytest.raises(CheckpointError, match="Unknown model"):
            cat.find(mine.key, cat.entries(other))
    cat.visitors.forget(A)  # the visitor has gone
    assert not mine.path.exists() and [e.key for e in cat.entries(A)] == ["bundled"]


def test_a_visitor_keeps_at_most_the_quota_and_the_oldest_goes_first(dirs, tmp_path):
    shipped, runs = dirs
    limits = Limits(visitor_models=3)
    cat = Catalogue(shipped, runs, limits=limits)
    added = []
    for i in range(limits.visitor_models + 4):
        added.append(cat.add_upload(_save(tmp_path, f"s{i}", seed=i), f"m{i}.safetensors", A))
        os.utime(added[-1].path, ns=(i * 10**9, i * 10**9))  # the order they came in, on any file system
    kept = {e.key for e in cat.entries(A) if e.place == "mine"}
    assert kept == {e.key for e in added[-limits.visitor_models:]}


def test_sharing_gives_a_name_the_app_makes_and_everyone_sees_it(dirs, tmp_path):
    shipped, runs = dirs
    limits = Limits(visitor_shares=2)
    cat = Catalogue(shipped, runs, limits=limits)
    mine = cat.add_upload(_save(tmp_path, "up", accuracy=0.9876), "Mr-Smith-is-rude.safetensors", A)
    shared = cat.share(mine.key, A)
    assert "Smith" not in shared.key and shared.key.startswith("logreg-98.8-")
    for other in (B, None):
        assert [e.key for e in cat.entries(other) if e.place == "shared"] == [shared.key]
    with pytest.raises(CheckpointError, match="not one of your models"):
        cat.share(shared.key, B)
    with pytest.raises(CheckpointError, match=f"everyone has these weights already, as {shared.key}"):
        cat.share(mine.key, A)  # the same model twice
    other = cat.add_upload(_save(tmp_path, "up2", seed=7), "second.safetensors", A)
    cat.share(other.key, A)
    third = cat.add_upload(_save(tmp_path, "up3", seed=8), "third.safetensors", A)
    with pytest.raises(CheckpointError, match="shared 2 models already"):
        cat.share(third.key, A)
    cat.visitors.forget(A)
    assert shared.path.exists()  # what was shared stays when its owner goes


def test_a_copy_of_a_bundled_model_is_not_shared_again(dirs, tmp_path):
    shipped, runs = dirs
    bundled = _save(shipped, "bundled", seed=3)
    cat = Catalogue(shipped, runs)
    copy = tmp_path / "copy.safetensors"
    _save(tmp_path, "copy", accuracy=0.999, seed=3)  # the same weights, other metadata
    mine = cat.add_upload(copy, "totally-new.safetensors", A)
    assert mine.path.read_bytes() != bundled.read_bytes()
    with pytest.raises(CheckpointError, match="already, as bundled"):
        cat.share(mine.key, A)


def test_models_that_read_no_digits_are_left_out_of_the_digit_lists(dirs):
    shipped, runs = dirs
    _save(shipped, "digits")
    torch.manual_seed(0)
    save_checkpoint(create_model("logreg"), shipped / "clothes.safetensors", arch="logreg", dataset="fashion-mnist",
                    normalisation=NORMALISATION["fashion-mnist"], classes=CLASS_NAMES["fashion-mnist"])
    cat = Catalogue(shipped, runs)
    assert {e.key for e in cat.entries()} == {"digits", "clothes"}
    assert [e.key for e in cat.entries(digits=True)] == ["digits"]


def test_answers_list_an_unreadable_model_with_none(dirs):
    shipped, runs = dirs
    _save(shipped, "good", 0.9)
    _save(shipped, "broken", 0.8, model_arch="mlp-50-20")
    cat = Catalogue(shipped, runs)
    answers = dict((entry.key, pred) for entry, pred in cat.answers(_sample(), cat.entries()))
    assert set(answers) == {"good", "broken"}
    assert answers["broken"] is None
    assert answers["good"].probabilities.shape == (10,) and answers["good"].label is not None


def test_the_comparison_stops_at_the_cache_size_so_strokes_never_reload_models(tmp_path):
    shipped, runs = tmp_path / "shipped", tmp_path / "runs"
    shipped.mkdir()
    runs.mkdir()
    cat = Catalogue(shipped, runs, cache=ClassifierCache(size=2))
    for name in ("a", "b", "c"):
        save_checkpoint(create_model("logreg"), runs / f"{name}.safetensors", arch="logreg", dataset="mnist",
                        normalisation=(0.1307, 0.3081))
    entries = cat.entries()
    answers = cat.answers(Prepared(np.zeros((28, 28), np.float32)), entries)
    assert [e.key for e, _ in answers] == [e.key for e in entries[:2]] and len(cat.cache) == 2
