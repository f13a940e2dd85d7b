"""Training in a child process: records stream back, errors keep their meaning, a fault ends only its own run."""

import io
import json

import pytest

from mnist_demo import train as train_module
from mnist_demo.train import ConfigError, TrainConfig
from mnist_demo.worker import Worker, serve

SMALL = dict(arch="logreg", epochs=2, subset=6000)


def test_worker_process_streams_records_and_saves(tmp_path):
    out = tmp_path / "w.safetensors"
    records = list(Worker().train(TrainConfig.for_arch(**SMALL), out=out))
    kinds = [r["kind"] for r in records]
    assert kinds[:2] == ["watch", "step"] and "epoch" in kinds and kinds[-1] == "saved"
    assert records[-1]["metrics"]["test_accuracy"] > 0.8 and out.is_file()


def test_user_errors_keep_their_type_across_the_process_boundary(tmp_path):
    worker = Worker()
    with pytest.raises(ConfigError, match="learning rate"):
        list(worker.train(TrainConfig.for_arch(**SMALL, lr=-1.0), out=tmp_path / "x.safetensors"))
    # The same process then trains the next job.
    pid = worker.pid
    assert list(worker.train(TrainConfig.for_arch(**SMALL), out=tmp_path / "y.safetensors"))[-1]["kind"] == "saved"
    assert worker.pid == pid


def test_closing_stops_the_run_and_keeps_the_best_model(tmp_path):
    out = tmp_path / "c.safetensors"
    records = Worker().train(TrainConfig.for_arch("logreg", epochs=30, subset=4000), out=out)
    assert next(r for r in records if r["kind"] == "epoch")["epoch"] == 1
    records.close()
    assert out.is_file()


def test_an_exception_in_a_training_step_is_reported_and_the_loop_goes_on(monkeypatch, tmp_path):
    def broken_augment(x, generator=None):
        raise RuntimeError("simulated fault in a training step")

    monkeypatch.setattr(train_module, "augment_batch", broken_augment)
    jobs = [{"config": TrainConfig.for_arch(**SMALL, augment=True).to_dict(), "out": str(tmp_path / "a.safetensors")},
            {"config": TrainConfig.for_arch(**SMALL).to_dict(), "out": str(tmp_path / "b.safetensors")}]
    stdout = io.StringIO()
    serve(io.StringIO("".join(json.dumps(j) + "\n" for j in jobs)), stdout)
    records = [json.loads(line) for line in stdout.getvalue().splitlines()]
    ends = [r for r in records if r["kind"] in ("error", "end")]
    assert ends == [{"kind": "error", "type": "RuntimeError", "message": "simulated fault in a training step"},
                    {"kind": "end"}]
    assert not (tmp_path / "a.safetensors").exists() and (tmp_path / "b.safetensors").is_file()


def test_named_datasets_are_loaded_once_per_process_and_csv_files_every_time(monkeypatch, tmp_path):
    from mnist_demo import worker as worker_module

    loads = []
    monkeypatch.setattr(worker_module, "load_dataset", lambda name: loads.append(name) or object())
    cache: dict = {}
    first = worker_module.dataset_for(worker_module.WARM_DATASET, cache)
    assert worker_module.dataset_for(worker_module.WARM_DATASET, cache) is first
    csv = str(tmp_path / "digits.csv")
    worker_module.dataset_for(csv, cache)
    worker_module.dataset_for(csv, cache)  # a CSV may have been replaced by a new upload of the same name
    assert loads == [worker_module.WARM_DATASET, csv, csv]


def test_a_job_of_the_rehearsed_recipe_starts_with_its_plan(tmp_path):
    jobs = [{"config": TrainConfig.for_arch(subset=2000).to_dict(), "out": str(tmp_path / "a.safetensors")},
            {"config": TrainConfig.for_arch(**SMALL).to_dict(), "out": str(tmp_path / "b.safetensors")}]
    stdout = io.StringIO()
    serve(io.StringIO("".join(json.dumps(j) + "\n" for j in jobs)), stdout)
    records = [json.loads(line) for line in stdout.getvalue().splitlines()]
    second = records.index({"kind": "end"}) + 1
    assert records[0]["kind"] == "plan" and records[0]["step_s"] > 0  # the default recipe, on fewer images
    assert records[second]["kind"] != "plan" and records[-1] == {"kind": "end"}  # another architecture


def test_a_failed_rehearsal_leaves_the_jobs_working(monkeypatch, tmp_path, caplog):
    from mnist_demo import worker as worker_module

    def broken_rehearsal(dataset):
        raise RuntimeError("simulated fault in the rehearsal")

    monkeypatch.setattr(worker_module, "rehearse", broken_rehearsal)
    job = {"config": TrainConfig.for_arch(subset=2000).to_dict(), "out": str(tmp_path / "a.safetensors")}
    stdout = io.StringIO()
    serve(io.StringIO(json.dumps(job) + "\n"), stdout)
    records = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert "plan" not in [r["kind"] for r in records] and records[-2]["kind"] == "saved"  # no time, same run
    assert "could not rehearse" in caplog.text


def test_a_training_process_rehearses_on_its_own_device(tmp_path):
    job = {"config": TrainConfig.for_arch(device="cpu", subset=2000).to_dict(), "out": str(tmp_path / "a.safetensors")}
    stdout = io.StringIO()
    serve(io.StringIO(json.dumps(job) + "\n"), stdout, device="cpu")  # on a GPU machine too: a CPU run's own pace
    assert json.loads(stdout.getvalue().splitlines()[0])["kind"] == "plan"
