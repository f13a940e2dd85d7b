"""The web app in a real browser (Playwright + Debian Chromium): draw, train, browse models; saves screenshots."""

import os
import re
import shutil
import time
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
# Written on every run, so kept out of the repo; docs/screenshots holds the reviewed copies the README shows.
SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR") or Path(__file__).resolve().parent.parent / "artifacts")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Chromium (apt-get install chromium)")]

# Strokes in canvas-element coordinates (0..1); the 280 px drawing surface sits in the middle of that element.
ONE = [[(0.50, 0.28), (0.50, 0.72)]]
SEVEN = [[(0.40, 0.30), (0.60, 0.30), (0.46, 0.72)]]


@pytest.fixture(scope="module", autouse=True)
def runs(app_url, tmp_path_factory):
    """A fresh run folder, so the screenshots show the bundled models and this module's own runs only."""
    from mnist_demo import api

    previous = os.environ[api.RUNS_DIR_ENV]
    os.environ[api.RUNS_DIR_ENV] = str(tmp_path_factory.mktemp("browser-runs"))
    yield Path(os.environ[api.RUNS_DIR_ENV])
    os.environ[api.RUNS_DIR_ENV] = previous


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, has_touch=True)
    # Nothing but the app itself may be fetched: the page must work offline.
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(app_url)
                  else route.abort())
    page = context.new_page()
    page.goto(app_url)
    page.locator("#sketch canvas").first.wait_for()
    yield page
    context.close()


def draw(page, strokes) -> None:
    box = page.locator("#sketch canvas").first.bounding_box()
    for stroke in strokes:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=12)  # intermediate moves make one continuous stroke
        page.mouse.up()


def touch_draw(page, stroke) -> None:
    """A finger stroke via the DevTools protocol: Playwright's touchscreen can only tap."""
    box = page.locator("#sketch canvas").first.bounding_box()
    cdp = page.context.new_cdp_session(page)
    points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
    dense = [(x0 + (x1 - x0) * t / 10, y0 + (y1 - y0) * t / 10)
             for (x0, y0), (x1, y1) in zip(points, points[1:]) for t in range(11)]
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": dense[0][0], "y": dense[0][1]}]})
    for x, y in dense[1:]:
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def settle(page) -> None:
    """Wait until no component shows a loading indicator (before screenshots)."""
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=status-tracker]')]"
                           ".every((e) => e.classList.contains('hide'))")
    page.wait_for_timeout(300)


def top_digit(page):
    return page.locator('#probs [data-testid="label-output-value"]')


def test_draw_one_then_seven_without_touching_the_toolbar(page):
    from playwright.sync_api import expect

    # No click on "Brush" anywhere: the app selects it on load and after every clear.
    draw(page, ONE)
    expect(top_digit(page)).to_have_text("1", timeout=15000)
    expect(page.locator("#verdict")).to_contain_text("1")
    assert page.locator("#probs button.confidence-set").count() == 10
    page.locator("#sketch").get_by_label("Clear canvas").first.click()
    expect(page.locator("#verdict")).to_contain_text("blank", timeout=10000)
    draw(page, SEVEN)
    expect(top_digit(page)).to_have_text("7", timeout=15000)
    expect(page.locator("#seen img")).to_be_visible()
    expect(page.locator("#saliency img")).to_be_visible()
    expect(page.locator("#compare")).to_contain_text("▶")  # the selected model in the comparison
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    settle(page)
    page.screenshot(path=SCREENSHOTS / "draw.png", full_page=True)


def test_model_switch_and_image_upload(page, mnist, tmp_path):
    from PIL import Image
    from playwright.sync_api import expect

    draw(page, SEVEN)
    expect(top_digit(page)).to_have_text("7", timeout=15000)
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


def test_touch_stroke_draws(page):
    from playwright.sync_api import expect

    touch_draw(page, ONE[0])
    expect(top_digit(page)).to_have_text("1", timeout=15000)


def test_train_small_run_shows_curves_and_accuracy(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Train").click()
    expect(page.locator("#lr input")).to_have_value("0.05")  # the cnn recipe, filled in on load
    page.locator("#arch input").click()
    page.get_by_role("option", name=re.compile(r"^logreg")).click()
    expect(page.locator("#lr input")).to_have_value("0.003")  # switching architecture loads its recipe
    page.locator("#arch input").click()
    page.get_by_role("option", name=re.compile(r"^cnn —")).click()
    expect(page.locator("#lr input")).to_have_value("0.05")
    page.locator("#epochs input").fill("2")
    page.locator("#subset input").fill("10000")  # ~10 s on two CPU cores
    page.locator("#train-btn").click()
    status = page.locator("#train-status textarea")
    expect(status).to_have_value(re.compile(r"test accuracy \d+\.\d+%"), timeout=60000)
    expect(page.locator("#acc-svg circle")).to_have_count(2 * 2 + 2)  # train + validation per epoch, legend
    expect(page.locator("#loss-plot svg path").first).to_be_attached()
    headline = page.locator("#headline")
    expect(headline).to_contain_text("Test accuracy")
    accuracy = float(re.search(r"(\d+\.\d+)%", headline.inner_text()).group(1))
    assert accuracy >= 85
    expect(page.locator("#confusion-table td")).to_have_count(100 + 10)  # 10×10 counts + per-class accuracy
    expect(page.locator("#mistakes img").first).to_be_visible()
    expect(page.locator("#ckpt-file")).to_contain_text(".safetensors")
    expect(page.locator("#train-btn")).to_be_enabled()
    settle(page)
    page.screenshot(path=SCREENSHOTS / "train.png", full_page=True)
    model = re.search(r"Saved as (\S+);", status.input_value()).group(1)

    # The new model is in the Draw tab's picker at once, and in the Models table.
    page.get_by_role("tab", name="Draw").click()
    page.locator("#model input").click()
    expect(page.get_by_role("option", name=re.compile(re.escape(model)))).to_be_visible()
    page.keyboard.press("Escape")
    page.get_by_role("tab", name="Models").click()
    expect(page.locator("#models-table")).to_contain_text(model)
    settle(page)
    page.screenshot(path=SCREENSHOTS / "models.png", full_page=True)


def start_long_run(page) -> None:
    """Full-MNIST cnn for 3 epochs (minutes on CPU): it is still running whatever the test does next."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Train").click()
    expect(page.locator("#lr input")).to_have_value("0.05")
    page.locator("#epochs input").fill("3")
    page.locator("#train-btn").click()
    expect(page.locator("#train-status textarea")).to_have_value(re.compile(r"epoch 1/3, loss"), timeout=30000)


def test_stop_button_and_closing_the_page_end_the_run(browser, app_url, runs):
    from gradio_client import Client
    from playwright.sync_api import expect

    first = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = first.new_page()
    page.goto(app_url)
    start_long_run(page)
    # A second visitor waits in line and is told so; their Stop works while they wait.
    second = browser.new_context(viewport={"width": 1280, "height": 1000})
    waiting = second.new_page()
    waiting.goto(app_url)
    waiting.get_by_role("tab", name="Train").click()
    expect(waiting.locator("#lr input")).to_have_value("0.05")
    waiting.locator("#train-btn").click()
    expect(waiting.locator("#train-status")).to_contain_text(re.compile(r"queue: 1/1|1/1"), timeout=10000)
    waiting.locator("#stop-btn").click()

    page.locator("#stop-btn").click()
    status = page.locator("#train-status textarea")
    expect(status).to_have_value(re.compile(r"^Stopped early; kept the best model so far: test accuracy"),
                                 timeout=15000)
    expect(waiting.locator("#train-status textarea")).to_have_value("Stopped before it started.", timeout=15000)
    second.close()

    before = set(runs.glob("cnn-*.safetensors"))
    start_long_run(page)
    first.close()  # closing the page cancels the run; the library keeps the model trained so far
    client = Client(app_url, verbose=False, download_files=False)
    started = time.monotonic()
    summary = client.predict(arch="logreg", epochs=1, subset=5000, api_name="/train")[5]
    assert summary["epochs_completed"] == 1 and time.monotonic() - started < 30  # did not wait behind the cnn
    client.close()
    assert len(set(runs.glob("cnn-*.safetensors")) - before) == 1
