"""Every way a Train tab run can end badly, in a real browser: the message stays, every button works again."""

import re

import pytest
from ui import browser_only, choose, open_app, screenshot, train_tab

pytestmark = browser_only


@pytest.fixture
def page(browser, app_url):
    page = open_app(browser, app_url)
    train_tab(page)
    yield page
    page.context.close()


def csv_file(path, mnist, rows: int = 300, bad_cell: bool = False):
    """A tutorial-format CSV of MNIST training images, with one text cell if asked."""
    images, labels = mnist.train.images[:rows].reshape(rows, -1).numpy(), mnist.train.labels[:rows].numpy()
    lines = ["label," + ",".join(f"pixel{i}" for i in range(784))]
    lines += [f"{y}," + ",".join(map(str, x)) for x, y in zip(images, labels)]
    if bad_cell:
        lines[2] = lines[2].replace(",0,", ",oops,", 1)
    path.write_text("\n".join(lines))
    return path


def ends_usable(page, message, name: str) -> None:
    """The error is told in the status line (not a toast that fades) and every button works again; screenshot."""
    from playwright.sync_api import expect

    status = page.locator("#train-status textarea")
    expect(status).to_have_value(message, timeout=60000)
    assert "Error:" not in status.input_value() and "/tmp" not in status.input_value()
    for button in ("#train-btn", "#overfit-btn", "#stop-btn"):
        expect(page.locator(button)).to_be_enabled(timeout=10000)
    expect(page.locator("#headline")).to_contain_text("This run did not finish")
    expect(page.locator("#progress")).to_contain_text("did not finish")
    expect(page.locator("#progress .clear-status")).to_be_hidden()  # Gradio's ✕ would cover "did not finish"
    screenshot(page, name)
    page.locator("#stop-btn").click()  # Stop after an error answers, and says there is nothing to stop
    expect(status).to_have_value(re.compile(r"\S[\s\S]*\nNothing to stop\.$"))  # below what it said


@pytest.mark.parametrize("lr, message", [("0", re.compile(r"learning rate must be a positive")),
                                         ("1000", re.compile(r"training diverged .* lower learning rate"))])
def test_a_bad_learning_rate_is_explained_and_train_works_again(page, lr, message):
    from playwright.sync_api import expect

    from mnist_demo.train import TrainConfig

    choose(page, "device", re.compile("^cpu$"))
    page.locator("#lr input").fill(lr)
    page.locator("#train-btn").click()
    ends_usable(page, message, f"error-lr-{lr}")
    expect(page.locator("#lr input")).to_have_value(lr)  # the settings are kept
    # The same tab, without a reload, trains once the learning rate is good again.
    page.locator("#lr input").fill(str(TrainConfig.for_arch("cnn", device="cpu").lr))
    page.locator("#subset input").fill("3000")
    page.locator("#train-btn").click()
    expect(page.locator("#headline")).to_contain_text("Test accuracy", timeout=90000)


def test_csv_upload_without_a_file_or_with_a_text_cell(page, mnist, tmp_path):
    from playwright.sync_api import expect

    page.locator("#dataset").get_by_text("CSV upload").click()
    choose(page, "arch", re.compile(r"^logreg"))
    page.locator("#train-btn").click()
    ends_usable(page, re.compile(r"Choose a CSV file first"), "error-csv-missing")
    page.locator("#csv input[type=file]").set_input_files(str(csv_file(tmp_path / "bad.csv", mnist, bad_cell=True)))
    expect(page.locator("#csv")).to_contain_text("bad.csv")
    page.locator("#overfit-btn").click()  # the sanity check reads the same file and says what is wrong with it
    ends_usable(page, re.compile(r"bad\.csv: row 2, column 'pixel\d+': 'oops' is not a number"), "error-csv")
    page.locator("#dataset").get_by_text("MNIST", exact=True).click()  # the settings kept, the tab trains again
    page.locator("#subset input").fill("3000")
    page.locator("#train-btn").click()
    expect(page.locator("#headline")).to_contain_text("Test accuracy", timeout=90000)


def test_stop_tells_one_story_and_keeps_the_model(page):
    from playwright.sync_api import expect

    choose(page, "device", re.compile("^cpu$"))
    page.locator("#epochs input").fill("3")
    page.locator("#train-btn").click()
    status = page.locator("#train-status textarea")
    expect(status).to_have_value(re.compile(r"epoch 1/3, loss"), timeout=30000)
    # Record every status the page shows from the Stop click on.
    page.evaluate("""() => { window.seen = []; const box = document.querySelector('#train-status textarea');
        setInterval(() => { if (window.seen.at(-1) !== box.value) window.seen.push(box.value); }, 20); }""")
    page.locator("#stop-btn").click()
    expect(status).to_have_value(re.compile(r"^Stopped during epoch 1 of 3; kept the best model so far: test "
                                            r"accuracy \d+\.\d+%"), timeout=15000)
    seen = page.evaluate("window.seen")
    first_stop = next(i for i, text in enumerate(seen) if "topping" in text)
    assert not any(re.search(r"epoch \d/3, loss", text) for text in seen[first_stop:]), seen  # no flicker back
    expect(page.locator("#progress")).to_contain_text("stopped")
    expect(page.locator("#progress")).not_to_contain_text("ETA")
    expect(page.locator("#headline")).to_contain_text("Test accuracy")
    expect(page.locator("#train-btn")).to_be_enabled()


def test_the_sanity_check_shows_its_own_outcome_not_the_last_runs(page):
    from playwright.sync_api import expect

    choose(page, "arch", re.compile(r"^logreg"))
    page.locator("#subset input").fill("3000")
    page.locator("#train-btn").click()
    expect(page.locator("#headline")).to_contain_text("Test accuracy", timeout=60000)
    first_status = page.locator("#train-status textarea").input_value()
    page.locator("#overfit-btn").click()
    expect(page.locator("#train-status textarea")).to_have_value(re.compile(r"^Sanity check PASSED"), timeout=60000)
    # The results on screen say whose they are: the last real run's, not the sanity check's.
    model = re.search(r"Saved as (\S+);", first_status).group(1)
    expect(page.locator("#headline")).to_contain_text(f"no test results: its outcome is in the status line above. "
                                                      f"The results below are still those of {model}")
    expect(page.locator("#train-btn")).to_be_enabled()
    screenshot(page, "sanity-check")


def test_teach_while_a_training_goes_on_is_told_at_once_and_both_work_after(page):
    """One training or teaching per visitor: Teach clicked during a run says so where it was clicked, and works
    again once the run has been stopped."""
    from playwright.sync_api import expect

    from app import ONE_RUN_EACH

    choose(page, "arch", re.compile(r"^logreg"))
    choose(page, "device", re.compile("^cpu$"))
    page.locator("#epochs input").fill("30")
    page.locator("#train-btn").click()
    status = page.locator("#train-status textarea")
    expect(status).to_have_value(re.compile(r"epoch \d+/30"), timeout=30000)
    page.get_by_role("tab", name="Draw").click()
    page.locator("#teach-btn").click()
    expect(page.get_by_text(ONE_RUN_EACH)).to_be_visible(timeout=10000)
    expect(page.locator("#teach-btn")).to_be_enabled()
    screenshot(page, "teach-while-training")
    train_tab(page)
    page.locator("#stop-btn").click()
    expect(page.locator("#train-btn")).to_be_enabled(timeout=30000)
    page.get_by_role("tab", name="Draw").click()
    page.locator("#teach-btn").click()  # now it is the examples that are missing, and it says so
    expect(page.locator("#teach-status")).to_contain_text("no examples", timeout=15000)
    expect(page.locator("#teach-btn")).to_be_enabled(timeout=15000)
