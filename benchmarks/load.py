"""Load and reliability check of the app on loopback: concurrent classify, classify during training, queueing,
and memory over repeated train-and-stop cycles. Bounded in time; writes benchmarks/results/load.{json,md}."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gradio_client import Client, handle_file  # noqa: E402

from mnist_demo.data import load_dataset  # noqa: E402

CLIENTS, SECONDS, CYCLES = 20, 30, 20
TRAIN = dict(arch="cnn", epochs=1)  # the default recipe: about 15 s alone on 2 cores


def start_server(runs: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), MNIST_DEMO_RUNS=str(runs))
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "gradio_api/info", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("app did not start")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def hammer(clients: list[Client], image: str, seconds: float) -> dict:
    """Every client classifies in a loop for `seconds`; latencies in ms and the error count."""
    stop_at = time.monotonic() + seconds
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def loop(client: Client) -> None:
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            try:
                out = client.predict(handle_file(image), api_name="/classify")
                ok = out.get("label") == "7"
            except Exception as exc:  # any failure counts; the point is to count them
                ok, out = False, repr(exc)
            with lock:
                latencies.append((time.perf_counter() - t0) * 1000)
                if not ok:
                    errors.append(str(out)[:200])

    with ThreadPoolExecutor(len(clients)) as ex:
        list(ex.map(loop, clients))
    lat = np.array(latencies)
    return {"requests": len(lat), "errors": len(errors), "error_samples": errors[:3],
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p95_ms": round(float(np.percentile(lat, 95)), 1),
            "per_s": round(len(lat) / seconds, 1)}


def train_rate(summary: dict) -> float:
    """Training images per second of a finished run: 50,000 images per epoch over its training time."""
    return 50_000 * summary["epochs_completed"] / summary["train_time_s"]


def main() -> None:
    ds = load_dataset("mnist")
    tmp = Path(tempfile.mkdtemp(prefix="mnist-load-"))
    image = str(tmp / "seven.png")
    Image.fromarray(255 - ds.test.images[0].numpy()).resize((280, 280)).save(image)  # test image 0 is a 7
    proc, url = start_server(tmp / "runs")
    res: dict = {"machine": f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")}
    try:
        clients = [Client(url, verbose=False, download_files=False) for _ in range(CLIENTS)]
        print("== classify alone", flush=True)
        res["classify"] = hammer(clients, image, SECONDS)
        print(res["classify"], flush=True)

        print("== training alone", flush=True)
        solo = clients[0].predict(**TRAIN, api_name="/train")[-1]
        res["train_solo_images_per_s"] = round(train_rate(solo))

        print("== classify while training", flush=True)
        trainer = Client(url, verbose=False, download_files=False)
        job = trainer.submit(**TRAIN, api_name="/train")
        while not job.outputs():  # the first streamed update: the run has started
            time.sleep(0.05)
        res["classify_during_training"] = hammer(clients[:CLIENTS], image, SECONDS)
        during = job.result()[-1]
        res["train_during_load_images_per_s"] = round(train_rate(during))
        res["train_speed_kept"] = round(res["train_during_load_images_per_s"] / res["train_solo_images_per_s"], 3)
        print(res["classify_during_training"], res["train_speed_kept"], flush=True)

        print("== two trainings at once", flush=True)
        a, b = Client(url, verbose=False, download_files=False), Client(url, verbose=False, download_files=False)
        ja = a.submit(arch="cnn", epochs=1, api_name="/train")
        jb = b.submit(arch="logreg", epochs=1, api_name="/train")
        time.sleep(1.0)
        states = sorted([ja.status().code.name, jb.status().code.name])
        sa, sb = ja.result()[-1], jb.result()[-1]
        res["two_trainings"] = {"states_while_first_runs": states,
                                "checkpoints": [sa["checkpoint"], sb["checkpoint"]],
                                "archs_match": sa["model"].startswith("cnn") and sb["model"].startswith("logreg")}
        print(res["two_trainings"], flush=True)

        print("== train-and-stop cycles", flush=True)
        before = rss_mb(proc.pid)
        stop_times = []
        for _ in range(CYCLES):
            job = a.submit(arch="cnn", epochs=3, api_name="/train")
            while not any("epoch 1/" in (o[1] or "") for o in job.outputs()):
                time.sleep(0.05)
            t0 = time.monotonic()
            a.predict(api_name="/stop")
            job.result()
            stop_times.append(time.monotonic() - t0)
        res["stop_cycles"] = {"cycles": CYCLES, "rss_before_mb": round(before), "rss_after_mb": round(rss_mb(proc.pid)),
                              "stop_to_result_s_max": round(max(stop_times), 2),
                              "stop_to_result_s_median": round(float(np.median(stop_times)), 2)}
        print(res["stop_cycles"], flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "load.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
