"""A hostile or careless visitor, through the HTTP API and the page's own routes: they get a plain message, and the
app keeps serving everyone else; nothing they make reaches another visitor; nothing they send costs much memory."""

import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError, ValidationError
from PIL import Image
from safetensors.torch import save as safetensors_save

import app
from mnist_demo.checkpoint import load_checkpoint, save_checkpoint
from mnist_demo.data import NORMALISATION
from mnist_demo.models import create_model
from mnist_demo.preprocess import MAX_PIXELS
from mnist_demo.visitors import VISITORS

PEAK_MB = 300  # what one request may add to the server's peak memory (the "a few hundred MB")


@pytest.fixture
def visitor(app_url):
    """A stranger with a session of their own; more of them at once through `visitor()` calls."""
    made = []

    def new() -> Client:
        made.append(Client(app_url, verbose=False, download_files=False))
        return made[-1]

    yield new
    for c in made:
        c.close()


def digit_png(mnist, path: Path, index: int = 0) -> Path:
    Image.fromarray(mnist.test.images[index].numpy()).save(path)
    return path


def still_serves(client: Client, mnist, tmp_path: Path, app_url: str) -> None:
    """Another visitor draws and the page loads, as if nothing had happened."""
    label = str(int(mnist.test.labels[1]))
    assert client.predict(handle_file(str(digit_png(mnist, tmp_path / "ok.png", 1))), api_name="/classify")[
        "label"] == label
    assert httpx.get(app_url).status_code == 200
    assert client.predict(api_name="/models")["data"]


def own_checkpoint(path: Path, seed: int = 1) -> Path:
    """A model of a visitor's own: weights no bundled model has."""
    torch.manual_seed(seed)
    return save_checkpoint(create_model("logreg"), path, arch="logreg", dataset="mnist",
                           normalisation=NORMALISATION["mnist"], metrics={"test_accuracy": 0.5})


def stranger_checkpoint(path: Path, **change) -> Path:
    """A real bundled model's weights with metadata a stranger wrote (values as JSON, as our files hold them)."""
    good = load_checkpoint(Path("checkpoints/logreg.safetensors"))
    meta = {k: json.dumps(v) for k, v in {**good.meta, **change}.items()}
    path.write_bytes(safetensors_save(good.model.state_dict(), metadata=meta))
    return path


def wait_for_status(job, words: str) -> None:
    for out in job:
        if words in (out[1] or ""):
            return
    raise AssertionError(f"the run ended before {words!r}: {job.outputs()[-1:]}")


class PeakMemory:
    """How much the server's peak resident memory grew during a block (the server runs in this test process);
    Linux resets the peak when told to (clear_refs 5)."""

    def __enter__(self):
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pytest.skip("this system cannot reset a process's peak memory")
        self.before = self._read("VmRSS")
        return self

    def __exit__(self, *exc):
        self.grew_mb = (self._read("VmHWM") - self.before) / 1024

    @staticmethod
    def _read(field: str) -> int:
        status = Path("/proc/self/status").read_text()
        return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1))


@pytest.mark.parametrize("change, field", [({"created": 5}, "created"),
                                           ({"metrics": {"test_accuracy": "99%"}}, "test_accuracy"),
                                           ({"params": "many"}, "params"),
                                           ({"classes": ["0"]}, "classes")])
def test_a_malformed_checkpoint_is_refused_and_breaks_nothing(visitor, app_url, app_env, mnist, tmp_path, change,
                                                               field):
    attacker, other = visitor(), visitor()
    bad = stranger_checkpoint(tmp_path / "evil.safetensors", **change)
    message, *_ = attacker.predict(handle_file(str(bad)), api_name="/upload_checkpoint")
    assert "Refused" in message and field in message
    # The same file dropped into the server's folders (a restart on a runs folder holding one) is skipped, logged.
    planted = [app_env / "planted.safetensors", app_env / VISITORS / "0123456789abcdef0123" / "planted.safetensors"]
    for path in planted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bad.read_bytes())
    try:
        still_serves(other, mnist, tmp_path, app_url)
        assert "planted" not in str(other.predict(api_name="/models"))
        assert app.catalogue.default_key() == "cnn"  # what a fresh server's first page load asks
    finally:
        for path in planted:
            path.unlink()


def bomb(path: Path) -> Path:
    """A 1-bit PNG one pixel wider than the limit's square: ~15 KB on disk, gigabytes if it were decoded."""
    side = int(MAX_PIXELS ** 0.5) * 3
    Image.new("1", (side, side)).save(path, optimize=True)
    return path


def test_an_image_bomb_is_refused_on_every_path_without_costing_memory(visitor, app_url, mnist, tmp_path):
    attacker, other = visitor(), visitor()
    png = bomb(tmp_path / "bomb.png")
    assert png.stat().st_size < 100_000
    sketch = {"background": None, "layers": [handle_file(str(png))], "composite": handle_file(str(png)), "id": None}
    paths = {
        "/classify": lambda: attacker.predict(handle_file(str(png)), api_name="/classify"),
        "/correct": lambda: attacker.predict(handle_file(str(png)), "3", api_name="/correct"),
        "/draw": lambda: attacker.predict(sketch, api_name="/draw")[1],
        "stroke route": lambda: httpx.post(app_url.rstrip("/") + app.STROKE_PATH, data={"model": ""},
                                           files={k: ("b.png", png.read_bytes(), "image/png")
                                                  for k in ("layer", "composite")}).json()[1],
    }
    for name, call in paths.items():
        with PeakMemory() as peak:
            try:
                said = call()
            except AppError as exc:
                said = str(exc)
        assert "too large" in said, name
        assert peak.grew_mb < PEAK_MB, f"{name}: +{peak.grew_mb:.0f} MB"
    still_serves(other, mnist, tmp_path, app_url)


def test_a_csv_with_a_huge_header_is_refused_before_parsing(visitor, app_url, mnist, tmp_path):
    attacker, other = visitor(), visitor()
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(["label"] + [f"p{i}" for i in range(300_000)]) + "\n" + ",".join(["0"] * 300_001))
    with pytest.raises(AppError, match="header"):
        attacker.predict(dataset="csv", csv_file=handle_file(str(wide)), arch="logreg", api_name="/train")
    said = app.upload_examples({"path": str(wide)}, app.examples.empty())[app.ui["teach_status"]]
    assert "header" in said and "⚠️" in said
    still_serves(other, mnist, tmp_path, app_url)


def test_one_visitor_queues_one_training_and_never_holds_up_another(visitor, app_url, mnist, tmp_path):
    attacker, other = visitor(), visitor()
    long_run = attacker.submit(arch="logreg", epochs=app.trainers.limits.max_epochs, device="cpu", api_name="/train")
    wait_for_status(long_run, "epoch 1/")
    refused = 0
    for _ in range(70):
        try:
            attacker.submit(arch="logreg", epochs=1, device="cpu", api_name="/train").result()
        except ValidationError as exc:
            assert app.ONE_RUN_EACH in str(exc)
            refused += 1
    assert refused == 70
    with pytest.raises(ValidationError, match="waiting or going"):
        attacker.predict(model="logreg", name="", api_name="/teach")
    still_serves(other, mnist, tmp_path, app_url)
    attacker.predict(api_name="/stop")
    long_run.result()


def test_two_visitors_never_see_each_others_models(visitor, app_url, app_env, mnist, tmp_path):
    alice, bob = visitor(), visitor()
    mine = own_checkpoint(tmp_path / "Mr-Smith-is-a-fool.safetensors")
    said, *_ = alice.predict(handle_file(str(mine)), api_name="/upload_checkpoint")
    key = re.search(r"\*\*(.+?)\*\*", said).group(1)
    image = handle_file(str(digit_png(mnist, tmp_path / "d.png")))
    assert alice.predict(image, key, api_name="/classify")["label"]
    assert key not in str(bob.predict(api_name="/models"))
    with pytest.raises(AppError, match="Unknown model"):
        bob.predict(image, key, api_name="/classify")
    assert "not one of your models" in bob.predict(key, api_name="/share")[0] or "Unknown" in bob.predict(
        key, api_name="/share")[0]
    # Alice shares it: Bob sees it under a name the app made, and Alice's words nowhere.
    said, table, _ = alice.predict(key, api_name="/share")
    shared = re.search(r"\*\*(.+?)\*\*", said).group(1)
    bobs = str(bob.predict(api_name="/models"))
    assert shared in bobs and "Smith" not in bobs and "Smith" not in shared
    assert bob.predict(image, shared, api_name="/classify")["label"]


def test_a_name_a_visitor_chooses_is_checked_on_every_path(visitor, mnist, tmp_path):
    client = visitor()
    image = handle_file(str(digit_png(mnist, tmp_path / "d.png")))
    for label in ("7", "2"):
        client.predict(image, label, api_name="/correct")
    for name, words in (("x" * 101, "invalid name"), ("cnn", "exists already"), ("../up", "invalid name")):
        with pytest.raises(AppError, match=words):
            client.predict(model="logreg", name=name, api_name="/teach")


def test_uploads_from_one_visitor_keep_at_most_the_quota_and_never_replace(visitor, app_env, tmp_path):
    client = visitor()
    source = tmp_path / "same.safetensors"
    source.write_bytes(Path("checkpoints/logreg.safetensors").read_bytes())
    # One after another: gradio_client's calls from several threads of one client were cancelled now and then (a
    # client-side race); uploads at once are tests/test_catalogue.py's, 24 of them.
    said = [client.predict(handle_file(str(source)), api_name="/upload_checkpoint")[0] for _ in range(150)]
    assert len(said) == 150 and all("Added" in s for s in said)  # never replacing anything: tests/test_catalogue.py
    names = {re.search(r"\*\*(.+?)\*\*", s).group(1) for s in said}
    folders = [f for f in (app_env / VISITORS).iterdir() if any(p.stem in names for p in f.iterdir())]
    assert len(folders) == 1 and len(list(folders[0].glob("*.safetensors"))) == app.catalogue.limits.visitor_models
    assert len([row for row in client.predict(api_name="/models")["data"] if "(yours)" in row[0]]) == len(
        list(folders[0].glob("*.safetensors")))


@pytest.fixture
def server_with_login(app_env, tmp_path):
    """`python app.py` with MNIST_DEMO_AUTH set, in a process of its own (a second demo in this process would rewire
    the first's handlers)."""
    from conftest import _free_port

    port = _free_port()
    env = {**os.environ, app.AUTH_ENV: "teacher:s3cret-class", "GRADIO_SERVER_PORT": str(port),
           "MNIST_DEMO_RUNS": str(tmp_path / "runs")}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=Path(app.__file__).parent, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):  # it serves once it answers, if only to say that a login is needed
            try:
                httpx.get(root + "/gradio_api/info", timeout=2)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, "app.py ended"
                time.sleep(0.5)
        yield root
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_with_a_login_no_route_answers_data_without_it(server_with_login):
    root = server_with_login
    png = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(png, "PNG")
    with httpx.Client() as anonymous:
        assert anonymous.get(root + "/config").status_code == 401
        assert anonymous.post(root + app.STROKE_PATH, files={"layer": ("l.png", png.getvalue())}).status_code == 401
        assert anonymous.post(root + app.VIEWS_PATH, json={"drawing": None}).status_code == 401
        assert anonymous.post(root + "/gradio_api/queue/join", json={"fn_index": 0}).status_code == 401
        assert anonymous.get(root + "/gradio_api/info").status_code == 401
        upload = anonymous.post(root + "/gradio_api/upload", files={"files": ("x.png", png.getvalue())})
        assert upload.status_code == 401
        bundled = app.catalogue.shipped_dir / "logreg.safetensors"
        assert anonymous.get(f"{root}/gradio_api/file={bundled}").status_code in (401, 403)
    with httpx.Client() as logged:
        assert logged.post(root + "/login", data={"username": "teacher", "password": "s3cret-class"}).is_success
        assert logged.get(root + "/config").status_code == 200
        answer = logged.post(root + app.STROKE_PATH, files={"layer": ("l.png", png.getvalue())}, data={"model": ""})
        assert answer.status_code == 200 and len(answer.json()) == len(app.ANSWER)


def test_a_login_of_the_wrong_shape_stops_the_app_rather_than_opening_it(monkeypatch):
    for wrong in ("just-a-password", ":nouser", "user:"):
        monkeypatch.setenv(app.AUTH_ENV, wrong)
        with pytest.raises(SystemExit, match="user:password"):
            app.login()
    monkeypatch.delenv(app.AUTH_ENV)
    assert app.login() is None


def test_many_requests_for_the_slower_views_hold_up_no_one_else(app_url, mnist, monkeypatch):
    """Eight connections asking for the views at once, as one visitor: one is computed, the rest are told at once
    that there is nothing new, and another visitor's views come as usual."""
    from mnist_demo.preprocess import Prepared, pack

    drawing = pack(Prepared(mnist.test.images[0].numpy().astype(np.float32) / 255))
    asked = {"drawing": drawing, "model": "", "compare": True, "inside": True}
    views = app_url.rstrip("/") + app.VIEWS_PATH
    gate, real = threading.Event(), app.extras_view
    monkeypatch.setattr(app, "extras_view", lambda *a: gate.wait(60) and real(*a))  # the first one is slow
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(lambda: httpx.post(views, json=asked, timeout=90).json()) for _ in range(8)]
        deadline = time.monotonic() + 60  # a bound on a broken run, not a measurement
        while sum(f.done() for f in futures) < len(futures) - 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        gate.set()
        answers = [f.result() for f in futures]
    skipped = [a for a in answers if a[0] == {"__type__": "update"}]
    assert len(skipped) == len(answers) - 1
    other = httpx.post(views, json={**asked, "visitor": "0123456789abcdef0123"}, timeout=60).json()
    assert "<img" in other[0]


def test_a_visitors_models_go_when_gradio_deletes_their_session_state(visitor, app_env, tmp_path):
    client = visitor()
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(Path("checkpoints/logreg.safetensors").read_bytes())
    client.predict(handle_file(str(mine)), api_name="/upload_checkpoint")
    folder = next(f for f in (app_env / VISITORS).iterdir() if (f / "mine.safetensors").exists())
    app.ui["visitor_state"].delete_callback(folder.name)  # what Gradio calls when the session's state goes
    assert not folder.exists()
    assert "mine" not in str(client.predict(api_name="/models"))
