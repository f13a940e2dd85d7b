"""The live view of a run, fed synthetic records: progress, one consistent story while stopping, the final word."""

import pytest

from mnist_demo import api
from mnist_demo.data import CLASS_NAMES
from mnist_demo.figures import percent
from mnist_demo.live_run import EPOCH_COLUMNS, PLOT_POINTS, LiveRun

VIEW_KEYS = {"progress", "status", "loss_plot", "acc_plot", "epoch_table", "summary", "result"}
CLASSES = CLASS_NAMES["mnist"]


def step(n: int, total: int, epoch: int = 1, loss: float = 0.5, acc: float = 0.8) -> dict:
    return {"kind": "step", "epoch": epoch, "step": n, "steps": total, "images_per_s": 5000.0,
            "eta_s": (total - n) * 0.01, "loss": loss, "train_loss": loss, "train_acc": acc}


def epoch(n: int, total_steps: int, train_acc: float = 0.9, val_acc: float = 0.91) -> dict:
    return {"kind": "epoch", "epoch": n, "step": total_steps, "steps": total_steps, "train_loss": 0.3,
            "train_acc": train_acc, "val_loss": 0.28, "val_acc": val_acc, "elapsed_s": 12.3 * n}


def done(epochs: int, **extra) -> dict:
    return {"kind": "done", "epochs": epochs, "elapsed_s": 12.3 * epochs, **extra}


def saved(epochs_completed: int, stopped: bool = False, accuracy: float = 0.9234,
          path: str = "runs/logreg-mnist-20240101-000000.safetensors") -> dict:
    """The shape of api._finish's record."""
    evaluation = {"loss": 0.27, "accuracy": accuracy, "per_class_accuracy": [accuracy] * 10,
                  "confusion": [[0] * 10 for _ in range(10)], "errors": 3, "mistakes": [], "predicted": [1, 2],
                  "true": [1, 3]}
    metrics = {"test_accuracy": accuracy, "test_loss": 0.27, "per_class_accuracy": [accuracy] * 10,
               "val_accuracy": 0.91 if epochs_completed else None, "epochs_completed": epochs_completed,
               "stopped_early": stopped}
    return {"kind": "saved", "path": path, "metrics": metrics, "evaluation": evaluation, "classes": CLASSES,
            "train_time_s": 12.345, "device": "cpu", "stopped": stopped}


def test_progress_follows_the_steps():
    live = LiveRun("Training logreg on MNIST", epochs_planned=2)
    live.add(step(25, 200))
    assert live.fraction == 25 / 200
    assert f"{100 * 25 / 200:.0f}%" in live.progress_html() and "step 25/200" in live.progress_html()
    live.add(step(150, 200, epoch=2))
    assert live.fraction == 150 / 200
    assert "ETA" in live.progress_html()
    live.add(dict(step(151, 200, epoch=2), eta_s=None))  # a run's first record has no pace yet
    assert "ETA" not in live.progress_html() and "step 151/200" in live.progress_html()


def test_status_texts_through_a_run():
    live = LiveRun("Training logreg on MNIST", epochs_planned=2)
    live.add(step(10, 200, loss=0.4567, acc=0.812))
    assert live.status == "Training logreg on MNIST: epoch 1/2, loss 0.457, running train accuracy 81.2%"
    live.add(epoch(1, 100, train_acc=0.9, val_acc=0.9125))
    assert "epoch 1/2 done" in live.status and "91.25%" in live.status
    live.add(done(2))
    assert "evaluating on the test set" in live.status
    record = saved(2)
    live.add(record)
    assert live.fraction == 1.0 and live.detail == "done"
    assert live.status.startswith("Done: test accuracy 92.34%")
    assert "logreg-mnist-20240101-000000" in live.status and "cpu" in live.status


def test_view_has_every_panel_and_the_summary_matches_the_saved_record():
    live = LiveRun("Training logreg on MNIST", epochs_planned=1)
    assert set(live.view()) == VIEW_KEYS and live.view()["summary"] is None
    for n in range(1, 11):
        live.add(step(n, 10))
    live.add(epoch(1, 10))
    live.add(done(1))
    record = saved(1)
    live.add(record)
    view = live.view()
    assert set(view) == VIEW_KEYS
    summary = view["summary"]
    assert summary["checkpoint"] == "logreg-mnist-20240101-000000.safetensors"
    assert summary["model"] == "logreg-mnist-20240101-000000"
    assert summary["test_accuracy"] == record["metrics"]["test_accuracy"]
    assert summary["epochs_completed"] == 1 and summary["stopped_early"] is False
    assert summary["train_time_s"] == round(record["train_time_s"], 2) and summary["device"] == "cpu"
    result = view["result"]
    assert result["confusion"] == record["evaluation"]["confusion"] and result["classes"] == CLASSES
    assert result["accuracy"] == record["metrics"]["test_accuracy"] and result["path"] == record["path"]
    assert view["loss_plot"]["step"].tolist() == list(range(1, 11))
    table = view["epoch_table"]
    assert list(table.columns) == EPOCH_COLUMNS and len(table) == 1
    assert table.iloc[0]["val acc"] == percent(0.91)
    assert "acc-svg" in view["acc_plot"]


def test_a_stopped_run_tells_one_story():
    live = LiveRun("Training logreg on MNIST", epochs_planned=1)
    live.add(step(5, 100))
    live.stop()
    assert "stopping" in live.status and live.detail == "stopping…"
    for n in range(6, 10):  # records already on their way keep coming
        live.add(step(n, 100))
        assert "stopping" in live.status and "epoch 1/1" not in live.status
        assert "stopping" in live.progress_html()
    live.add(done(0))
    assert "stopping" in live.status
    live.add(saved(0, stopped=True))
    assert live.status.startswith("Stopped during epoch 1 of 1")
    assert "after 0 epoch" not in live.status and "test accuracy 92.34%" in live.status
    assert live.detail == "stopped" and live.fraction == 9 / 100  # the bar stays where training stopped
    assert live.summary["stopped_early"] is True


def test_a_run_stopped_after_its_last_epoch_just_says_stopped():
    live = LiveRun("Training logreg on MNIST", epochs_planned=2)
    live.add(epoch(1, 10))
    live.add(epoch(2, 10))
    live.stop()
    live.add(done(2))
    live.add(saved(2, stopped=True))
    assert live.status.startswith("Stopped; kept the best model") and "during epoch" not in live.status


@pytest.mark.parametrize("passed", [True, False])
def test_a_sanity_check_passes_or_fails_on_the_done_record(passed):
    images, epochs = api.SANITY_CHECK["overfit"], api.SANITY_CHECK["epochs"]
    live = LiveRun("Sanity check logreg on MNIST", epochs_planned=epochs, overfit=images)
    # What the check reports is the accuracy on its images in evaluation mode at the end (the "validation" split is
    # those same images), not the running accuracy during the epoch.
    final = 1.0 if passed else (images - 2) / images
    for n in range(1, epochs + 1):
        live.add(epoch(n, 4 * epochs, train_acc=0.5, val_acc=final * n / epochs))
    live.add(done(epochs, overfit_passed=passed))
    live.add(saved(epochs, path="/tmp/overfit-x/overfit.safetensors"))
    summary = live.view()["summary"]
    assert summary["sanity_check"] == ("passed" if passed else "failed")
    assert summary["images"] == images and summary["epochs"] == epochs
    assert summary["final_train_accuracy"] == final
    assert passed or f"{final:.1%}" in live.status
    assert ("PASSED" in live.status) is passed and ("FAILED" in live.status) is not passed
    assert str(images) in live.status
    assert live.result is None and "checkpoint" not in summary  # a sanity check keeps no model


def test_the_loss_curve_is_thinned_for_the_browser():
    live = LiveRun("Training logreg on MNIST", epochs_planned=1)
    total = 3 * PLOT_POINTS + 7
    for n in range(1, total + 1):
        live.add(step(n, total, loss=1 / n))
    frame = live.loss_frame()
    assert len(frame) == PLOT_POINTS
    steps = frame["step"].tolist()
    assert steps[0] == 1 and steps[-1] == total and steps == sorted(set(steps))
    assert (frame["loss"] == 1 / frame["step"]).all()  # each point keeps its own loss


def test_a_short_curve_keeps_every_point():
    live = LiveRun("Training logreg on MNIST", epochs_planned=1)
    for n in range(1, PLOT_POINTS):
        live.add(step(n, PLOT_POINTS))
    assert len(live.loss_frame()) == PLOT_POINTS - 1


def test_an_exploding_loss_is_drawn_capped_so_the_curve_stays_readable():
    from mnist_demo.live_run import LOSS_SHOWN_UP_TO

    live = LiveRun("Training cnn on MNIST", epochs_planned=1)
    for i, loss in enumerate([2.3, 40.0, 1e30], start=1):
        live.add({"kind": "step", "epoch": 1, "step": i, "steps": 10, "images_per_s": 1.0, "eta_s": 1.0,
                  "loss": loss, "train_loss": loss, "train_acc": 0.1})
    assert live.loss_frame()["loss"].tolist() == [2.3, LOSS_SHOWN_UP_TO, LOSS_SHOWN_UP_TO]
