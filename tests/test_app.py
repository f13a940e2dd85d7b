"""The web app through its API (gradio_client against a server on a free port): classify, train, stop, models."""

import io
import json
import os
import signal
import struct
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import Status
from PIL import Image, ImageDraw

import app
from mnist_demo import examples, figures
from mnist_demo.live_run import PLOT_POINTS
from mnist_demo.preprocess import prepare, unpack
from mnist_demo.train import TrainConfig

# The first MNIST test digits (7, 2, 1, 0, 4) and a few more with other labels: every bundled model gets them right.
DIGITS = [0, 1, 2, 3, 4, 8, 11, 18, 61]
LOGREG = dict(arch="logreg", epochs=1, device="cpu")  # ~1 s per epoch on 2 CPU cores: keeps the suite fast
LONG = app.trainers.limits.max_epochs  # a run that goes on until it is stopped


def sketch_layer(digit: np.ndarray, path: Path, top: int = 20, left: int = 120) -> Path:
    """An MNIST digit as a Sketchpad stroke layer: 280×280, transparent paper, black ink, away from the centre."""
    ink = np.asarray(Image.fromarray(digit).resize((140, 140), Image.Resampling.BILINEAR))
    rgba = np.zeros((280, 280, 4), np.uint8)
    rgba[top:top + 140, left:left + 140, 3] = ink
    Image.fromarray(rgba).save(path)
    return path


def sketch_value(layer: Path) -> dict:
    return {"background": None, "layers": [handle_file(str(layer))], "composite": None, "id": None}


def wait_for(job, predicate, timeout: float = 60.0):
    """Poll a streaming job until one of its updates satisfies `predicate`; return that update."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for out in job.outputs():
            if predicate(out):
                return out
        if job.done():
            break
        time.sleep(0.05)
    raise AssertionError(f"no matching update; last status {job.status().code}, outputs {job.outputs()[-1:]}")


def listed(client) -> list[str]:
    """The models this client's visitor can use, by key (the Models table adds whose each one is)."""
    return [row[0].split(" (")[0] for row in client.predict(api_name="/models")["data"]]


def saved_file(runs: Path, summary: dict) -> Path:
    """Where a run's checkpoint went: in its visitor's own folder under the runs folder."""
    found = list(runs.rglob(summary["checkpoint"]))
    assert len(found) == 1, found
    return found[0]


def status_of(out) -> str:
    return out[1] or ""


def summary_of(out) -> dict:
    return out[5] or {}


def test_named_endpoints(client):
    api_info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/classify", "/draw", "/train", "/sanity_check", "/stop", "/models", "/upload_checkpoint", "/correct",
            "/teach"} <= set(api_info)
    assert [p["parameter_name"] for p in api_info["/teach"]["parameters"]] == ["model", "name"]
    params = {p["parameter_name"]: p for p in api_info["/train"]["parameters"]}
    assert list(params)[:3] == ["dataset", "csv_file", "arch"]
    for name in app.RECIPE_FIELDS[:-1]:  # left out, a setting means "the architecture's recipe"
        assert params[name]["parameter_has_default"] and params[name]["parameter_default"] is None, name


@pytest.mark.parametrize("index", DIGITS)
def test_off_centre_sketch_layer_is_classified(client, mnist, tmp_path, index):
    digit, label = mnist.test.images[index].numpy(), str(int(mnist.test.labels[index]))
    layer = sketch_layer(digit, tmp_path / "layer.png", top=10 + 12 * (index % 8), left=15 + 14 * (index % 9))
    probs, verdict, seen, saliency, compare = client.predict(sketch_value(layer), api_name="/draw")
    assert probs["label"] == label, verdict
    assert {c["label"] for c in probs["confidences"]} == set("0123456789")
    assert seen and saliency  # the 28×28 model input and the saliency overlay are images
    assert len(compare["data"]) >= 2 and any(row[0].startswith("▶") and row[1] == label for row in compare["data"])
    assert client.predict(handle_file(str(layer)), api_name="/classify")["label"] == label


def test_draw_shows_the_model_input_pixel_for_pixel(client, mnist, tmp_path):
    layer = sketch_layer(mnist.test.images[3].numpy(), tmp_path / "layer.png")
    _, _, seen, *_ = client.predict(sketch_value(layer), api_name="/draw")
    shown = np.asarray(Image.open(io.BytesIO(httpx.get(seen["url"]).content)))
    digit = prepare({"layers": [np.asarray(Image.open(layer))]}).digit
    assert np.array_equal(shown, figures.digit_image(digit))  # a lossy format would blur it


def test_blank_inputs_give_empty_results(client, tmp_path):
    probs, verdict, seen, *_ = client.predict(None, api_name="/draw")
    assert not probs and "blank" in verdict and seen is None
    empty = tmp_path / "empty.png"
    Image.new("RGBA", (280, 280), (0, 0, 0, 0)).save(empty)
    probs, verdict, *_ = client.predict(sketch_value(empty), api_name="/draw")
    assert not probs and "blank" in verdict
    assert not client.predict(handle_file(str(empty)), api_name="/classify")


def _png_with_size(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims a huge size: the decoder must refuse it, not allocate it."""
    Image.new("L", (1, 1)).save(path)
    blob = bytearray(path.read_bytes())
    ihdr = blob[12:29]  # chunk type + data
    ihdr[4:12] = struct.pack(">II", width, height)
    blob[12:29] = ihdr
    blob[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path.write_bytes(bytes(blob))
    return path


def test_hostile_images_get_a_clear_message(client, mnist, tmp_path):
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not an image")
    good = sketch_layer(mnist.test.images[0].numpy(), tmp_path / "good.png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:120])
    huge = _png_with_size(tmp_path / "huge.png", 40_000, 40_000)
    for bad, words in ((not_image, "not an image"), (truncated, "damaged"), (huge, "too large")):
        with pytest.raises(AppError, match=words) as caught:
            client.predict(handle_file(str(bad)), api_name="/classify")
        assert "Error" not in str(caught.value) and "/" not in str(caught.value)  # plain words, no server path
    # The server keeps serving, and a big but genuine photo (a JPEG of 81 megapixels of paper, one stroke) is fine:
    # it decodes at an eighth of its size. The same picture as a PNG would decode whole, so it is refused.
    assert client.predict(handle_file(str(good)), api_name="/classify")["label"] == "7"
    big = Image.new("L", (9000, 9000), 255)
    ImageDraw.Draw(big).line([(4500, 1500), (4500, 7500)], fill=0, width=600)
    big.save(tmp_path / "big.jpg", quality=90)
    assert client.predict(handle_file(str(tmp_path / "big.jpg")), api_name="/classify")["label"] == "1"
    big.save(tmp_path / "big.png")
    with pytest.raises(AppError, match="too large"):
        client.predict(handle_file(str(tmp_path / "big.png")), api_name="/classify")


def test_train_streams_and_saves_a_selectable_model(client, app_env, mnist, tmp_path):
    job = client.submit(**LOGREG, api_name="/train")
    outputs = list(job)
    assert job.status().code == Status.FINISHED
    assert len(outputs) >= 2 and any("epoch 1/1" in status_of(o) for o in outputs[:-1])
    loss_curve = [o[2] for o in outputs if o[2] and o[2]["data"]]
    assert loss_curve and len(loss_curve[-1]["data"]) <= PLOT_POINTS
    summary = summary_of(outputs[-1])
    assert summary["test_accuracy"] >= 0.85 and summary["epochs_completed"] == 1 and not summary["stopped_early"]
    assert saved_file(app_env, summary).is_file()
    assert "test accuracy" in status_of(outputs[-1])
    # The new model is listed and usable at once, without a reload.
    assert summary["model"] in listed(client)
    layer = sketch_layer(mnist.test.images[1].numpy(), tmp_path / "two.png")
    assert client.predict(handle_file(str(layer)), summary["model"], api_name="/classify")["label"] == "2"
    probs, *_ = client.predict(sketch_value(layer), summary["model"], api_name="/draw")
    assert probs["label"] == "2"


def test_stop_keeps_the_best_model_so_far(client, app_url, app_env):
    from gradio_client import Client

    job = client.submit(arch="logreg", epochs=LONG, device="cpu", api_name="/train")
    wait_for(job, lambda o: f"epoch 1/{LONG} done" in status_of(o))
    # Another visitor's Stop ends nothing of this session's run.
    other = Client(app_url, verbose=False, download_files=False)
    assert other.predict(api_name="/stop") == "Nothing to stop."
    other.close()
    wait_for(job, lambda o: f"epoch 2/{LONG}" in status_of(o))
    stopped_at = time.monotonic()
    assert "Stopping" in client.predict(api_name="/stop")
    final = job.result()
    assert time.monotonic() - stopped_at < 10
    summary = summary_of(final)
    assert summary["stopped_early"] and 1 <= summary["epochs_completed"] < LONG
    assert summary["test_accuracy"] > 0.85 and saved_file(app_env, summary).is_file()
    assert client.predict(api_name="/stop") == "Nothing to stop."


def test_cancel_stops_training_and_server_still_classifies(client, app_url, mnist, tmp_path):
    from gradio_client import Client

    job = client.submit(arch="logreg", epochs=LONG, device="cpu", api_name="/train")
    wait_for(job, lambda o: "epoch 1/" in status_of(o))
    job.cancel()
    deadline = time.monotonic() + 15
    while not job.done() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.done() and job.status().code == Status.CANCELLED
    layer = sketch_layer(mnist.test.images[2].numpy(), tmp_path / "one.png")
    assert client.predict(handle_file(str(layer)), api_name="/classify")["label"] == "1"
    # The trainer is free again: a new run from another session starts and finishes promptly.
    other = Client(app_url, verbose=False, download_files=False)
    start = time.monotonic()
    out = other.predict(**LOGREG, subset=5000, api_name="/train")
    assert summary_of(out)["epochs_completed"] == 1 and time.monotonic() - start < 30
    other.close()


def test_second_run_waits_in_queue_while_classifying_stays_free(app_url, mnist, tmp_path):
    from gradio_client import Client

    a, b = (Client(app_url, verbose=False, download_files=False) for _ in range(2))
    first = a.submit(arch="logreg", epochs=LONG, device="cpu", api_name="/train")
    wait_for(first, lambda o: f"epoch 1/{LONG}" in status_of(o))
    second = b.submit(**LOGREG, api_name="/train")
    deadline = time.monotonic() + 10
    while second.status().code != Status.IN_QUEUE and time.monotonic() < deadline:
        time.sleep(0.05)
    status = second.status()
    assert status.code == Status.IN_QUEUE and status.rank == 0 and status.queue_size >= 1
    layer = sketch_layer(mnist.test.images[3].numpy(), tmp_path / "zero.png")
    started = time.monotonic()
    assert b.predict(handle_file(str(layer)), api_name="/classify")["label"] == "0"
    assert time.monotonic() - started < 5 and not first.done()
    second.cancel()
    a.predict(api_name="/stop")
    assert summary_of(first.result())["stopped_early"]
    a.close()
    b.close()


def test_sanity_check_reports_pass_and_saves_nothing(client, app_env):
    before = set(app_env.glob("*.safetensors"))
    out = client.predict(arch="logreg", api_name="/sanity_check")
    assert summary_of(out)["sanity_check"] == "passed", status_of(out)
    assert "PASSED" in status_of(out)
    assert set(app_env.glob("*.safetensors")) == before


def test_bad_settings_get_a_clear_message(client):
    with pytest.raises(AppError, match="learning rate"):
        client.predict(arch="logreg", lr=-1, api_name="/train")
    with pytest.raises(AppError, match="CSV"):
        client.predict(dataset="csv", arch="logreg", api_name="/train")


def test_train_on_csv_upload(client, mnist, tmp_path):
    images, labels = mnist.train.images[:600].reshape(600, -1).numpy(), mnist.train.labels[:600].numpy()
    header = "label," + ",".join(f"pixel{i}" for i in range(784))
    rows = [f"{y}," + ",".join(map(str, x)) for x, y in zip(images, labels)]
    good = tmp_path / "train.csv"
    good.write_text("\n".join([header, *rows]))
    out = client.predict(dataset="csv", csv_file=handle_file(str(good)), arch="logreg", epochs=3, api_name="/train")
    assert summary_of(out)["test_accuracy"] > 0.5
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([header, rows[0], rows[1].replace(",0,", ",oops,", 1)]))
    with pytest.raises(AppError, match=r"row 2, column 'pixel\d+'"):
        client.predict(dataset="csv", csv_file=handle_file(str(bad)), arch="logreg", api_name="/train")


def test_upload_checkpoint_refuses_anything_but_valid_safetensors(client, app_env, tmp_path):
    pickle_file = tmp_path / "model.pt"
    pickle_file.write_bytes(b"\x80\x04not really a pickle")
    message, *_ = client.predict(handle_file(str(pickle_file)), api_name="/upload_checkpoint")
    assert "Refused" in message and ".safetensors" in message
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    message, *_ = client.predict(handle_file(str(garbage)), api_name="/upload_checkpoint")
    assert "Refused" in message
    bundled = next(e for e in app.catalogue.entries() if e.bundled)
    good = tmp_path / "my model.safetensors"
    good.write_bytes(bundled.path.read_bytes())
    first, table, *_ = client.predict(handle_file(str(good)), api_name="/upload_checkpoint")
    second, *_ = client.predict(handle_file(str(good)), api_name="/upload_checkpoint")
    assert "my-model" in first and "my-model-2" in second  # never overwrites an existing model
    assert next(app_env.rglob("my-model.safetensors")).read_bytes() == bundled.path.read_bytes()
    assert "my-model" in listed(client)


def test_ui_handlers_turn_bad_uploads_into_messages(app_url, tmp_path):
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not an image")
    shown = app.on_upload({"path": str(not_image)}, None)
    assert shown[app.ui["probs"]] is None and shown[app.ui["seen"]] is None
    assert "not an image" in shown[app.ui["verdict"]] and shown[app.ui["upload"]] is None  # the broken thumbnail goes
    assert "blank" in app.on_upload(None, None)[app.ui["verdict"]]


def stroke_pngs(mnist, index: int = 0) -> dict:
    """Test digit `index` as the page sends a stroke: the sketchpad's layer (ink in its alpha) and composite."""
    ink = mnist.test.images[index].numpy().repeat(10, 0).repeat(10, 1)
    pngs = {}
    for name, image in (("layer", Image.fromarray(np.dstack([np.zeros((*ink.shape, 3), np.uint8), ink]), "RGBA")),
                        ("composite", Image.fromarray(255 - ink, "L"))):
        buf = io.BytesIO()
        image.save(buf, "PNG")
        pngs[name] = (f"{name}.png", buf.getvalue(), "image/png")
    return pngs


def test_a_stroke_answers_first_and_the_slower_views_only_while_shown(app_url, mnist):
    import gradio as gr

    label = str(int(mnist.test.labels[0]))
    # The page posts a stroke's images to the answer's own route: the bars, verdict, picture and kept drawing.
    response = httpx.post(app_url.rstrip("/") + app.STROKE_PATH, files=stroke_pngs(mnist), data={"model": ""})
    probs, verdict, seen, drawing = response.json()
    assert len(response.json()) == len(app.ANSWER)  # no slower view: the bars never wait for one
    assert probs["label"] == label and len(probs["confidences"]) == len(app.DIGITS)
    assert f"It's a **{label}**" in verdict and seen.startswith("<img")
    # The kept drawing is the 28×28 the model read: every later view and correction reads the same pixels.
    assert unpack(drawing).digit.shape == (28, 28) and drawing["source"] == app.DRAWING
    # The slower views come from a route of their own: the saliency always; the others only while shown.
    views = app_url.rstrip("/") + app.VIEWS_PATH
    saliency, compare, inside = httpx.post(views, json={"drawing": drawing, "model": None}).json()
    assert saliency.startswith("<img") and compare == inside == gr.skip()
    saliency, compare, inside = httpx.post(views, json={"drawing": drawing, "compare": True, "inside": True}).json()
    assert len(compare["data"]) == len(app.catalogue.entries()) and "<img" in inside
    for bad in (b"not json", b'{"drawing": {"pixels": "AAAA"}}', b"[1]"):  # nothing to show, said in no error
        assert httpx.post(views, content=bad).json()[0] is None


@pytest.mark.parametrize("case", ["no images", "not an image", "too large", "not a form", "no length"])
def test_a_bad_stroke_request_gets_a_plain_verdict(app_url, case):
    url = app_url.rstrip("/") + app.STROKE_PATH
    send = {"no images": dict(data={"model": ""}),
            "not an image": dict(files={"layer": ("layer.png", b"no picture here", "image/png")}),
            "too large": dict(files={"layer": ("layer.png", bytes(app.STROKE_MAX_BYTES + 1), "image/png")}),
            "not a form": dict(content=b"{}", headers={"content-type": "application/json"}),
            "no length": dict(content=iter([b"--x--"]), headers={"content-type": "multipart/form-data; boundary=x"})}
    response = httpx.post(url, **send[case])
    assert response.status_code == 200
    probs, verdict, seen, _ = response.json()
    assert not probs and seen is None and verdict and "Error" not in verdict and "/" not in verdict
    assert httpx.get(app_url).status_code == 200  # still serving


def test_a_kept_drawing_from_the_page_is_checked(app_url, mnist):
    blank = app.on_model_change(None, None)
    assert "blank" in blank[app.ui["verdict"]]
    damaged = app.on_model_change({"pixels": "AAAA", "message": "", "source": "x"}, None)
    assert "damaged" in damaged[app.ui["verdict"]] and damaged[app.ui["probs"]] is None
    assert "damaged" in app.keep_example({"pixels": 5}, "3", examples.empty())[app.ui["teach_status"]]


def test_the_sketchpad_keeps_no_strokes_images_whatever_a_request_says(app_url):
    """Gradio's sketchpad would keep every stroke's images sent ahead (the page never sends them) and allocate a
    list as long as the layer index a request names: a billion is gigabytes."""
    sketch = app.ui["sketch"]
    for index in ("0", "1000000000"):
        response = httpx.post(app_url.rstrip("/") + "/gradio_api/component_server", data={
            "session_hash": "hostile", "component_id": str(sketch._id), "fn_name": "accept_blobs",
            "data": json.dumps({"type": "layer", "index": index, "id": "x"})},
            files={"files": ("l.png", b"\x89PNG", "image/png")})
        assert response.status_code < 500
    assert not getattr(sketch, "blob_storage", {})


@pytest.mark.parametrize("device", ["cpu", "cuda", "auto"])
def test_the_train_tab_fills_in_the_recipe_of_the_chosen_device(app_url, monkeypatch, device):
    # CUDA faked as available, so that "auto" must switch to the GPU recipe on any machine.
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    shown = app.fill_recipe("cnn", device)
    expected = TrainConfig.for_arch("cnn", device=device)
    assert {name: shown[app.ui[name]] for name in app.RECIPE_FIELDS} == {
        name: getattr(expected, name) for name in app.RECIPE_FIELDS}
    assert str(figures.smoothing_floor(expected.label_smoothing))[:4] in shown[app.ui["smoothing"]]


def test_a_crashed_training_process_fails_only_that_run(client, mnist, tmp_path):
    # The worst fault a training step can have: its process dies (out of memory, a segfault). Simulated with SIGKILL.
    job = client.submit(arch="cnn", epochs=3, device="cpu", api_name="/train")
    wait_for(job, lambda o: "epoch 1/3," in status_of(o))
    os.kill(app.trainers.worker("cpu").pid, signal.SIGKILL)
    with pytest.raises(AppError, match="the training process stopped unexpectedly") as caught:
        job.result(timeout=60)
    assert "Error" not in str(caught.value)  # plain words
    # The server, the trainer lock and classification are all fine afterwards; a new process trains the next run.
    out = client.predict(**LOGREG, subset=2000, api_name="/train")
    assert summary_of(out)["epochs_completed"] == 1
    layer = sketch_layer(mnist.test.images[0].numpy(), tmp_path / "seven.png")
    assert client.predict(handle_file(str(layer)), api_name="/classify")["label"] == "7"


def test_divergence_is_reported_and_saves_nothing(client, app_env):
    before = set(app_env.glob("*.safetensors"))
    with pytest.raises(AppError, match="diverged"):
        client.predict(arch="mlp-128-64", optimizer="sgd", lr=1000, epochs=1, subset=3000, api_name="/train")
    assert set(app_env.glob("*.safetensors")) == before


def test_uploads_are_size_limited(client, app_url, app_env, tmp_path):
    big = tmp_path / "big.safetensors"
    with open(big, "wb") as f:
        f.truncate(30 * 2**20)  # over the app's 25 MB upload limit
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # the client checks first ...
        client.predict(handle_file(str(big)), api_name="/upload_checkpoint")
    with open(big, "rb") as f:  # ... and the server refuses it anyway
        response = httpx.post(f"{app_url}gradio_api/upload", files={"files": (big.name, f)}, timeout=60)
    assert response.status_code == 413
    assert not list(app_env.glob("big*.safetensors"))


def test_correct_then_teach_through_the_api(app_url, app_env, mnist, tmp_path):
    from gradio_client import Client

    client = Client(app_url, verbose=False, download_files=False)  # its own session: its own examples
    with pytest.raises(AppError, match="no examples"):
        client.predict(model="logreg", name="", api_name="/teach")
    files = []
    for i in (0, 1):  # a 7 and a 2
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(mnist.test.images[i].numpy()).save(path)
        files.append((handle_file(str(path)), str(int(mnist.test.labels[i]))))
    with pytest.raises(AppError, match="one of 0–9"):
        client.predict(files[0][0], "seven", api_name="/correct")
    for n, (image, label) in enumerate(files, 1):
        assert client.predict(image, label, api_name="/correct").startswith(f"{n} example")
    outputs = client.predict(model="logreg", name="", api_name="/teach")
    assert any(isinstance(o, str) and "Taught **logreg+you**" in o for o in outputs), outputs
    assert next(app_env.rglob("logreg+you.safetensors")).exists()
    for image, label in files:  # the taught model answers like any other
        assert client.predict(image, "logreg+you", api_name="/classify")["label"] == label
