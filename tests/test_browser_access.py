"""Accessibility in a real browser: AA contrast, a named canvas, and dropdowns that close when Tab moves on."""

import re

from ui import SEVEN, browser_only, contrast, draw, open_panel, top_digit, train_tab

pytestmark = browser_only
AA = 4.5  # WCAG AA for body text

DRAW_TEXT = ['#verdict p', '#probs dd', '#draw-help p', 'button[role=tab][aria-selected=true]',
             'button[role=tab][aria-selected=false]', '#compare td', 'footer a']
TRAIN_TEXT = ['#lr [data-testid="block-info"]', '#train-btn', '#stop-btn', '#overfit-btn',
              '#dataset label:nth-child(1) span', '#dataset label:nth-child(2) span', '#smoothing-note p',
              '#run-progress span']


def test_text_and_buttons_meet_aa_contrast(page):
    from playwright.sync_api import expect

    draw(page, SEVEN)
    expect(top_digit(page)).to_have_text("7", timeout=15000)
    open_panel(page, "compare-panel")
    expect(page.locator("#compare")).to_contain_text("▶", timeout=10000)
    low = {sel: round(contrast(page, sel), 2) for sel in DRAW_TEXT}
    train_tab(page)
    low |= {sel: round(contrast(page, sel), 2) for sel in TRAIN_TEXT}
    assert all(ratio >= AA for ratio in low.values()), {s: r for s, r in low.items() if r < AA}


def test_the_canvas_has_an_accessible_name(page):
    from playwright.sync_api import expect

    expect(page.locator("#sketch canvas").first).to_have_attribute("aria-label", re.compile(r"draw .*digit"))


def test_a_dropdown_left_with_tab_closes(page):
    from playwright.sync_api import expect

    train_tab(page)
    page.locator("#arch input").click()
    expect(page.get_by_role("option").first).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_role("option")).to_have_count(0)
    expect(page.locator("#lr input")).to_be_focused()  # the focus went on to the next field
    for _ in range(3):  # on through Epochs and the Optimizer dropdown (it opens as it gets the focus) and past it
        page.keyboard.press("Tab")
    expect(page.locator("#batch input")).to_be_focused()
    expect(page.get_by_role("option")).to_have_count(0)
