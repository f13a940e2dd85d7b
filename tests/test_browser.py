"""The web app's happy paths in a real browser (Playwright + Debian Chromium): draw, upload, train, browse models."""

import re
import time

import pytest
from ui import (
    ONE,
    SEVEN,
    browser_only,
    choose,
    draw,
    open_app,
    open_panel,
    screenshot,
    settle,
    top_digit,
    touch_draw,
    train_tab,
)

import app

pytestmark = [*browser_only, pytest.mark.usefixtures("runs")]  # a fresh run folder for the module


def test_draw_one_then_seven_without_touching_the_toolbar(page):
    from playwright.sync_api import expect

    # No click on "Brush" anywhere: the app selects it on load and after every clear.
    draw(page, ONE)
    expect(top_digit(page)).to_have_text("1", timeout=15000)
    expect(page.locator("#verdict")).to_contain_text("Your drawing: It's a 1")
    assert page.locator("#probs button.confidence-set").count() == 10
    page.locator("#sketch").get_by_label("Clear canvas").first.click()
    expect(page.locator("#verdict")).to_contain_text("blank", timeout=10000)
    draw(page, SEVEN)
    expect(top_digit(page)).to_have_text("7", timeout=15000)
    expect(page.locator("#seen img")).to_be_visible()
    expect(page.locator("#saliency img")).to_be_visible()
    open_panel(page, "compare-panel")
    expect(page.locator("#compare")).to_contain_text("▶")  # the selected model in the comparison
    # The verdict and the comparison print the selected model's confidence the same way.
    percent = re.search(r"\((\d+\.\d%) sure\)", page.locator("#verdict").inner_text()).group(1)
    expect(page.locator("#compare")).to_contain_text(percent)
    expect(page.locator("#sketch canvas").first).to_have_attribute("aria-label", re.compile("Drawing area"))
    settle(page)
    screenshot(page, "draw", full_page=True)


def test_a_stroke_is_two_requests_and_a_closed_comparison_waits_until_opened(page):
    from playwright.sync_api import expect

    draw(page, ONE)
    expect(top_digit(page)).to_have_text("1", timeout=15000)
    sent = []
    page.on("request", lambda r: sent.append(r.url))
    draw(page, SEVEN)  # the comparison is closed: not computed while hidden
    expect(top_digit(page)).to_have_text("7", timeout=15000)
    settle(page)
    # Gradio's own sketchpad event sent the canvas ahead (3 requests), uploaded it again (~12 more) and ran the
    # event; the page now posts the stroke's images once, to the answer's own route, then asks for the views.
    assert [len([u for u in sent if path in u]) for path in (app.STROKE_PATH, app.VIEWS_PATH)] == [1, 1], sent
    assert not [u for u in sent if "/gradio_api/" in u], sent
    open_panel(page, "compare-panel")
    # The selected model's row answers 7: computed on opening, for the drawing made while the panel was closed.
    expect(page.locator("#compare")).to_contain_text(re.compile(r"▶ \S+\s+7\s"), timeout=10000)


def test_model_switch_and_image_upload(page, mnist, tmp_path):
    from PIL import Image
    from playwright.sync_api import expect

    draw(page, SEVEN)
    expect(top_digit(page)).to_have_text("7", timeout=15000)
    open_panel(page, "compare-panel")
    page.locator("#model input").click()
    page.get_by_role("option", name=re.compile(r"^logreg \(")).click()
    # The same drawing is re-read by the newly picked model, without drawing again.
    expect(page.locator("#compare")).to_contain_text("▶ logreg", timeout=10000)
    expect(top_digit(page)).to_have_text("7")
    # An uploaded photo-like image (dark ink on light paper) goes through the same preprocessing.
    digit = 255 - mnist.test.images[1].numpy()  # a "2"
    Image.fromarray(digit).resize((200, 200)).save(tmp_path / "two.png")
    page.locator("#upload input[type=file]").set_input_files(str(tmp_path / "two.png"))
    expect(top_digit(page)).to_have_text("2", timeout=15000)
    expect(page.locator("#verdict")).to_contain_text("The uploaded image: It's a 2")
    # Drawing again is about the drawing: the uploaded picture leaves, so nothing on screen contradicts the verdict.
    draw(page, ONE)
    expect(page.locator("#verdict")).to_contain_text("Your drawing", timeout=15000)
    expect(page.locator("#upload img")).to_have_count(0)


def test_a_non_image_upload_gets_a_plain_message(page, tmp_path):
    from playwright.sync_api import expect

    (tmp_path / "notes.png").write_text("this is not an image")
    page.locator("#upload input[type=file]").set_input_files(str(tmp_path / "notes.png"))
    verdict = page.locator("#verdict")
    expect(verdict).to_contain_text("not an image", timeout=15000)
    assert "Error" not in verdict.inner_text() and "/" not in verdict.inner_text()  # no class name, no path
    expect(page.locator("#upload img")).to_have_count(0)  # no broken thumbnail left behind
    draw(page, SEVEN)  # and the tab goes on working
    expect(top_digit(page)).to_have_text("7", timeout=15000)


def test_touch_stroke_draws(page):
    from playwright.sync_api import expect

    touch_draw(page, ONE[0])
    expect(top_digit(page)).to_have_text("1", timeout=15000)


def test_train_small_run_shows_curves_and_accuracy(page):
    from playwright.sync_api import expect

    from mnist_demo.train import TrainConfig

    train_tab(page)
    expect(page.locator("#lr input")).to_have_value(str(TrainConfig.for_arch("cnn").lr))  # the recipe, on load
    choose(page, "arch", re.compile(r"^logreg"))
    expect(page.locator("#lr input")).to_have_value(str(TrainConfig.for_arch("logreg").lr))  # its own recipe
    choose(page, "device", re.compile("^cpu$"))
    choose(page, "arch", re.compile(r"^cnn —"))
    expect(page.locator("#lr input")).to_have_value(str(TrainConfig.for_arch("cnn", device="cpu").lr))
    expect(page.locator("#smoothing-note")).to_contain_text("cannot go below")  # the loss floor is explained
    page.locator("#epochs input").fill("2")
    page.locator("#subset input").fill("10000")  # ~10 s on two CPU cores
    page.locator("#train-btn").click()
    status = page.locator("#train-status textarea")
    expect(status).to_have_value(re.compile(r"test accuracy \d+\.\d+%"), timeout=90000)
    expect(page.locator("#acc-svg circle")).to_have_count(2 * 2 + 2)  # train + validation per epoch, legend
    expect(page.locator("#loss-plot svg path").first).to_be_attached()
    headline = page.locator("#headline")
    expect(headline).to_contain_text("Test accuracy")
    accuracy = float(re.search(r"(\d+\.\d+)%", headline.inner_text()).group(1))
    assert accuracy >= 85
    expect(page.locator("#confusion")).to_contain_text("acc.")
    assert len(re.findall(r"\d+\.\d%", page.locator("#confusion").inner_text())) == 10  # each class's accuracy
    expect(page.locator("#mistakes img").first).to_be_visible()
    expect(page.locator("#ckpt-file")).to_contain_text(".safetensors")
    expect(page.locator("#train-btn")).to_be_enabled()
    expect(page.locator("#pred-table")).to_be_hidden()  # 10,000 rows load on request only
    page.locator("#show-table").click()
    expect(page.locator("#pred-table")).to_contain_text("✓", timeout=15000)
    settle(page)
    screenshot(page, "train", full_page=True)
    model = re.search(r"Saved as (\S+);", status.input_value()).group(1)

    # The new model is in the Draw tab's picker at once, and in the Models table.
    page.get_by_role("tab", name="Draw").click()
    page.locator("#model input").click()
    expect(page.get_by_role("option", name=re.compile(re.escape(model)))).to_be_visible()
    page.keyboard.press("Escape")
    page.get_by_role("tab", name="Models").click()
    expect(page.locator("#models-table")).to_contain_text(model)
    settle(page)
    screenshot(page, "models", full_page=True)


def start_long_run(page) -> None:
    """Full-MNIST cnn on the CPU for 3 epochs (minutes): it is still running whatever the test does next."""
    from playwright.sync_api import expect

    train_tab(page)
    choose(page, "device", re.compile("^cpu$"))
    page.locator("#epochs input").fill("3")
    page.locator("#train-btn").click()
    expect(page.locator("#train-status textarea")).to_have_value(re.compile(r"epoch 1/3, loss"), timeout=30000)


def test_stop_button_and_closing_the_page_end_the_run(browser, app_url, runs):
    from gradio_client import Client
    from playwright.sync_api import expect

    page = open_app(browser, app_url)
    start_long_run(page)
    # A second visitor waits in line and is told so; their Stop works while they wait.
    waiting = open_app(browser, app_url)
    train_tab(waiting)
    choose(waiting, "device", re.compile("^cpu$"))
    waiting.locator("#train-btn").click()
    expect(waiting.locator("#progress")).to_contain_text(re.compile(r"queue: 1/1|1/1"), timeout=10000)
    # When its result should come shows too, even if no run has ended yet (queue_eta.FirstRunEta).
    expect(waiting.locator("#progress")).to_contain_text(re.compile(r"queue: 1/1 \|\s*[\d.]+/[\d.]+s"),
                                                         timeout=20000)
    screenshot(waiting, "queued")
    waiting.locator("#stop-btn").click()

    page.locator("#stop-btn").click()
    status = page.locator("#train-status textarea")
    expect(status).to_have_value(re.compile(r"^Stopped during epoch 1 of 3; kept the best model so far: test accuracy"),
                                 timeout=15000)
    expect(waiting.locator("#train-status textarea")).to_have_value("Stopped before it started.", timeout=15000)
    expect(waiting.locator("#train-btn")).to_be_enabled()
    waiting.context.close()

    before = set(runs.rglob("cnn-*.safetensors"))
    start_long_run(page)
    page.context.close()  # closing the page cancels the run; the library keeps the model trained so far
    client = Client(app_url, verbose=False, download_files=False)
    started = time.monotonic()
    summary = client.predict(arch="logreg", epochs=1, subset=5000, device="cpu", api_name="/train")[5]
    assert summary["epochs_completed"] == 1 and time.monotonic() - started < 30  # did not wait behind the cnn
    client.close()
    assert len(set(runs.rglob("cnn-*.safetensors")) - before) == 1


def test_models_tab_messages_belong_to_the_last_upload(page, tmp_path):
    from playwright.sync_api import expect

    from mnist_demo.checkpoint import checkpoint_dir

    page.get_by_role("tab", name="Models").click()
    status = page.locator("#upload-status")
    good = tmp_path / "my model.safetensors"
    good.write_bytes((checkpoint_dir() / "logreg.safetensors").read_bytes())
    page.locator("#ckpt-upload input[type=file]").set_input_files(str(good))
    expect(status).to_contain_text("Added", timeout=15000)
    page.locator("#ckpt-upload").get_by_label("Clear").first.click()
    expect(status).not_to_contain_text("Added")
    pickle_file = tmp_path / "model.pt"
    pickle_file.write_bytes(b"\x80\x04not really a pickle")
    page.locator("#ckpt-upload input[type=file]").set_input_files(str(pickle_file))
    expect(status).to_contain_text("Refused: model.pt: only .safetensors", timeout=15000)
    expect(status).not_to_contain_text("Added")
    table = page.locator("#models-table")
    expect(table).to_contain_text("my-model")
    box = table.bounding_box()
    assert box["x"] + box["width"] <= page.viewport_size["width"]  # no sideways scrolling on a laptop


@pytest.mark.skipif("fashion-mnist" not in __import__("mnist_demo.data").data.offline_datasets(),
                    reason="Fashion-MNIST's files are not on this machine")
def test_fashion_mnist_results_are_readable(page):
    from playwright.sync_api import expect

    train_tab(page)
    page.locator("#dataset").get_by_text("Fashion-MNIST").click()
    choose(page, "arch", re.compile(r"^logreg"))
    page.locator("#subset input").fill("3000")
    page.locator("#train-btn").click()
    expect(page.locator("#headline")).to_contain_text("Test accuracy", timeout=90000)
    captions = page.locator("#mistakes .caption-label")
    expect(captions.first).to_contain_text("→")
    # Whole captions, not "T-shirt/top → …": nothing is cut off.
    assert all(c.evaluate("e => e.scrollWidth <= e.clientWidth + 1") for c in captions.all()[:8])
    expect(page.locator("#confusion")).to_contain_text("0 T-shirt/top")  # rows in class order, named
    settle(page)
    page.locator("#results").scroll_into_view_if_needed()
    screenshot(page, "fashion-results", full_page=True)


@pytest.mark.parametrize("size", ["laptop", "phone"])
def test_an_upload_is_yours_until_you_share_it(browser, app_url, tmp_path, size):
    """Alice's upload is in her picker only; once she shares it, Bob draws on it under a name the app made."""
    import torch
    from playwright.sync_api import expect

    from mnist_demo.checkpoint import save_checkpoint
    from mnist_demo.data import NORMALISATION
    from mnist_demo.models import create_model

    alice, bob = open_app(browser, app_url, size), open_app(browser, app_url, size)
    mine = tmp_path / "Mr-Smith-is-rude.safetensors"
    torch.manual_seed(len(size))  # weights of its own: a copy of a bundled model is not shared again
    save_checkpoint(create_model("logreg"), mine, arch="logreg", dataset="mnist", normalisation=NORMALISATION["mnist"])
    alice.get_by_role("tab", name="Models").click()
    alice.locator("#ckpt-upload input[type=file]").set_input_files(str(mine))
    expect(alice.locator("#upload-status")).to_contain_text("Added", timeout=15000)
    expect(alice.locator("#models-table")).to_contain_text("Mr-Smith-is-rude (yours)")
    bob.get_by_role("tab", name="Models").click()
    expect(bob.locator("#models-table")).to_contain_text("logreg (bundled)")
    expect(bob.locator("#models-table")).not_to_contain_text("Smith")
    choose(alice, "model-pick", "Mr-Smith-is-rude")
    alice.locator("#share-btn").click()
    expect(alice.locator("#share-status")).to_contain_text("Shared as", timeout=15000)
    shared = re.search(r"Shared as (\S+):", alice.locator("#share-status").inner_text()).group(1)
    assert "Smith" not in shared
    alice.locator("#share-btn").click()  # pressed again: said, and nothing more is shared
    expect(alice.locator("#share-status")).to_contain_text(f"everyone has these weights already, as {shared}")
    screenshot(alice, f"share-{size}", full_page=True)
    bob.reload()
    bob.get_by_role("tab", name="Models").click()
    expect(bob.locator("#models-table")).to_contain_text(f"{shared} (shared)", timeout=15000)
    expect(bob.locator("#models-table")).not_to_contain_text("Smith")
    screenshot(bob, f"shared-seen-{size}", full_page=True)
    for page in (alice, bob):
        page.context.close()
