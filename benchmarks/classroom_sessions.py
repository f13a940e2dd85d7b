"""Classroom scenarios over Gradio's API: ten students click Train within seconds, and many sessions' memory."""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from gradio_client import Client
from gradio_client.client import Job
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

from load import canvas_of, png_bytes, rss_mb  # noqa: E402
from time_to_result import TICK, tree_jiffies  # noqa: E402

from mnist_demo.data import CLASS_NAMES, load_dataset  # noqa: E402

TRAINERS, SUBMIT_WITHIN_S = 10, 5.0  # the class: ten students click Train within five seconds
RECIPE = dict(arch="cnn", device="cpu")  # the default recipe; each student's seed differs, so curves tell apart
POLL_S = 0.2  # how often a student's client looks at its job's status (the load generator's CPU)
QUEUED_S = 1.0  # a job that waited longer than this was in the queue, so it should have been shown its place
LEAVE_WITHIN_S = 30.0  # a closed tab's queued run must be gone from the queue by then
# A tab closed within ~0.2 s of its run joining the queue left that run queued, and it ran (seen twice on 2 busy
# cores): Gradio removes a closed tab's queued runs when its event stream drops, and that stream may not be open yet.
TAB_OPEN_MS = 2000
STARTED = {"PROCESSING", "ITERATING", "PROGRESS"}
IDLE_CORES, IDLE_WITHIN_S = 0.25, 120.0  # a server tree using less of a core than this has finished starting
LOSS = ["step", "loss"]  # the columns of the stream's loss curve
TTL_ENV = "MNIST_DEMO_SESSION_TTL_S"  # the server's session lifetime, when the app has one
WORKERS, STROKES, CORRECTIONS = 10, 3, (2, 3)  # people at a time; strokes and corrected digits per person
SWEEP_MARGIN_S = 15.0  # beyond the lifetime: the server's sweep, then its memory settling
WARMUP_SESSIONS = 10  # caches filled before "before", so that growth means what sessions keep
DIGITS = CLASS_NAMES["mnist"]
SOLO_RUNS = 3  # before the class and after it: single runs of the same recipe differed by up to 50% on this machine
LONG_RUN = dict(RECIPE, epochs=3)  # the run that goes on while queued runs leave: time enough to open a browser


def client_of(url: str) -> Client:
    return Client(url, verbose=False, download_files=False)


def solo_runs(url: str, runs: int = SOLO_RUNS) -> list[float]:
    """Seconds of `runs` runs of the default recipe alone, one after the other, each a click-to-result."""
    client = client_of(url)
    try:
        return [timed(lambda: client.predict(**RECIPE, api_name="/train")) for _ in range(runs)]
    finally:
        client.close()


def ten_trainers(url: str, pid: int | None = None, solo_before: list[float] = ()) -> dict:
    """TRAINERS sessions submit the default recipe within SUBMIT_WITHIN_S on a server that has trained nothing yet
    (as a Space that has just woken up): what each was shown while queued, what it got, and the total time against
    TRAINERS solo runs; then queued runs whose students leave never run; then SOLO_RUNS runs alone. The solo time is
    the median of those and of `solo_before` (taken on another server before this one started): this machine's
    speed drifts by minutes, so solo runs on both sides of the class. The server `pid`, if given, has finished
    starting first: its training process imports PyTorch and loads MNIST, which made a first run 3× longer."""
    if pid:
        wait_idle(pid)
    clients = [client_of(url) for _ in range(TRAINERS)]
    rng, t0 = random.Random(0), time.monotonic()
    delays = sorted(rng.uniform(0, SUBMIT_WITHIN_S) for _ in clients)
    with ThreadPoolExecutor(len(clients)) as ex:
        recs = list(ex.map(lambda c, d, s: student(c, t0 + d, s), clients, delays, range(1, len(clients) + 1)))
    total_s = max(r["finished"] for r in recs) - min(r["submitted"] for r in recs)
    run_s = float(np.mean([r["finished"] - r["started"] for r in recs]))
    left = leave_queue(url, clients[:3])
    solo_after = solo_runs(url)
    solo_s = float(np.median([*solo_before, *solo_after]))
    res = {"trainers": len(recs), "solo_s": round(solo_s, 1), "solo_before_s": [round(s, 1) for s in solo_before],
           "solo_after_s": [round(s, 1) for s in solo_after],
           "total_s": round(total_s, 1),
           "queue_total_over_solo": round(total_s / (len(recs) * solo_s), 3),
           # Thrashing would slow each run; the queue's own cost is the time between one run's end and the next's start.
           "run_s_mean": round(run_s, 1), "run_over_solo": round(run_s / solo_s, 3),
           "runs_s": [round(r["finished"] - r["started"], 1) for r in sorted(recs, key=lambda r: r["started"])],
           "between_runs_s": round(total_s - len(recs) * run_s, 1),
           "errors": sum(r["error"] is not None for r in recs), "error_samples": [r["error"] for r in recs if
                                                                                   r["error"]][:3]}
    res.update(eta_report(recs, run_s))
    res.update(results_report(recs, clients[0]))
    res.update(left)
    for c in clients:
        c.close()
    return res


def timed(fn: Callable[[], object]) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def student(client: Client, at: float, seed: int) -> dict:
    """One student: clicks Train at `at`, watches the job's status until it ends; what it saw and got."""
    time.sleep(max(0.0, at - time.monotonic()))
    rec = {"submitted": time.monotonic(), "rank": None, "queue_size": None, "eta": None, "eta_at": None,
           "started": None, "error": None}
    job = client.submit(**RECIPE, seed=seed, api_name="/train")
    while not job.done():
        status, now = job.status(), time.monotonic()
        if status.code.name == "IN_QUEUE" and rec["rank"] is None and status.rank is not None:
            rec.update(rank=status.rank, queue_size=status.queue_size)
        if status.code.name == "IN_QUEUE" and rec["eta"] is None and status.eta is not None:
            rec.update(eta=status.eta, eta_at=now)
        if rec["started"] is None and status.code.name in STARTED:
            rec["started"] = now
        time.sleep(POLL_S)
    rec["finished"] = time.monotonic()
    rec["started"] = rec["started"] or rec["finished"]
    try:
        job.result()
    except Exception as exc:  # any failure counts; the point is to count them
        rec["error"] = repr(exc)[:200]
    rec["outputs"] = job.outputs()
    return rec


def eta_report(recs: list[dict], run_s: float) -> dict:
    """Gradio's ETA is the time until the result (queueing.py's rank_eta: the queue ahead plus the run itself; the
    browser shows it as elapsed/total seconds): its error against when each result came. The start it implies,
    ETA minus one run (`run_s`, this scenario's mean run), against when each run started."""
    queued = [r for r in recs if r["started"] - r["submitted"] > QUEUED_S]
    # An ETA first shown as the run started (on a fresh server, Gradio has none before a run ends) says nothing.
    shown = [r for r in queued if r["eta"] is not None and r["started"] - r["eta_at"] > QUEUED_S]
    to_result = [(r["finished"] - r["eta_at"] - r["eta"]) / (r["finished"] - r["eta_at"]) for r in shown]
    to_start = [(r["started"] - r["eta_at"] - (r["eta"] - run_s)) / (r["started"] - r["eta_at"]) for r in shown]
    return {"queued": len(queued), "all_saw_rank": all(r["rank"] is not None for r in queued),
            "all_saw_eta": len(shown) == len(queued), "ranks_shown": [r["rank"] for r in recs],
            "etas_shown_s": [None if r["eta"] is None else round(r["eta"], 1) for r in recs],
            "eta_errors": [round(e, 3) for e in to_result],
            "eta_error_max_abs": round(max(map(abs, to_result)), 3) if to_result else None,
            "start_eta_errors": [round(e, 3) for e in to_start],
            "start_eta_error_max_abs": round(max(map(abs, to_start)), 3) if to_start else None}


def results_report(recs: list[dict], client: Client) -> dict:
    """Each run's own checkpoint, of the architecture asked for, and nothing of another run in its stream: no other
    checkpoint's name and no point of another run's loss curve (the seeds differ, so no two curves share one)."""
    done = [r for r in recs if r["error"] is None]
    names = [next(v["model"] for v in r["outputs"][-1] if isinstance(v, dict) and "checkpoint" in v) for r in done]
    table = client.predict(api_name="/models")
    arch_of = {row[0]: row[1] for row in table["data"]}  # model → architecture, as the checkpoint records it
    curves = [{tuple(p) for out in r["outputs"] for v in out if isinstance(v, dict) and v.get("columns") == LOSS
               for p in v["data"]} for r in done]
    texts = [repr(r["outputs"]) for r in done]
    cross = sum(1 for i in range(len(done)) for j in range(len(done)) if i != j and
                (names[j] in texts[i] or curves[i] & curves[j]))
    return {"own_checkpoints": len(set(names)) == len(recs) and all(arch_of.get(n) == RECIPE["arch"] for n in names),
            "cross_talk": cross}


def wait_idle(pid: int) -> None:
    """Until the process tree of `pid` uses less than IDLE_CORES over a second (or IDLE_WITHIN_S have passed)."""
    deadline, before = time.monotonic() + IDLE_WITHIN_S, tree_jiffies(pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = tree_jiffies(pid)
        if now - before < IDLE_CORES * TICK:
            return
        before = now


def queue_size(url: str) -> int:
    return httpx.get(url + "gradio_api/queue/status").json()["queue_size"]


def wait_for(condition: Callable[[], bool], within_s: float) -> float | None:
    """Seconds until condition() held, or None if it did not within `within_s`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < within_s:
        if condition():
            return time.monotonic() - t0
        time.sleep(POLL_S)
    return None


def leave_queue(url: str, clients: list[Client]) -> dict:
    """Students click Train; the last, still queued, cancels; then a browser tab queues a run and is closed. Each
    must leave the queue while the first run still goes on (so a shorter queue cannot mean that the next started)."""
    jobs = []
    for i, client in enumerate(clients):  # one after the other: clients submitted at once join in any order
        jobs.append(client.submit(**(RECIPE if i else LONG_RUN), seed=100 + i, api_name="/train"))
        wait_for(lambda: jobs[-1].status().code.name in STARTED | {"IN_QUEUE"}, LEAVE_WITHIN_S)
    jobs[-1].cancel()
    waiting = len(jobs) - 2
    cancelled = wait_for(lambda: queue_size(url) == waiting and not jobs[0].done(), LEAVE_WITHIN_S)
    res = {"cancel_left_queue_s": cancelled, "tab_left_queue_s": closed_tab_leaves(url, waiting, jobs[0])}
    res["left_queue"] = cancelled is not None and res["tab_left_queue_s"] is not False
    for job in jobs[:-1]:
        job.result()
    return res


def closed_tab_leaves(url: str, waiting: int, running: Job) -> float | bool | None:
    """A browser tab clicks Train behind `waiting` queued runs and the `running` job, and is closed: seconds until
    its run left the queue (False: it did not before the running job ended; None: no Chromium here)."""
    from ui import ARGS, CHROMIUM, open_app

    if not os.path.exists(CHROMIUM):
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = open_app(browser, url)
        page.get_by_role("tab", name="Train").click()
        page.locator("#train-btn").click()
        # Train first runs start_run (which writes "Queued…"), then queues the run: both, and the run is in line.
        status = page.locator("#train-status textarea")
        queued = wait_for(lambda: "Queued" in status.input_value() and queue_size(url) == waiting + 1,
                          LEAVE_WITHIN_S)
        page.wait_for_timeout(TAB_OPEN_MS)
        page.context.close()
        # Only while the same run goes on does a shorter queue mean that this one left, not that the next started.
        left = wait_for(lambda: queue_size(url) == waiting and not running.done(), LEAVE_WITHIN_S)
        browser.close()
    return False if queued is None or left is None else round(left, 1)


def visitor_class() -> type:
    """A browser tab over plain HTTP: classroom.Student's strokes (the requests a page sends for one), its heartbeat
    stream open while it stays, and /correct for the digits it corrects."""
    from classroom import Student  # at call time: classroom.py imports this module

    class Visitor(Student):
        def correct(self, png: bytes, label: str) -> str:
            (image,) = self._upload(png)
            return self._call("correct", [image, label])[0]

        def visit(self, strokes: list[tuple[bytes, bytes, bytes]], corrections: list[tuple[bytes, str]]) -> None:
            with self.http.stream("GET", f"{self.url}gradio_api/heartbeat/{self.session}") as beat:
                next(beat.iter_lines())  # the tab is open; leaving closes this stream, as closing a tab does
                for _ in strokes:
                    self.stroke(strokes)
                for png, label in corrections:
                    self.correct(png, label)
            self.http.close()

    return Visitor


def visits(n: int, seed: int) -> list[tuple[list, list]]:
    """Each visitor's strokes (a test digit drawn in STROKES growing parts) and corrected digits with their labels."""
    ds, rng = load_dataset("mnist"), np.random.default_rng(seed)
    images, labels = ds.test.images.numpy(), ds.test.labels.numpy()
    rows = np.arange(28)[:, None]
    plans = []
    for i in rng.choice(len(images), n, replace=False):
        strokes = [canvas_of(images[i] * (rows < 28 * (k + 1) // STROKES)) for k in range(STROKES)]
        picks = rng.choice(len(images), rng.integers(CORRECTIONS[0], CORRECTIONS[1] + 1), replace=False)
        fixes = [(png_bytes(Image.fromarray(255 - images[j]).resize((280, 280))), DIGITS[labels[j]]) for j in picks]
        plans.append((strokes, fixes))
    return plans


def run_visits(url: str, plans: list[tuple[list, list]]) -> list[str]:
    """All visits, WORKERS at a time; the failures."""
    visitor = visitor_class()
    config, errors = visitor.page_config(url), []

    def one(plan: tuple[list, list]) -> None:
        try:
            visitor(url, config).visit(*plan)
        except Exception as exc:  # any failure counts; the point is to count them
            errors.append(repr(exc)[:200])

    with ThreadPoolExecutor(WORKERS) as ex:
        list(ex.map(one, plans))
    return errors


def sessions_memory(url: str, pid: int, sessions: int = 200, expiry_wait_s: float | None = None) -> dict:
    """`sessions` visitors draw, correct a few digits and leave: the server's RSS (its training process included)
    before, right after, and once their state has expired (the server's TTL_ENV lifetime, read from this process's
    environment, plus SWEEP_MARGIN_S, unless `expiry_wait_s` says)."""
    if expiry_wait_s is None:
        expiry_wait_s = float(os.environ.get(TTL_ENV, 0)) + SWEEP_MARGIN_S
    errors = run_visits(url, visits(WARMUP_SESSIONS, seed=1))
    time.sleep(expiry_wait_s)
    before, t0 = rss_mb(pid), time.monotonic()
    errors += run_visits(url, visits(sessions, seed=2))
    after, seconds = rss_mb(pid), time.monotonic() - t0
    time.sleep(expiry_wait_s)
    expired = rss_mb(pid)
    return {"sessions": sessions, "session_errors": len(errors), "session_error_samples": errors[:3],
            "sessions_s": round(seconds, 1),
            "rss_before_mb": round(before), "rss_after_mb": round(after), "rss_after_expiry_mb": round(expired),
            "expiry_wait_s": expiry_wait_s, "rss_growth": round((expired - before) / before, 3)}
