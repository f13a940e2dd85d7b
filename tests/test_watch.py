"""Watching a run learn: the fixed grid, snapshots in records, no effect on training, the process boundary, views."""

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from mnist_demo import figures
from mnist_demo.data import CLASS_NAMES, load_dataset, to_float
from mnist_demo.errors import UserError
from mnist_demo.live_run import LiveRun
from mnist_demo.models import create_model, model_names
from mnist_demo.train import TrainConfig, TrainingRun
from mnist_demo.trainers import Trainers
from mnist_demo.watch import WATCH_PER_CLASS, DrawingError, Watch, drawing_tensor, grid_indices
from mnist_demo.worker import Worker, serve

SMALL = dict(arch="logreg", subset=3000, epochs=2, device="cpu")


@pytest.fixture(scope="module")
def drawing(mnist):
    """A test digit outside the grid, as preprocess would hand it over: 28×28 floats in [0, 1]."""
    return (mnist.test.images[-1].float() / 255).numpy()


def snapshots(records: list[dict]) -> list[dict]:
    return [r["snapshot"] for r in records if "snapshot" in r]


# ---- the grid ----

def test_the_grid_holds_the_first_few_test_images_of_every_class(mnist):
    index = grid_indices(mnist.test.labels, len(mnist.classes))
    labels = mnist.test.labels[index]
    assert labels.tolist() == [c for c in range(len(mnist.classes)) for _ in range(WATCH_PER_CLASS)]
    for c in range(len(mnist.classes)):
        first = torch.nonzero(mnist.test.labels == c).flatten()[:WATCH_PER_CLASS]
        assert index[labels == c].tolist() == first.tolist()
    assert torch.equal(index, grid_indices(mnist.test.labels, len(mnist.classes)))  # the same grid every run


def test_a_csv_datasets_grid_comes_from_its_test_split_and_may_be_short(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.array([0] * 20 + [1] * 20 + [7] * 8)  # a class absent, a rare one
    frame = pd.DataFrame(rng.integers(0, 256, (len(labels), 784)), columns=[f"pixel{i}" for i in range(784)])
    frame.insert(0, "label", labels)
    frame.to_csv(tmp_path / "few.csv", index=False)
    ds = load_dataset(str(tmp_path / "few.csv"))
    watch = Watch(ds, None, torch.device("cpu"))
    counts = torch.bincount(ds.test.labels, minlength=10).clamp(max=WATCH_PER_CLASS)
    assert torch.bincount(watch.labels, minlength=10).tolist() == counts.tolist()
    assert all(any(torch.equal(img, t) for t in ds.test.images) for img in watch.images)


@pytest.mark.parametrize("bad", [np.zeros((28, 27)), np.full((28, 28), 255.0), np.full((28, 28), -0.1)])
def test_a_drawing_must_be_a_28x28_image_in_0_1(bad):
    with pytest.raises(DrawingError, match="28×28 image with values from 0 to 1") as err:
        drawing_tensor(bad)
    assert isinstance(err.value, UserError)


def test_the_training_process_is_not_started_for_a_bad_drawing(tmp_path):
    worker = Worker()
    with pytest.raises(DrawingError):
        list(worker.train(TrainConfig(**SMALL), out=tmp_path / "x.safetensors", drawing=np.zeros((28, 28, 3))))
    assert worker.pid is None


# ---- snapshots in the training records ----

def test_snapshots_come_at_the_start_from_step_records_and_at_every_epoch_end(mnist, drawing):
    run = TrainingRun(TrainConfig(**SMALL), mnist, record_interval_s=0, watch=True, watch_interval_s=0,
                      drawing=drawing)
    records = list(run)
    watch = records[0]
    assert watch["kind"] == "watch" and watch["classes"] == mnist.classes
    assert watch["labels"] == mnist.test.labels[grid_indices(mnist.test.labels, 10)].tolist()
    assert watch["drawing"] == (torch.as_tensor(drawing) * 255).round().to(torch.uint8).tolist()
    assert watch["snapshot"]["step"] == 0
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(epochs) == SMALL["epochs"] and all(r["snapshot"]["step"] == r["step"] for r in epochs)
    from_steps = [r for r in records if r["kind"] == "step" and "snapshot" in r]
    assert from_steps and all(r["snapshot"]["step"] >= r["step"] for r in from_steps)  # taken at the flush
    shots = snapshots(records)
    assert [s["step"] for s in shots] == sorted(s["step"] for s in shots)
    for s in shots:
        assert len(s["guesses"]) == len(watch["labels"]) and set(s["guesses"]) <= set(range(len(mnist.classes)))
        assert len(s["drawing"]) == len(mnist.classes) and math.isclose(sum(s["drawing"]), 1, rel_tol=1e-5)
    right = [sum(g == y for g, y in zip(s["guesses"], watch["labels"])) for s in (shots[0], shots[-1])]
    assert right[1] > right[0]  # it learnt
    assert json.loads(json.dumps(records)) == records  # every record crosses the process boundary as it is


def test_snapshots_from_steps_are_rate_limited_but_epoch_ends_always_have_one(mnist):
    records = list(TrainingRun(TrainConfig(**SMALL), mnist, record_interval_s=0, watch=True,
                                  watch_interval_s=1e9))
    assert [r["kind"] for r in records if "snapshot" in r] == ["watch"] + ["epoch"] * SMALL["epochs"]
    assert all(r["snapshot"]["drawing"] is None for r in records if "snapshot" in r)


def test_without_watch_there_are_no_snapshots(mnist):
    records = list(TrainingRun(TrainConfig(**SMALL), mnist, record_interval_s=0, watch=False))
    assert not snapshots(records) and "watch" not in {r["kind"] for r in records}


@pytest.mark.parametrize("arch", model_names())
def test_watching_does_not_change_training(mnist, drawing, arch):
    """Same seed, same weights and BatchNorm statistics, bit for bit, with a snapshot after every step or without."""
    def train(watch: bool) -> tuple[dict, list[float]]:
        cfg = TrainConfig.for_arch(arch, device="cpu", subset=240, epochs=2, batch_size=32, augment=False)
        run = TrainingRun(cfg, mnist, record_interval_s=0, watch=watch, watch_interval_s=0, drawing=drawing)
        records = list(run)
        assert bool(snapshots(records)) == watch
        return run.model.state_dict(), [r["loss"] for r in records if r["kind"] == "step"]

    (watched, watched_losses), (plain, plain_losses) = train(True), train(False)
    assert watched_losses == plain_losses
    assert watched.keys() == plain.keys() and all(torch.equal(watched[k], plain[k]) for k in plain)


@pytest.mark.parametrize("arch", model_names())
def test_a_snapshot_leaves_the_models_state_and_mode_alone(mnist, arch):
    model = create_model(arch)
    model.train()
    x = to_float(mnist.train.images[:64], mnist.normalisation)
    model(x)  # BatchNorm's running statistics move off their initial values
    before = {k: v.clone() for k, v in model.state_dict().items()}
    watch = Watch(mnist, drawing_tensor(np.zeros((28, 28))), torch.device("cpu"))
    watch.snapshot(model, 1, 0.0)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    watch.snapshot(model, 2, 0.0)
    assert not model.training


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_on_a_gpu_snapshots_use_the_eager_model_beside_the_graphed_steps(mnist, drawing):
    run = TrainingRun(TrainConfig.for_arch("cnn", device="cuda", subset=6000, epochs=2, batch_size=128), mnist,
                      record_interval_s=0, watch=True, watch_interval_s=0, drawing=drawing)
    records = list(run)
    shots, labels = snapshots(records), records[0]["labels"]
    assert len(shots) > 1 + run.cfg.epochs and records[-2]["val_acc"] > 0.9
    assert sum(g == y for g, y in zip(shots[-1]["guesses"], labels)) >= 0.8 * len(labels)
    assert math.isclose(sum(shots[-1]["drawing"]), 1, rel_tol=1e-5)


# ---- across the process boundary ----

def test_the_training_process_carries_the_drawing_and_the_snapshots(tmp_path, drawing):
    job = {"config": TrainConfig(**SMALL).to_dict(), "out": str(tmp_path / "w.safetensors"),
           "drawing": drawing.tolist()}
    stdout = io.StringIO()
    serve(io.StringIO(json.dumps(job) + "\n"), stdout)
    records = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert records[0]["kind"] == "watch" and records[-1] == {"kind": "end"}
    assert records[0]["drawing"] == (torch.as_tensor(drawing) * 255).round().to(torch.uint8).tolist()
    shots = snapshots(records)
    assert len(shots) >= 1 + SMALL["epochs"]
    assert all(math.isclose(sum(s["drawing"]), 1, rel_tol=1e-5) for s in shots)


# ---- the picture ----

@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_the_watch_grid_has_a_column_per_class_and_tells_wrong_guesses_by_their_frame(mnist, dataset):
    classes = CLASS_NAMES[dataset]
    index = grid_indices(mnist.test.labels, len(classes))
    labels = mnist.test.labels[index].numpy()
    guesses = labels.copy()
    guesses[0] = (labels[0] + 1) % len(classes)  # the first image of class 0 is wrong, the second right
    picture = figures.watch_grid(mnist.test.images[index].numpy(), labels, guesses, classes)
    side = 28 * figures.WATCH_ZOOM
    assert picture.size == (2 * figures.WATCH_PAD + figures.WATCH_COLUMN * len(classes),
                            2 * figures.WATCH_CAPTION + WATCH_PER_CLASS * (side + figures.WATCH_CAPTION)
                            + figures.WATCH_PAD)
    pixels = np.asarray(picture)
    x, wrong_y, right_y = figures.WATCH_PAD + 1, 2 * figures.WATCH_CAPTION, 2 * figures.WATCH_CAPTION + side + \
        figures.WATCH_CAPTION
    assert tuple(pixels[wrong_y + side // 2, x]) == figures.WRONG_RGB
    assert tuple(pixels[right_y + side // 2, x]) == figures.RIGHT_RGB
    inset = 3  # a wrong guess's frame is thicker: not told apart by colour alone
    assert tuple(pixels[wrong_y + side // 2, x + inset]) == figures.WRONG_RGB
    assert tuple(pixels[right_y + side // 2, x + inset]) == (0, 0, 0)


# ---- the live view ----

def watch_record(mnist, drawing_probs: list[float] | None) -> dict:
    """A 'watch' record of the untrained kind: every grid image guessed as class 0."""
    index = grid_indices(mnist.test.labels, len(mnist.classes))
    return {"kind": "watch", "images": mnist.test.images[index].tolist(), "labels": mnist.test.labels[index].tolist(),
            "classes": mnist.classes, "drawing": None,
            "snapshot": {"step": 0, "guesses": [0] * len(index), "drawing": drawing_probs}}


def sure(of: int, classes: list[str]) -> list[float]:
    return np.eye(len(classes))[of].tolist()


def test_the_live_view_shows_the_latest_snapshot(mnist):
    live = LiveRun("Training", 1, watch=True)
    assert live.view()["watch_grid"] is None and live.view()["watch_probs"] is None
    uniform = [1 / len(mnist.classes)] * len(mnist.classes)
    record = watch_record(mnist, uniform)
    live.add(record)
    first = live.watch_picture()
    assert first is live.view()["watch_grid"]  # drawn once per snapshot
    assert live.drawing_probabilities() == figures.probabilities(np.asarray(uniform), mnist.classes)
    live.add({"kind": "step", "epoch": 1, "step": 5, "steps": 10, "images_per_s": 1.0, "eta_s": 1.0, "loss": 0.5,
              "train_loss": 0.5, "train_acc": 0.5,
              "snapshot": {"step": 5, "guesses": record["labels"], "drawing": sure(7, mnist.classes)}})
    assert live.view()["watch_grid"] is not first and live.view()["watch_probs"][mnist.classes[7]] == 1.0
    expected = figures.watch_grid(record["images"], record["labels"], record["labels"], mnist.classes)
    assert np.array_equal(np.asarray(live.watch_picture()), np.asarray(expected))


def test_without_watch_the_view_keeps_its_panels(mnist):
    live = LiveRun("Training", 1)
    live.add(watch_record(mnist, None))
    assert "watch_grid" not in live.view() and live.drawing_probabilities() is None


class WatchingWorker:
    """Stands in for the training process: a watch record whose drawing is surely a 3, then 'saved'."""

    def __init__(self, device: str = "auto") -> None:
        self.drawings: list = []

    def train(self, cfg, out, should_stop=None, drawing=None):
        self.drawings.append(drawing)
        ds = load_dataset(cfg.dataset)
        yield watch_record(ds, sure(3, ds.classes))
        yield {"kind": "done", "epochs": 0, "elapsed_s": 1.0}
        yield {"kind": "saved", "path": str(out), "stopped": True, "train_time_s": 1.0, "device": "cpu",
               "classes": ds.classes, "evaluation": {}, "metrics": {"test_accuracy": 0.1, "test_loss": 2.3,
                                                                   "epochs_completed": 0}}


def test_a_session_watches_its_run_and_its_drawing_reaches_the_trainer(mnist, tmp_path, monkeypatch, drawing):
    from mnist_demo import api

    monkeypatch.setenv(api.RUNS_DIR_ENV, str(tmp_path))
    trainers = Trainers(worker=WatchingWorker)
    final = list(trainers.run(TrainConfig(**SMALL), "A", drawing=drawing, watch=True))[-1]
    assert trainers.worker("cpu").drawings[0] is drawing
    assert final["watch_probs"] == figures.probabilities(np.asarray(sure(3, mnist.classes)), mnist.classes)
    record = watch_record(mnist, None)
    assert final["watch_grid"].size == figures.watch_grid(record["images"], record["labels"], record["labels"],
                                                          mnist.classes).size
