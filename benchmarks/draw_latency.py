"""How live ``digitnet draw`` feels: the round trip of a prediction, and how soon it answers.

Starts the real command (``digitnet draw --no-browser --port 0``) on 127.0.0.1, then sends
what the page sends — a 280×280 PNG of white ink on black, with every column's activations
and links in the answer — many times over one keep-alive connection, as the browser does,
for each model; and the same with 784 numbers as JSON. Prints median, p90, p99 and max of
the round trip (client clock: request written → whole answer read and parsed), and the
server's CPU time per request (from /proc: the part the machine's load does not change). Then the
start-up: from launching the command to its first answer to ``GET /api/models``, best and
median of several launches.

    .venv/bin/python benchmarks/draw_latency.py                      # the shipped models
    .venv/bin/python benchmarks/draw_latency.py -n 1000 my-conv.npz  # more requests, another model too

The digits are 50 test digits of the embedded MNIST, enlarged to the pad's 280×280. Traffic
goes to 127.0.0.1 only; every loop is bounded in count and time. The bar is 30 ms.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIGITNET = Path(sys.executable).with_name("digitnet")
TIME_LIMIT = 120.0          # seconds per model and mode, whatever -n says


def pad_pngs(k: int = 50) -> tuple[list[bytes], list[list[float]]]:
    """k digits as the page would send them (PNG, 280×280) and as 784 numbers."""
    from PIL import Image

    from digitnet.datasets import load_dataset

    data = load_dataset("embedded")
    pngs, pixels = [], []
    for img in data.test_images[:k]:
        big = Image.fromarray(img).resize((280, 280), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        big.save(buf, "PNG")
        pngs.append(buf.getvalue())
        pixels.append((img.reshape(-1) / 255.0).round(4).tolist())
    return pngs, pixels


def start(models: list[str]) -> tuple[subprocess.Popen, str, float]:
    t = time.perf_counter()
    proc = subprocess.Popen([str(DIGITNET), "draw", "--no-browser", "--port", "0", *models],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not m:
        proc.kill()
        raise SystemExit(f"digitnet draw did not start: {line}{proc.stderr.read()}")
    url = m.group(0)
    while True:
        try:
            with urllib.request.urlopen(url + "api/models", timeout=2) as r:
                r.read()
                break
        except OSError:
            if time.perf_counter() - t > 20:
                proc.kill()
                raise
            time.sleep(0.002)
    return proc, url, time.perf_counter() - t


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def round_trips(port: int, path: str, bodies: list[bytes], ctype: str, n: int, warmup: int = 20) -> list[float]:
    """n round trips (ms) over one keep-alive connection, after ``warmup`` unmeasured ones."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    begin = time.perf_counter()
    for i in range(warmup + n):
        body = bodies[i % len(bodies)]
        t = time.perf_counter()
        conn.request("POST", path, body=body, headers={"Content-Type": ctype})
        r = conn.getresponse()
        answer = json.loads(r.read())
        elapsed = (time.perf_counter() - t) * 1000
        if r.status != 200:
            raise SystemExit(f"{path}: {r.status} {answer}")
        if i >= warmup:
            times.append(elapsed)
        if time.perf_counter() - begin > TIME_LIMIT:
            break
    conn.close()
    return times


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time process ``pid`` has used so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary(times: list[float], server_cpu: float | None = None) -> dict:
    """Median, p90, p99 and max of the round trips (ms), and the server's CPU per request (ms):
    what a round trip would take at least on an idle core, whatever the machine's load."""
    a = np.array(times)
    return {"n": len(a), "median": float(np.median(a)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max()),
            "server_cpu": None if server_cpu is None else 1000 * server_cpu / len(a)}


def measured(proc: subprocess.Popen, port: int, path: str, bodies: list[bytes], ctype: str, n: int) -> dict:
    """``round_trips`` summarised, with the server's CPU time over them (warm-up included: a small overcount)."""
    before = cpu_seconds(proc.pid)
    times = round_trips(port, path, bodies, ctype, n)
    after = cpu_seconds(proc.pid)
    return summary(times, None if before is None or after is None else (after - before) * len(times) / (len(times) + 20))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", help="model files besides the shipped ones")
    ap.add_argument("-n", type=int, default=500, help="measured requests per model and mode (default 500)")
    ap.add_argument("--starts", type=int, default=5, help="launches timed for start-up (default 5)")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()

    shipped = [str(p) for p in sorted((ROOT / "models").glob("*.npz"))]       # every model the package ships
    models = list(dict.fromkeys(shipped + [str(Path(m).resolve()) for m in args.models]))    # a shipped one named again: once
    load_before = os.getloadavg()[0]
    pngs, pixels = pad_pngs()

    startups = []
    for _ in range(args.starts):
        proc, url, seconds = start(models[:1])
        startups.append(seconds)
        stop(proc)

    proc, url, _ = start(models)
    port = int(url.rsplit(":", 1)[1].strip("/"))
    try:
        with urllib.request.urlopen(url + "api/models", timeout=10) as r:
            listing = json.loads(r.read())
        ids = {m["file"]: m["id"] for m in listing["models"]}
        results = []
        for path in models:
            mid = ids[Path(path).name]
            png = measured(proc, port, f"/api/predict?model={mid}", pngs, "image/png", args.n)
            js = measured(proc, port, "/api/predict", [json.dumps({"model": mid, "pixels": p}).encode()
                                                        for p in pixels], "application/json", args.n)
            results.append({"model": mid, "png": png, "pixels": js})
    finally:
        stop(proc)

    print(f"digitnet draw round trip, ms ({args.n} requests each, one keep-alive connection, full answer "
          "with activations and links)")
    print(f"{'model':<16} {'request':<8} {'median':>7} {'p90':>7} {'p99':>7} {'max':>7}  {'server CPU':>10}")
    for r in results:
        for mode in ("png", "pixels"):
            s = r[mode]
            cpu = "" if s["server_cpu"] is None else f"{s['server_cpu']:10.1f}"
            print(f"{r['model']:<16} {mode:<8} {s['median']:7.1f} {s['p90']:7.1f} {s['p99']:7.1f} {s['max']:7.1f}  {cpu}")
    print(f"start-up to first answer: best {min(startups):.2f} s, median {statistics.median(startups):.2f} s "
          f"({len(startups)} launches)")
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(f"load average (1 min) before and after: {load[0]}, {load[1]} on {os.cpu_count()} cores "
          "(other work on the machine adds to every figure)")
    if args.json:
        args.json.write_text(json.dumps({"round_trip_ms": results, "startup_s": startups, "load_average": load},
                                        indent=1) + "\n")


if __name__ == "__main__":
    main()
