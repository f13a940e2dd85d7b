"""The teaching views in a real browser: look inside a model, teach it a digit, watch a run learn."""

import re

import pytest
import torch
from torch import nn
from ui import (
    MIRRORED_SEVEN,
    ONE,
    SEVEN,
    browser_only,
    choose,
    draw,
    screenshot,
    settle,
    top_digit,
    train_tab,
)

from mnist_demo import examples
from mnist_demo.data import Split
from mnist_demo.models import create_model
from mnist_demo.turns import TURNS

pytestmark = [*browser_only, pytest.mark.usefixtures("runs")]  # a fresh run folder for the module


def convolutions(arch: str) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in create_model(arch).modules())


def test_look_inside_follows_the_drawing_and_the_model(page):
    from playwright.sync_api import expect

    pictures = page.locator("#inside-view figure")
    page.get_by_text("Look inside the model").click()
    expect(page.locator("#inside-view")).to_contain_text("Draw a digit")
    draw(page, SEVEN)
    expect(top_digit(page)).to_have_text("7", timeout=15000)
    # One picture per convolution layer, then the first layer's filters: counted from the registry's cnn.
    expect(pictures).to_have_count(convolutions("cnn") + 1, timeout=15000)
    expect(pictures.first.locator("img")).to_have_attribute("alt", re.compile(r"conv 1 of \d+"))
    expect(pictures.first).to_contain_text("maps of 28×28")
    settle(page)
    page.locator("#inside").scroll_into_view_if_needed()
    screenshot(page, "inside-cnn")
    choose(page, "model", re.compile(r"^logreg \(.*bundled\)$"))
    # logreg: its ten class templates, and which pixels pushed the answer up or down.
    expect(pictures).to_have_count(2, timeout=15000)
    expect(pictures.last).to_contain_text("blank canvas")
    settle(page)
    page.locator("#inside").scroll_into_view_if_needed()
    screenshot(page, "inside-logreg")
    page.get_by_text("Look inside the model").click()  # closed: strokes no longer compute it
    page.locator("#sketch").get_by_label("Clear canvas").first.click()
    expect(page.locator("#verdict")).to_contain_text("blank", timeout=10000)
    expect(pictures).to_have_count(2)


def clear(page) -> None:
    from playwright.sync_api import expect

    page.locator("#sketch").get_by_label("Clear canvas").first.click()
    expect(page.locator("#verdict")).to_contain_text("blank", timeout=10000)


def keep_as(page, digit: str, examples: int) -> None:
    from playwright.sync_api import expect

    page.locator("#correct").get_by_label(digit, exact=True).check()
    expect(page.locator("#examples img")).to_have_count(examples, timeout=10000)
    expect(page.locator("#correct input:checked")).to_have_count(0)  # ready for the next one


def test_correct_a_drawing_then_teach_and_the_new_model_reads_it(page, runs):
    from playwright.sync_api import expect

    page.locator("#teach-btn").click()  # nothing to teach yet: told so, and the button comes back
    expect(page.locator("#teach-status")).to_contain_text("no examples", timeout=10000)
    expect(page.locator("#teach-btn")).to_be_enabled()
    draw(page, MIRRORED_SEVEN)
    expect(top_digit(page)).not_to_have_text("", timeout=15000)
    keep_as(page, "7", 1)
    page.locator("#teach-btn").click()  # one digit only: refused in plain words
    expect(page.locator("#teach-status")).to_contain_text("two different", timeout=10000)
    expect(page.locator("#teach-btn")).to_be_enabled()
    clear(page)
    expect(page.locator("#correct-note")).to_have_text("")  # the note was about the drawing that went
    draw(page, ONE)
    keep_as(page, "1", 2)  # clicked as the stroke ends, before its answer came: this drawing is kept, not the blank
    expect(page.locator("#correct-note")).to_contain_text("Kept as a 1")  # said where it was clicked
    expect(top_digit(page)).to_have_text("1", timeout=15000)
    expect(page.locator("#teach-status")).to_contain_text("2 examples")
    page.locator("#teach-btn").click()
    expect(page.locator("#teach-status")).to_contain_text("Taught", timeout=120000)
    expect(page.locator("#model input")).to_have_value(re.compile(r"cnn\+you"))
    expect(page.locator("#examples")).to_contain_text("→ 7 ✓")  # before → after, under each example
    clear(page)
    draw(page, MIRRORED_SEVEN)
    expect(top_digit(page)).to_have_text("7", timeout=15000)  # the taught model reads the style it was taught
    assert list(runs.rglob("cnn+you*.safetensors"))
    settle(page)
    page.locator("#teach").scroll_into_view_if_needed()
    screenshot(page, "teach")
    page.locator("#examples img").first.click()
    page.locator("#remove-example").click()
    expect(page.locator("#examples img")).to_have_count(1)


def test_teaching_digits_drawn_turned_says_what_it_learned_from(page, mnist, tmp_path):
    """Five 4s and five 7s drawn one way of the registry's, added from a CSV: teaching finds the way and says so."""
    from playwright.sync_api import expect

    way = TURNS[1]
    picks = torch.cat([torch.nonzero(mnist.test.labels == d).flatten()[:5] for d in (4, 7)])
    csv = examples.to_csv(Split(way.apply(mnist.test.images[picks]), mnist.test.labels[picks]), tmp_path / "mine.csv")
    with page.expect_file_chooser() as chooser:
        page.locator("#examples-upload").click()
    chooser.value.set_files(str(csv))
    expect(page.locator("#examples img")).to_have_count(len(picks), timeout=10000)
    page.locator("#teach-btn").click()
    expect(page.locator("#teach-status")).to_contain_text(f"your 4s and 7s are {way.name}", timeout=120000)
    expect(page.locator("#teach-btn")).to_be_enabled()
    settle(page)
    page.locator("#teach").scroll_into_view_if_needed()
    screenshot(page, "teach-turned")


def test_watch_it_learn_shows_the_grid_and_the_drawing(page):
    from playwright.sync_api import expect

    draw(page, SEVEN)
    expect(top_digit(page)).to_have_text("7", timeout=15000)
    train_tab(page)
    expect(page.locator("#watch-grid img")).to_have_count(0)  # nothing to watch before a run
    choose(page, "arch", re.compile(r"^mlp-128-64"))
    page.locator("#epochs input").fill("2")
    page.locator("#subset input").fill("10000")
    page.locator("#train-btn").click()
    expect(page.locator("#watch-grid img")).to_be_visible(timeout=60000)
    expect(page.locator("#train-status textarea")).to_have_value(re.compile(r"test accuracy"), timeout=90000)
    # The last snapshot is the trained model's: Draw's 7 with its probabilities, beside the grid.
    expect(page.locator('#watch-probs [data-testid="label-output-value"]')).to_have_text("7")
    settle(page)
    screenshot(page, "watch")
