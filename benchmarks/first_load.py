"""Bytes a first visit transfers: the app on loopback, one page load in Chromium, every response counted."""

# Usage: python benchmarks/first_load.py [URL]   (without a URL it starts app.py on a free port itself)

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "tests")]

from load import start_server  # noqa: E402
from ui import ARGS, CHROMIUM  # noqa: E402


def first_load(url: str) -> dict:
    """Transferred bytes (as sent, compressed or not) of one first visit, in total and for the largest files."""
    from playwright.sync_api import sync_playwright

    sizes: dict[str, int] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_context(viewport={"width": 1366, "height": 768}).new_page()
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.enable")
        urls: dict[str, str] = {}
        cdp.on("Network.responseReceived", lambda e: urls.__setitem__(e["requestId"], e["response"]["url"]))
        cdp.on("Network.loadingFinished",
               lambda e: sizes.__setitem__(urls.get(e["requestId"], e["requestId"]), int(e["encodedDataLength"])))
        page.goto(url, wait_until="load")
        page.locator("#sketch canvas").first.wait_for()
        page.wait_for_timeout(2000)
        browser.close()
    largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:8]
    return {"requests": len(sizes), "bytes": sum(sizes.values()),
            "largest": [{"url": u.replace(url, "/"), "bytes": b} for u, b in largest]}


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(json.dumps(first_load(sys.argv[1]), indent=2))
    else:
        proc, url = start_server(Path(tempfile.mkdtemp(prefix="mnist-first-load-")) / "runs")
        try:
            print(json.dumps(first_load(url), indent=2))
        finally:
            proc.terminate()
            proc.wait(10)
