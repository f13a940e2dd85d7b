"""The app on a laptop, a desktop and a phone: what a person needs is on screen without scrolling."""

import re

import pytest
from ui import (
    SCREENSHOTS,
    SEVEN,
    SIZES,
    browser_only,
    choose,
    draw,
    on_screen,
    open_app,
    screenshot,
    settle,
    top_digit,
    train_tab,
)

pytestmark = browser_only
MAX_CAPTION_SHARE = 0.25  # of a mistake's tile: a caption over more hides the digit (half of it on a phone, once)


@pytest.mark.parametrize("size", list(SIZES))
def test_after_a_stroke_the_verdict_and_top_probabilities_are_on_screen(browser, app_url, size):
    from playwright.sync_api import expect

    page = open_app(browser, app_url, size)
    assert on_screen(page, "#sketch canvas")
    draw(page, SEVEN)
    expect(top_digit(page)).to_have_text("7", timeout=15000)
    settle(page)
    assert on_screen(page, "#verdict") and on_screen(page, "#sketch canvas")
    bars = page.locator("#probs button.confidence-set")
    for i in range(3):  # the three most likely classes
        box, view = bars.nth(i).bounding_box(), page.viewport_size
        assert box and box["y"] + box["height"] <= view["height"], f"bar {i} is below the fold at {size}"
    screenshot(page, f"{size}-draw")
    page.context.close()


@pytest.mark.parametrize("size", list(SIZES))
def test_train_stop_and_the_live_run_share_the_screen(browser, app_url, size):
    from playwright.sync_api import expect

    page = open_app(browser, app_url, size)
    train_tab(page)
    choose(page, "arch", re.compile(r"^logreg"))
    choose(page, "device", re.compile("^cpu$"))
    page.locator("#epochs input").fill("3")
    page.locator("#subset input").fill("20000")
    page.evaluate("window.scrollTo(0, 0)")
    # Nothing scrolled: the buttons, the progress bar, the status and the loss curve are all in view.
    for part in ("#train-btn", "#stop-btn", "#progress", "#train-status", "#loss-plot"):
        assert on_screen(page, part), f"{part} is not on screen at {size}"
    page.locator("#train-btn").click()
    expect(page.locator("#train-status textarea")).not_to_have_value("", timeout=30000)
    for part in ("#stop-btn", "#progress", "#train-status", "#loss-plot"):
        assert on_screen(page, part), f"{part} left the screen during the run at {size}"
    expect(page.locator("#headline")).to_contain_text("Test accuracy", timeout=60000)
    assert on_screen(page, "#loss-plot") and on_screen(page, "#train-status")  # the result shows where one looks
    settle(page)
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, f"{size}-train")
    mistakes = page.locator("#mistakes")
    mistakes.scroll_into_view_if_needed()
    tile = mistakes.locator(".thumbnail-item").first.bounding_box()
    caption = mistakes.locator(".caption-label").first.bounding_box()
    assert caption["height"] <= MAX_CAPTION_SHARE * tile["height"], f"captions hide the mistakes at {size}"
    mistakes.screenshot(path=SCREENSHOTS / f"{size}-mistakes.png")
    page.context.close()
