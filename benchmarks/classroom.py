"""A classroom on one 2-core machine: the server's CPU per stroke against a bare Sketchpad app, 30 students drawing
(alone and beside a training), 10 students training at once, sessions that come and go, and strokes in Chromium."""

# Usage: python benchmarks/load.py classroom [--settings native avx2]
# Each setting runs in a child process with its CPU-feature environment (the app's server and its training process
# inherit it). Writes benchmarks/results/classroom.{json,md}.

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from gradio_client import Client

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

from load import LOADED_MAX_S, HttpUser, canvas_of, during_training, hammer, start_server  # noqa: E402
from time_to_result import SETTINGS, TICK, machine, save_results, tree_jiffies  # noqa: E402

from mnist_demo.data import load_dataset  # noqa: E402

STUDENTS, SECONDS = 30, 60
PACE_S = 1.0  # a student's stroke every 0.5-1.5 s (load.hammer's spread)
BROWSER_ROUNDS = 20  # strokes per app in Chromium (each followed by a clear)
FLOOR_APP = "benchmarks/floor_app.py"
SESSION_TTL_S = 20  # a closed tab's state lives this long here (an hour by default), so that expiry can be seen

# Recorded in the page: when the bars, and the slower views, last changed, and when the last stroke ended.
MARKS_JS = """() => {
  window.marks = {};
  const watch = (selector, key) => {
    let last = null;
    const tick = () => {
      const el = document.querySelector(selector);
      const now = el ? el.innerText + [...el.querySelectorAll('img')].map((i) => i.src).join() : '';
      if (now !== last) { last = now; window.marks[key] = performance.now(); }
      requestAnimationFrame(tick);
    };
    tick();
  };
  watch('#probs', 'bars'); watch('#saliency', 'saliency');
  document.addEventListener('pointerup', () => { window.marks.up = performance.now(); }, true);
}"""
ENSURE_BRUSH_JS = """() => { const tools = document.querySelectorAll('#sketch .toolbar-wrap button');
  if (tools.length && ![...tools].some((b) => b.classList.contains('highlight'))) tools[0].click(); }"""


PAGE = ThreadPoolExecutor(4 * STUDENTS)  # the requests a page sends side by side


def page_route(dependency: dict) -> str | None:
    """The app's own route that an event's page script fetches (ours), or None for a Gradio event."""
    return None if dependency.get("backend_fn") else re.search(r"'(/[^']+)'", dependency["js"]).group(1)


class Student(HttpUser):
    """One student's browser tab drawing, over the requests its page sends for a stroke (seen in Chromium). Ours:
    the stroke's images to the answer's route, then the kept drawing to the views' route (one request at a time per
    tab; while one runs, only the newest stroke's waits, as the page does). A bare Gradio app: the canvas's three
    images sent ahead to the sketchpad, the new ones uploaded as files, the event, and `resends` more sets of the
    three files, as its page sends them. The answer's time is the stroke's latency."""

    def __init__(self, url: str, config: dict, resends: int = 0):
        super().__init__(url)
        self.config, self.resends, self.strokes, self.background = config, resends, 0, None
        self.views_s: list[float] = []  # stroke → its slower views, for each stroke whose views ran
        self.views_errors: list[str] = []
        self.views_lock, self.views_busy, self.views_next = threading.Lock(), False, None
        self.visitor = uuid.uuid4().hex[:20]  # as a page sends it (app.py's `visitor`): its own models' folder

    @staticmethod
    def page_config(url: str) -> dict:
        """The sketchpad's id, the events a stroke sets off and (ours) the answer's route, from the page's own
        configuration."""
        cfg = httpx.get(url + "config").json()
        sketch = next(c["id"] for c in cfg["components"] if c.get("props", {}).get("elem_id") == "sketch")
        answer = next(d for d in cfg["dependencies"] if [sketch, "change"] in [list(t) for t in d["targets"]])
        extras = [d for d in cfg["dependencies"] if d.get("trigger_after") == answer["id"]
                  and d.get("trigger_only_on_success")]
        return {"sketch": sketch, "answer": answer["id"], "queued": answer.get("queue") is not False,
                "route": page_route(answer), "views_route": extras and page_route(extras[0]),
                "extras": extras and extras[0]["id"], "extras_queued": extras and extras[0].get("queue") is not False}

    def stroke(self, canvases: list[tuple[bytes, bytes, bytes]]) -> dict:
        """The next stroke; canvases differ in bytes (not in the digit), as a student's successive strokes do."""
        canvas = canvases[self.strokes % len(canvases)]
        self.strokes += 1
        t0 = time.perf_counter()
        if self.config["route"]:
            probs, _, _, drawing = self.http.post(self.url + self.config["route"].lstrip("/"), files={
                "layer": ("layer.png", canvas[1]), "composite": ("composite.png", canvas[2])},
                data={"visitor": self.visitor}).json()
        else:
            probs, drawing = self._gradio_event(canvas), None
        answer_s = time.perf_counter() - t0
        if self.config["extras"]:
            self._views(drawing, t0)
        return {"label": probs and probs.get("label"), "answer_s": answer_s}

    def _gradio_event(self, canvas: tuple[bytes, bytes, bytes]) -> dict:
        """A stroke as Gradio 6.31's own sketchpad sends it: the three images at once, then the new files at once
        (the same bytes only once), the event; the page's re-sends after it."""
        background, layer, composite = canvas
        blob = uuid.uuid4().hex[:11]

        def send_ahead(kind: str, png: bytes, index: str) -> None:
            self.http.post(self.url + "gradio_api/component_server/", files={"file": (f"{kind}.png", png)},
                           data={"id": blob, "type": kind, "index": index, "component_id": str(self.config["sketch"]),
                                 "fn_name": "accept_blobs", "session_hash": self.session}).raise_for_status()

        list(PAGE.map(send_ahead, ("background", "composite", "layer"), (background, composite, layer),
                      ("null", "null", "0")))
        files = [layer, composite] + ([] if self.background else [background])
        layer_file, composite_file, *first = [f[0] for f in PAGE.map(self._upload, files)]
        self.background = self.background or first[0]
        value = {"background": self.background, "layers": [layer_file], "composite": composite_file, "id": None}
        probs = self._run(self.config["answer"], [value, None], self.config["queued"])[0]
        list(PAGE.map(self._upload, [background, layer, composite] * self.resends))
        return probs

    def _views(self, drawing: dict | None, t0: float) -> None:
        with self.views_lock:
            if self.views_busy:  # the newest stroke's views wait for the running ones; older waiting ones are dropped
                self.views_next = (drawing, t0)
                return
            self.views_busy = True
        PAGE.submit(self._views_in_turn, drawing, t0)

    def _views_in_turn(self, drawing: dict | None, t0: float) -> None:
        while True:
            try:
                if self.config["views_route"]:
                    self.http.post(self.url + self.config["views_route"].lstrip("/"),
                                   json={"drawing": drawing, "model": None, "visitor": self.visitor}
                                   ).raise_for_status()
                else:
                    self._run(self.config["extras"], [drawing, None, False, False], self.config["extras_queued"])
                self.views_s.append(time.perf_counter() - t0)
            except Exception as exc:  # counted with the answers' errors
                self.views_errors.append(repr(exc)[:200])
            with self.views_lock:
                if self.views_next is None:
                    self.views_busy = False
                    return
                (drawing, t0), self.views_next = self.views_next, None

    def _run(self, fn_index: int, data: list, queued: bool) -> list:
        if queued:
            return self._queued(fn_index, data)
        return self._event("run/predict", fn_index, data).json()["data"]

    def _event(self, route: str, fn_index: int, data: list) -> httpx.Response:
        response = self.http.post(f"{self.url}gradio_api/{route}", json={
            "data": data, "event_data": None, "fn_index": fn_index, "trigger_id": self.config["sketch"],
            "session_hash": self.session})
        response.raise_for_status()
        return response

    def _queued(self, fn_index: int, data: list) -> list:
        """A queued event, as the page runs it: join the queue, then read the session's stream to its result."""
        event_id = self._event("queue/join", fn_index, data).json()["event_id"]
        with self.http.stream("GET", f"{self.url}gradio_api/queue/data", params={"session_hash": self.session}) as s:
            for line in s.iter_lines():
                msg = json.loads(line[5:]) if line.startswith("data:") else {}
                if msg.get("msg") == "process_completed" and msg.get("event_id") == event_id:
                    if not msg.get("success"):
                        raise RuntimeError(msg.get("output"))
                    return msg["output"]["data"]
        raise RuntimeError("the event stream ended without a result")


def canvases(digit: np.ndarray) -> list[tuple[bytes, bytes, bytes]]:
    """A student's strokes: the same digit a pixel apart each time, so each stroke's images are new bytes, as in a
    browser, while the centred 28×28 the model reads, and so its answer, stays the same."""
    return [canvas_of(np.roll(digit, shift, axis=1)) for shift in range(-2, 2)]


def students_drawing(url: str, pid: int, seconds: float, until=lambda: False, resends: int = 0) -> dict:
    """STUDENTS students, each drawing its own digit, a stroke every PACE_S; with the server's CPU per stroke."""
    config = Student.page_config(url)
    students = [Student(url, config, resends) for _ in range(STUDENTS)]
    drawn = [canvases(d) for d in load_dataset("mnist").test.images[:STUDENTS].numpy()]
    cpu0, own0 = tree_jiffies(pid), time.process_time()
    res = hammer(students, lambda student, i: student.stroke(drawn[i]), seconds, PACE_S, until)
    strokes = sum(student.strokes for student in students)  # hammer's first stroke each included
    res["cpu_ms_per_stroke"] = round(1000 * (tree_jiffies(pid) - cpu0) / TICK / strokes, 1)
    res["generator_cpu_ms_per_stroke"] = round(1000 * (time.process_time() - own0) / strokes, 1)
    views = [1000 * s for student in students for s in student.views_s]
    views_errors = [e for student in students for e in student.views_errors]
    res["errors"] += len(views_errors)
    res["error_samples"] += views_errors[:3]
    if views:
        res.update(views_p50_ms=round(float(np.percentile(views, 50)), 1),
                   views_p95_ms=round(float(np.percentile(views, 95)), 1))
    return res


def drawing_while_training(url: str, pid: int) -> dict:
    """The students drawing while one training runs (the default recipe, 2 epochs), for as long as it runs."""
    trainer = Client(url, verbose=False, download_files=False)
    trainer.predict(arch="logreg", epochs=1, subset=2000, api_name="/train")  # the training process is ready
    return during_training(trainer, lambda until: students_drawing(url, pid, LOADED_MAX_S, until))


def request_kind(url: str) -> str | None:
    for kind in ("component_server", "upload", "queue/join", "run/predict", "file=", "queue/data"):
        if f"gradio_api/{kind}" in url:
            return kind
    return "stroke route" if "/mnist_demo/" in url else None


def idle_cpu_s(pid: int, seconds: float = 5.0) -> float:
    """CPU seconds per second that a server spends with a page open and nobody using it."""
    cpu0 = tree_jiffies(pid)
    time.sleep(seconds)
    return (tree_jiffies(pid) - cpu0) / TICK / seconds


def browser_strokes(url: str, pid: int, extras: tuple[str, ...] = ()) -> dict:
    """Strokes drawn in headless Chromium, each followed by a clear: stroke end → bars updated (and → each slower
    view updated), the server's CPU per change event (strokes and clears), and the requests the page sent."""
    from playwright.sync_api import sync_playwright
    from ui import ARGS, CHROMIUM, ONE, SEVEN, draw, open_app

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = open_app(browser, url)
        page.evaluate(MARKS_JS)
        requests: dict[str, int] = {}
        bars, slower, not_first = [], {k: [] for k in extras}, 0

        def event(strokes) -> None:
            before = page.evaluate("() => window.marks.bars")
            page.evaluate(ENSURE_BRUSH_JS)
            if strokes:
                draw(page, strokes)
            else:
                page.locator("#sketch").get_by_label("Clear canvas").first.click()
            page.wait_for_function(f"() => window.marks.bars > {before} && window.marks.bars > window.marks.up",
                                   timeout=30_000)
            if strokes and extras:  # the slower views settle before the next stroke
                page.wait_for_function("() => " + " && ".join(f"window.marks.{k} > window.marks.up" for k in extras),
                                       timeout=30_000)
            page.wait_for_timeout(300)  # the page's own follow-up requests end too

        event(ONE), event(None)  # warm: the models load on first use
        page.on("request", lambda r: (k := request_kind(r.url)) and requests.__setitem__(k, requests.get(k, 0) + 1))
        idle = idle_cpu_s(pid)
        cpu0, t0 = tree_jiffies(pid), time.monotonic()
        for i in range(BROWSER_ROUNDS):
            event((ONE, SEVEN)[i % 2])
            marks = page.evaluate("() => window.marks")
            bars.append((marks["bars"] - marks["up"]) / 1000)
            for k in extras:
                slower[k].append((marks[k] - marks["up"]) / 1000)
                not_first += marks[k] <= marks["bars"]  # same frame: the bars waited for it
            event(None)
        cpu_s, wall = (tree_jiffies(pid) - cpu0) / TICK, time.monotonic() - t0
        # The server's own idling (Gradio's loops), before and after, would be spent without any stroke too.
        idle = (idle + idle_cpu_s(pid)) / 2
        cpu_s -= idle * wall
        browser.close()
    events = 2 * BROWSER_ROUNDS
    return {"stroke_s_median": round(float(np.median(bars)), 3), "stroke_s": [round(b, 3) for b in bars],
            **{f"{k}_s_median": round(float(np.median(v)), 3) for k, v in slower.items()},
            "bars_not_first": not_first, "cpu_ms_per_event": round(1000 * cpu_s / events, 1),
            "idle_cpu_ms_per_s": round(1000 * idle, 1),
            "requests_per_event": {k: round(n / events, 2) for k, n in sorted(requests.items())}}


@contextlib.contextmanager
def served(script: str, env: dict | None = None):
    """An app on loopback with a fresh runs folder, for the length of a `with`."""
    proc, url = start_server(Path(tempfile.mkdtemp(prefix="classroom-")) / "runs", script=script, env=env)
    try:
        yield proc, url
    finally:
        proc.terminate()
        proc.wait(10)


def measure_setting(setting: str) -> dict:
    """Every scenario under one CPU-feature setting (this process's environment)."""
    from classroom_sessions import sessions_memory, solo_runs, ten_trainers

    res = {}

    def step(name: str, fn, *args, **kwargs) -> None:
        print(f"== {setting}: {name}", flush=True)
        res[name] = fn(*args, **kwargs)
        print(json.dumps(res[name])[:600], flush=True)

    with served(FLOOR_APP) as (proc, url):
        step("floor_browser", browser_strokes, url, proc.pid)
        # Its page sends the canvas's three files again on every status message of a stroke's event.
        resends = max(0, round(res["floor_browser"]["requests_per_event"].get("upload", 0) / 3) - 1)
        step("floor_drawing", students_drawing, url, proc.pid, SECONDS, resends=resends)
        step("floor_drawing_sent_once", students_drawing, url, proc.pid, SECONDS)  # a stricter floor
    with served("app.py") as (proc, url):
        step("browser", browser_strokes, url, proc.pid, ("saliency",))
        step("drawing", students_drawing, url, proc.pid, SECONDS)
        step("drawing_during_training", drawing_while_training, url, proc.pid)
        step("solo_before", solo_runs, url)  # the class's solo time also counts runs after it, on its own server
    # A fresh server, nothing queued before, as at the start of a class; its sessions live SESSION_TTL_S once closed.
    with served("app.py", env={"MNIST_DEMO_SESSION_TTL_S": str(SESSION_TTL_S)}) as (proc, url):
        step("trainers", ten_trainers, url, pid=proc.pid, solo_before=res["solo_before"])
        # Expired after the lifetime and the sweep that follows it (every quarter of a lifetime), then settled.
        step("sessions", sessions_memory, url, proc.pid, expiry_wait_s=SESSION_TTL_S * 1.25 + 15)
    return res


def summary(res: dict) -> dict:
    """The interface's numbers, for one setting."""
    ours, floor = res["drawing"]["cpu_ms_per_stroke"], res["floor_drawing"]["cpu_ms_per_stroke"]
    browser, floor_browser = res["browser"]["stroke_s_median"], res["floor_browser"]["stroke_s_median"]
    return {"cpu_ms_per_stroke": ours, "floor_cpu_ms_per_stroke": floor, "cpu_over_floor": round(ours / floor, 2),
            "floor_sent_once_cpu_ms_per_stroke": res["floor_drawing_sent_once"]["cpu_ms_per_stroke"],
            "drawing_p50_ms": res["drawing"]["p50_ms"], "drawing_p95_ms": res["drawing"]["p95_ms"],
            "drawing_errors": res["drawing"]["errors"],
            "drawing_during_training_p95_ms": res["drawing_during_training"]["p95_ms"],
            "drawing_during_training_errors": res["drawing_during_training"]["errors"],
            "training_kept": res["drawing_during_training"]["train_speed_kept"],
            "queue_total_over_solo": res["trainers"]["queue_total_over_solo"],
            "eta_error_max_abs": res["trainers"]["eta_error_max_abs"],
            "rss_growth": res["sessions"]["rss_growth"],
            "browser_stroke_s": browser, "browser_floor_stroke_s": floor_browser,
            "browser_over_floor": round(browser / floor_browser, 2), "bars_not_first": res["browser"]["bars_not_first"]}


def percent(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def to_markdown(res: dict) -> str:
    lines = [f"Classroom benchmark, {res['date']}, {res['machine']['cpu']} ({res['machine']['cores']} cores), "
             f"{STUDENTS} students, load generator on the same cores", "",
             "| setting | scenario | errors | p50 ms | p95 ms | views p95 ms | strokes/s | server CPU ms per stroke "
             "(beside a training: with it) | generator CPU ms per stroke | training kept |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for setting, d in res["details"].items():
        for name in ("floor_drawing", "floor_drawing_sent_once", "drawing", "drawing_during_training"):
            r = d[name]
            lines.append(f"| {setting} | {name.replace('_', ' ')} | {r['errors']} | {r['p50_ms']} | {r['p95_ms']} | "
                         f"{r.get('views_p95_ms', '–')} | {r['per_s']} | {r['cpu_ms_per_stroke']} | "
                         f"{r.get('generator_cpu_ms_per_stroke', '–')} | {r.get('train_speed_kept', '–')} |")
    lines += ["", "| setting | ours / bare CPU per stroke | stroke end → bars in Chromium, ours / bare (median) | "
              "bars that waited for a slower view | 10 trainers: total / sum of solo | worst ETA error | "
              "RSS growth after 200 sessions |", "|---|---|---|---|---|---|---|"]
    for setting, s in res["settings"].items():
        lines.append(f"| {setting} | {s['cpu_over_floor']}× | {s['browser_stroke_s']} / {s['browser_floor_stroke_s']}"
                     f" s ({s['browser_over_floor']}×) | {s['bars_not_first']} of {BROWSER_ROUNDS} | "
                     f"{s['queue_total_over_solo']} | {percent(s['eta_error_max_abs'])} | {s['rss_growth']:.1%} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="load.py classroom", description=__doc__)
    ap.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    ap.add_argument("--child", choices=list(SETTINGS), help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        Path(args.child_out).write_text(json.dumps(measure_setting(args.child)))
        return
    res = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "settings": {}, "details": {}}
    for setting in args.settings:
        out = Path(tempfile.mkdtemp()) / "child.json"
        subprocess.run([sys.executable, __file__, "--child", setting, "--child-out", str(out)], check=True,
                       env=dict(os.environ, **SETTINGS[setting]))
        res["details"][setting] = json.loads(out.read_text())
        res["settings"][setting] = summary(res["details"][setting])
    res.update(res["settings"][args.settings[-1]])  # the interface's keys: the most limited setting asked for
    save_results(ROOT / "benchmarks" / "results", "classroom", res, to_markdown(res))


if __name__ == "__main__":
    main(sys.argv[1:])
