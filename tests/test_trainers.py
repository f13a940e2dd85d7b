"""The training service: each session's Stop ends its own run only, and runs stream their views to the end."""

import threading
from pathlib import Path

import pytest
import torch

from mnist_demo import api, examples
from mnist_demo import trainers as trainers_module
from mnist_demo.checkpoint import load_checkpoint
from mnist_demo.data import CLASS_NAMES
from mnist_demo.finetune import FinetuneConfig
from mnist_demo.limits import Limits
from mnist_demo.train import ConfigError, TrainConfig, resolve_device
from mnist_demo.trainers import Sessions, Trainers, device_key

STEPS_PER_EPOCH = 4


class FakeWorker:
    """Stands in for the training process: a few records, then 'saved'; it honours should_stop as the real one."""

    def __init__(self, device: str = "auto") -> None:
        self.calls: list[tuple[TrainConfig, Path]] = []
        self.steps = 0

    def train(self, cfg, out, should_stop=None, drawing=None):
        self.calls.append((cfg, Path(out)))
        return self._records(cfg, Path(out), should_stop or (lambda: False))

    def teach(self, base, examples, out, should_stop=None):
        self.calls.append((base, Path(out)))
        return self._records(TrainConfig(epochs=FinetuneConfig().epochs), Path(out), should_stop or (lambda: False))

    def _records(self, cfg, out, should_stop):
        total, completed, stopped = cfg.epochs * STEPS_PER_EPOCH, 0, False
        for ep in range(1, cfg.epochs + 1):
            for _ in range(STEPS_PER_EPOCH):
                self.steps += 1
                yield {"kind": "step", "epoch": ep, "step": self.steps, "steps": total, "images_per_s": 1000.0,
                       "eta_s": 1.0, "loss": 1.0 / self.steps, "train_loss": 0.5, "train_acc": 0.8}
                if should_stop():
                    stopped = True
                    break
            if stopped:
                break
            completed = ep
            yield {"kind": "epoch", "epoch": ep, "step": self.steps, "steps": total, "train_loss": 0.4,
                   "train_acc": 0.9, "val_loss": 0.35, "val_acc": 0.9, "elapsed_s": 1.0 * ep}
        yield {"kind": "done", "epochs": completed, "elapsed_s": 1.0,
               **({"overfit_passed": True} if cfg.overfit else {})}
        metrics = {"test_accuracy": 0.91, "test_loss": 0.3, "per_class_accuracy": [0.91] * 10, "val_accuracy": 0.9,
                   "epochs_completed": completed, "stopped_early": stopped}
        yield {"kind": "saved", "path": str(out), "metrics": metrics,
               "evaluation": {"accuracy": 0.91, "loss": 0.3, "confusion": [[0] * 10] * 10},
               "classes": CLASS_NAMES["mnist"], "train_time_s": 1.0, "device": "cpu", "stopped": stopped}


class SilentWorker(FakeWorker):
    """A run stopped before its first step ended: the real worker then yields nothing and saves nothing."""

    def _records(self, cfg, out, should_stop):
        yield from ()


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv(api.RUNS_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(trainers_module, "UI_INTERVAL_S", 0.0)  # a view for every record: deterministic streams
    return tmp_path


def _cfg(**kw) -> TrainConfig:
    return TrainConfig.for_arch("logreg", device="cpu", **{"epochs": 2, **kw})


# ---- Sessions ----

def test_a_stop_reaches_only_its_own_session():
    sessions = Sessions()
    with sessions.claim("A") as a, sessions.claim("B") as b:
        assert a is not b
        assert sessions.stop("A") is True
        assert a.stop.is_set() and not b.stop.is_set()
        assert sessions.stop("B") is True and b.stop.is_set()


def test_stop_with_no_run_says_so():
    sessions = Sessions()
    assert sessions.stop("nobody") is False
    with sessions.claim("A"):
        pass
    assert sessions.stop("A") is False  # the run is over and forgotten


def test_an_old_stop_cannot_cancel_the_next_run():
    sessions = Sessions()
    sessions.reserve("A")
    assert sessions.stop("A") is True  # pressed while queued
    assert not sessions.reserve("A")  # that run still holds the session's place until it comes and ends
    with sessions.claim("A") as stopped:
        assert stopped.stop.is_set()
    sessions.reserve("A")  # the next run
    with sessions.claim("A") as control:
        assert not control.stop.is_set()
    with sessions.claim("A") as finished:
        finished.stop.set()
    sessions.reserve("A")
    with sessions.claim("A") as control:
        assert control is not finished and not control.stop.is_set()


def test_running_tells_a_started_run_from_a_queued_one():
    sessions = Sessions()
    assert not sessions.running("A")
    sessions.reserve("A")
    assert not sessions.running("A")  # armed: still in the queue
    with sessions.claim("A"):
        assert sessions.running("A")
    assert not sessions.running("A")


def test_a_stop_while_queued_reaches_the_run():
    sessions = Sessions()
    sessions.reserve("A")
    sessions.stop("A")
    with sessions.claim("A") as control:
        assert control.stop.is_set()


def test_a_session_has_one_run_waiting_or_going_at_a_time():
    sessions = Sessions()
    assert sessions.reserve("A") and sessions.busy("A")
    assert not sessions.reserve("A")  # a second training while the first waits
    assert sessions.reserve("B")  # another visitor is not held up
    with sessions.claim("A") as control:
        assert not sessions.reserve("A")  # nor while it runs
        assert sessions.stop("A") is True and control.stop.is_set()  # and its Stop still works
    assert not sessions.busy("A") and sessions.reserve("A")  # the run over, the next may come


def test_a_run_is_stopped_at_the_time_limit_and_keeps_its_best_model(runs):
    trainers = Trainers(worker=FakeWorker, limits=Limits(max_run_s=0))
    views = list(trainers.run(_cfg(), "A"))
    assert views[-1]["summary"]["stopped_early"] is True
    assert trainers.worker("cpu").steps < _cfg().epochs * STEPS_PER_EPOCH


def test_epochs_over_the_servers_limit_are_refused_before_any_wait(runs):
    limits = Limits(max_epochs=2)
    with pytest.raises(ConfigError, match=f"at most {limits.max_epochs}"):
        next(Trainers(worker=FakeWorker, limits=limits).run(_cfg(epochs=limits.max_epochs + 1), "A"))


# ---- devices ----

def test_device_key_names_the_physical_device():
    assert device_key("auto") == device_key(str(resolve_device("auto")))
    assert device_key("cpu") == "cpu"
    # 'auto', 'cuda' and 'cuda:0' are one device: one slot for the CPU, one per GPU.
    assert Trainers.slots() == 1 + torch.cuda.device_count() + int(torch.backends.mps.is_available())


def test_device_key_refuses_a_device_that_is_not_there():
    with pytest.raises(ConfigError, match="cuda:99"):
        device_key("cuda:99")


# ---- Trainers.run with a fake training process ----

def test_a_run_streams_views_to_its_summary(runs):
    trainers = Trainers(worker=FakeWorker)
    cfg = _cfg()
    views = list(trainers.run(cfg, "A"))
    assert "starting on cpu" in views[0]["status"]
    assert views[0]["status"].startswith("Training logreg on MNIST")
    assert any("epoch 1/2" in v["status"] for v in views) and any("epoch 2/2 done" in v["status"] for v in views)
    worker = trainers.worker("cpu")
    [(seen_cfg, out)] = worker.calls
    assert seen_cfg == cfg and out.parent == runs and out.name.startswith("logreg-mnist-")
    final = views[-1]
    assert final["status"].startswith("Done") and "stopping" not in final["status"]
    assert final["summary"]["model"] == out.stem and final["summary"]["epochs_completed"] == cfg.epochs
    assert final["summary"]["stopped_early"] is False and final["result"]["path"] == str(out)
    assert final["loss_plot"]["step"].tolist() == list(range(1, cfg.epochs * STEPS_PER_EPOCH + 1))
    assert len(final["epoch_table"]) == cfg.epochs
    assert trainers.sessions.stop("A") is False  # the finished run let go of its flag


def run_with(trainers: Trainers, cfg: TrainConfig, act) -> tuple[list[dict], int]:
    """Session A's run; `act` runs once, at its first step of epoch 1, and must succeed. Views, and where it acted."""
    views, acted_at = [], None
    for view in trainers.run(cfg, "A"):
        views.append(view)
        if acted_at is None and "epoch 1/2, loss" in view["status"]:
            assert act()
            acted_at = len(views)
    assert acted_at is not None
    return views, acted_at


def test_a_stop_from_the_same_session_stops_the_run(runs):
    trainers = Trainers(worker=FakeWorker)
    cfg = _cfg()
    views, stopped_at = run_with(trainers, cfg, lambda: trainers.sessions.stop("A"))
    after = views[stopped_at:]
    assert len(after) >= 2
    assert all("stopping" in v["status"] for v in after[:-1])
    assert not any("epoch 1/2" in v["status"] for v in after)  # no flicker back to the training status
    final = after[-1]
    assert final["status"].startswith(f"Stopped during epoch 1 of {cfg.epochs}")
    assert final["summary"]["stopped_early"] is True
    assert trainers.worker("cpu").steps < cfg.epochs * STEPS_PER_EPOCH  # the worker was told to stop


def test_a_stop_from_another_session_leaves_the_run_alone(runs):
    trainers = Trainers(worker=FakeWorker)
    cfg = _cfg()
    def interfere() -> bool:
        assert trainers.sessions.stop("C") is False  # a session with nothing running
        with trainers.sessions.claim("B") as other:  # a session with a run of its own
            return trainers.sessions.stop("B") and other.stop.is_set()

    views, _ = run_with(trainers, cfg, interfere)
    assert not any("stopping" in v["status"] for v in views)
    assert views[-1]["status"].startswith("Done") and views[-1]["summary"]["stopped_early"] is False
    assert trainers.worker("cpu").steps == cfg.epochs * STEPS_PER_EPOCH


def test_a_stop_before_the_start_trains_nothing_and_the_next_run_is_not_cancelled(runs):
    trainers = Trainers(worker=FakeWorker)
    trainers.sessions.reserve("A")
    trainers.sessions.stop("A")
    views = list(trainers.run(_cfg(), "A"))
    assert [v["status"] for v in views] == ["Stopped before it started."]
    assert trainers.worker("cpu").calls == []
    trainers.sessions.reserve("A")
    assert list(trainers.run(_cfg(), "A"))[-1]["status"].startswith("Done")


def test_a_run_stopped_before_its_first_step_says_nothing_was_saved(runs):
    final = list(Trainers(worker=SilentWorker).run(_cfg(), "A"))[-1]
    assert "nothing was saved" in final["status"] and final["summary"] is None


def test_a_second_run_on_the_same_device_waits_and_can_be_stopped_while_waiting(runs):
    trainers = Trainers(worker=FakeWorker)
    first = trainers.run(_cfg(), "A")
    next(first)  # A holds the device
    second = trainers.run(_cfg(), "B")
    assert next(second)["status"] == "Waiting: another run is using cpu…"
    assert trainers.sessions.stop("B") is True
    assert [v["status"] for v in second] == ["Stopped before it started."]
    assert list(first)[-1]["status"].startswith("Done")
    assert len(trainers.worker("cpu").calls) == 1


def test_a_sanity_check_trains_in_a_scratch_folder(runs):
    trainers = Trainers(worker=FakeWorker)
    cfg = api.make_sanity_config(arch="logreg", device="cpu")
    views = list(trainers.run(cfg, "A"))
    [(_, out)] = trainers.worker("cpu").calls
    assert out.parent != runs and not out.parent.exists()  # scratch, and gone afterwards
    final = views[-1]
    assert final["status"].startswith("Sanity check PASSED") and final["summary"]["images"] == cfg.overfit
    assert final["result"] is None and list(runs.iterdir()) == []


def test_runs_in_different_threads_each_get_their_own_views(runs):
    trainers = Trainers(worker=FakeWorker)
    results: dict[str, list[dict]] = {}

    def go(session: str) -> None:
        results[session] = list(trainers.run(_cfg(epochs=1), session))

    threads = [threading.Thread(target=go, args=(s,)) for s in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(results[s][-1]["status"].startswith("Done") for s in ("A", "B"))
    assert len(trainers.worker("cpu").calls) == 2


# ---- one real run through the training process ----

def test_a_real_run_through_the_training_process(tmp_path, monkeypatch):
    monkeypatch.setenv(api.RUNS_DIR_ENV, str(tmp_path))
    cfg = TrainConfig.for_arch("logreg", epochs=2, subset=3000, device="cpu")
    trainers = Trainers()
    worker = trainers.worker(cfg.device)
    try:
        views = list(trainers.run(cfg, "real"))
    finally:
        if worker._proc is not None:  # let the training process end with the test
            worker._proc.stdin.close()
            worker._proc.wait(timeout=60)
    summary = views[-1]["summary"]
    assert summary["test_accuracy"] > 0.8 and summary["stopped_early"] is False
    path = tmp_path / summary["checkpoint"]
    assert path.is_file()
    ckpt = load_checkpoint(path)
    assert ckpt.arch == "logreg" and ckpt.meta["metrics"]["test_accuracy"] == summary["test_accuracy"]
    assert views[-1]["result"]["confusion"] and len(views[-1]["epoch_table"]) == cfg.epochs


def test_a_run_refused_before_it_started_leaves_nothing_to_stop():
    sessions = Sessions()
    sessions.reserve("a")
    sessions.forget("a")  # its settings were refused: the run never claimed the flag
    assert sessions.stop("a") is False
    sessions.reserve("b")
    with sessions.claim("b"):
        sessions.forget("b")  # a running run's flag stays, so its Stop still works
        assert sessions.stop("b") is True


def test_teaching_streams_like_a_run_and_ends_with_its_saved_record(runs):
    trainers = Trainers(worker=FakeWorker)
    base = Path("checkpoints/cnn.safetensors")
    ex = examples.empty()
    for label in ("7", "1"):
        ex = examples.add(ex, torch.rand(28, 28).numpy(), label, CLASS_NAMES["mnist"])
    views = list(trainers.teach(base, ex, "A"))
    assert views[1]["status"].startswith(f"Teaching cnn your {len(ex)} examples")
    assert any("your examples read right" in v["status"] for v in views)  # what val_acc means when teaching
    [(seen_base, out)] = trainers.worker("auto").calls
    assert seen_base == base and out == runs / f"cnn{api.TAUGHT_SUFFIX}.safetensors"
    assert views[-1]["saved"]["path"] == str(out)


def test_teaching_refuses_bad_examples_before_it_waits_for_the_trainer(runs):
    trainers = Trainers(worker=FakeWorker)
    one_digit = examples.add(examples.empty(), torch.rand(28, 28).numpy(), "7", CLASS_NAMES["mnist"])
    for ex in (examples.empty(), one_digit):
        with pytest.raises(examples.ExamplesError):
            next(trainers.teach(Path("checkpoints/cnn.safetensors"), ex, "A"))
    assert trainers.worker("auto").calls == []


def test_runs_and_teaching_tell_their_progress(runs):
    trainers, cfg, heard = Trainers(worker=FakeWorker), _cfg(), []
    list(trainers.run(cfg, "A", progress=heard.append))
    total = cfg.epochs * STEPS_PER_EPOCH
    assert [(r["step"], r["steps"]) for r in heard] == [(step, total) for step in range(1, total + 1)]
    heard.clear()
    ex = examples.empty()
    for label in ("7", "1"):
        ex = examples.add(ex, torch.rand(28, 28).numpy(), label, CLASS_NAMES["mnist"])
    list(Trainers(worker=FakeWorker).teach(Path("checkpoints/cnn.safetensors"), ex, "A", progress=heard.append))
    assert [r["step"] for r in heard] == list(range(1, FinetuneConfig().epochs * STEPS_PER_EPOCH + 1))


class PlanningWorker(FakeWorker):
    """A training process that rehearsed these steps: its runs start with a plan record."""

    PLAN = {"kind": "plan", "step_s": 0.01, "fixed_s": 0.5}

    def _records(self, cfg, out, should_stop):
        yield self.PLAN
        yield from super()._records(cfg, out, should_stop)


def test_a_runs_plan_reaches_its_progress_and_no_view(runs):
    trainers, cfg, heard = Trainers(worker=PlanningWorker), _cfg(), []
    views = list(trainers.run(cfg, "A", progress=heard.append))
    assert heard[0] == PlanningWorker.PLAN and [r["kind"] for r in heard[1:]] == ["step"] * cfg.epochs * STEPS_PER_EPOCH
    plain = list(Trainers(worker=FakeWorker).run(cfg, "B"))
    assert [v["status"] for v in views] == [v["status"] for v in plain]  # the plan changed nothing shown


def test_each_devices_training_process_is_made_once_and_told_its_device():
    made = []
    trainers = Trainers(worker=lambda device: made.append(device) or FakeWorker(device))
    first = trainers.worker("cpu")
    assert trainers.worker("cpu") is first and made == [device_key("cpu")]
