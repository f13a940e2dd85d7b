"""Helpers for the browser tests: Chromium settings, screen sizes, drawing strokes, waiting, screenshots."""

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
# Written on every run, so kept out of the repo; docs/screenshots holds the reviewed copies the README shows.
SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR") or Path(__file__).resolve().parent.parent / "artifacts")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]
SIZES = {"laptop": (1366, 768), "desktop": (1920, 1080), "phone": (390, 844)}  # the screens the app must fit

# Strokes in canvas-element coordinates (0..1); the 280 px drawing surface sits in the middle of that element.
ONE = [[(0.50, 0.28), (0.50, 0.72)]]
SEVEN = [[(0.40, 0.30), (0.60, 0.30), (0.46, 0.72)]]

browser_only = [pytest.mark.browser,
                pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Chromium (apt-get install chromium)")]


def open_app(browser, app_url: str, size: str = "laptop"):
    """A fresh visitor (own session) on a screen of the given size; nothing but the app may be fetched."""
    width, height = SIZES[size]
    context = browser.new_context(viewport={"width": width, "height": height}, has_touch=True,
                                  is_mobile=size == "phone")
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(app_url)
                  else route.abort())
    page = context.new_page()
    page.goto(app_url)
    page.locator("#sketch canvas").first.wait_for()
    return page


def draw(page, strokes) -> None:
    page.locator("#sketch canvas").first.scroll_into_view_if_needed()  # mouse strokes land only on the screen
    box = page.locator("#sketch canvas").first.bounding_box()
    for stroke in strokes:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=12)  # intermediate moves make one continuous stroke
        page.mouse.up()


def open_panel(page, elem_id: str) -> None:
    """Open a closed accordion (Every model's answer, Look inside), whose views are computed only while open."""
    page.locator(f"#{elem_id} > button").first.click()


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


def screenshot(page, name: str, full_page: bool = False) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=full_page)


def on_screen(page, selector: str) -> bool:
    """Whether the element is wholly inside the viewport as the page stands (no scrolling)."""
    box = page.locator(selector).first.bounding_box()
    view = page.viewport_size
    return bool(box) and box["y"] >= 0 and box["y"] + box["height"] <= view["height"] and box["x"] >= 0 \
        and box["x"] + box["width"] <= view["width"] + 1


def top_digit(page):
    return page.locator('#probs [data-testid="label-output-value"]')


def train_tab(page) -> None:
    """Open the Train tab and wait for the recipe to be filled in."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Train").click()
    expect(page.locator("#lr input")).not_to_have_value("")


def choose(page, field: str, option) -> None:
    """Pick a dropdown option and wait for what it triggers (a new recipe fills the fields) to finish."""
    page.locator(f"#{field} input").click()
    page.get_by_role("option", name=option).click()
    settle(page)


CONTRAST_JS = """(el) => {
  const rgb = (s) => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  let bg = null;
  for (let n = el; n && !bg; n = n.parentElement) {
    const c = rgb(getComputedStyle(n).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0.9)) bg = c.slice(0, 3);
  }
  bg = bg || [255, 255, 255];
  const [a, b] = [lum(rgb(getComputedStyle(el).color).slice(0, 3)), lum(bg)];
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}"""


def contrast(page, selector: str) -> float:
    """WCAG contrast ratio of an element's text against the first opaque background behind it."""
    return page.locator(selector).first.evaluate(CONTRAST_JS)
MIRRORED_SEVEN = [[(0.60, 0.30), (0.40, 0.30), (0.54, 0.72)]]  # a 7 facing the wrong way: a style to teach
