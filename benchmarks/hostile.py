"""What a hostile visitor's requests cost `python app.py`: the server's peak memory growth for each (the issue's bound:
a few hundred MB), and another visitor's classify time just after. Loopback only, bounded; writes
benchmarks/results/hostile.json and .md."""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from gradio_client import Client, handle_file
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def status(pid: int, field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M).group(1))


def peak_growth_mb(pid: int, request: Callable[[], object]) -> tuple[float, str]:
    """The server's peak resident memory during `request`, over what it held before (Linux: clear_refs 5 resets it)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = status(pid, "VmRSS")
    try:
        said = str(request())
    except Exception as exc:  # a refusal is the expected answer
        said = str(exc)
    time.sleep(0.5)
    return (status(pid, "VmHWM") - before) / 1024, " ".join(said.split())[:90]


def files(tmp: Path) -> dict[str, Path]:
    side = 10_900  # the bomb: 14.5 KB on disk
    Image.new("1", (side, side)).save(tmp / "bomb.png", optimize=True)
    (tmp / "wide.csv").write_text(",".join(["label"] + [f"p{i}" for i in range(300_000)]) + "\n")
    blob = (ROOT / "checkpoints" / "logreg.safetensors").read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    header["__metadata__"]["notes"] = json.dumps("x" * 10_000_000)
    raw = json.dumps(header).encode()
    (tmp / "padded.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + blob[8 + n:])
    Image.new("L", (28, 28)).save(tmp / "digit.png")
    return {p.stem: p for p in tmp.iterdir()}


def probes(url: str, paths: dict[str, Path], attacker: Client) -> dict[str, Callable[[], object]]:
    """Each hostile request, by name; the first is nothing at all, for the other visitor's baseline."""
    bomb = str(paths["bomb"])
    sketch = {"background": None, "layers": [handle_file(bomb)], "composite": handle_file(bomb), "id": None}
    return {
        "nothing (the baseline)": lambda: "—",
        "bomb PNG, stroke route": lambda: httpx.post(url + "mnist_demo/stroke", data={"model": ""}, files={
            k: ("b.png", paths["bomb"].read_bytes(), "image/png") for k in ("layer", "composite")}).json()[1],
        "bomb PNG, /draw": lambda: attacker.predict(sketch, api_name="/draw")[1],
        "bomb PNG, /classify": lambda: attacker.predict(handle_file(bomb), api_name="/classify"),
        "bomb PNG, /correct": lambda: attacker.predict(handle_file(bomb), "3", api_name="/correct"),
        "300,000-column CSV, /train": lambda: attacker.predict(dataset="csv", csv_file=handle_file(
            str(paths["wide"])), arch="logreg", api_name="/train"),
        "10 MB checkpoint header, /upload_checkpoint": lambda: attacker.predict(handle_file(
            str(paths["padded"])), api_name="/upload_checkpoint")[0],
    }


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="hostile-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "MNIST_DEMO_RUNS": str(tmp / "runs"),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(120):
            try:
                if httpx.get(url + "gradio_api/info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        paths = files(tmp)
        attacker, other = Client(url, verbose=False), Client(url, verbose=False)
        rows = []
        for name, request in probes(url, paths, attacker).items():
            grew, said = peak_growth_mb(server.pid, request)
            start = time.perf_counter()
            other.predict(handle_file(str(paths["digit"])), api_name="/classify")
            rows.append({"probe": name, "peak_growth_mb": round(grew, 1), "answer": said,
                         "other_classify_ms": round((time.perf_counter() - start) * 1000, 1)})
    finally:
        server.terminate()
        server.wait(timeout=30)
    res = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
           "when": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hostile.json").write_text(json.dumps(res, indent=2) + "\n")
    table = ["| probe | server's peak memory growth | another visitor's classify just after | answer |",
             "|---|---|---|---|"]
    table += [f"| {r['probe']} | {r['peak_growth_mb']} MB | {r['other_classify_ms']} ms | {r['answer']} |"
              for r in rows]
    (RESULTS / "hostile.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
