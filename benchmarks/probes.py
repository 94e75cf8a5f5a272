"""Measurements that need a fresh process: cold start, numba compile time, peak memory.

Each runs the installed ``digitnet`` (or the venv's Python) as a subprocess, so what is
measured is what a user waits for, imports and all.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _wall(cmd: list[str], env: dict | None = None, cwd: str | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - t0


def cold_help(repeats: int = 5) -> dict:
    """Wall seconds of ``digitnet --help`` (median of ``repeats``), against a bare ``python -c pass``,
    and whether the --help path imported numba (it must not)."""
    digitnet = str(BIN / "digitnet")
    _wall([digitnet, "--help"])                                  # warm the OS file cache once
    help_s = statistics.median(_wall([digitnet, "--help"]) for _ in range(repeats))
    python_s = statistics.median(_wall([sys.executable, "-c", "pass"]) for _ in range(repeats))
    probe = ("import sys\nfrom digitnet.cli import main\nsys.argv = ['digitnet', '--help']\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "sys.stderr.write('NUMBA=%d\\n' % ('numba' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return {"digitnet_help_seconds": help_s, "python_startup_seconds": python_s,
            "help_imports_numba": "NUMBA=1" in out.stderr}


_COMPILE_PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from digitnet import kernels
from digitnet.nn.network import Network, dense_layers
t1 = time.perf_counter()
net = Network.init(dense_layers((784, 16, 10), "relu", "softmax"), (1, 28, 28), "cross-entropy", seed=0)
x = np.zeros((20, 784), np.float32); labels = np.zeros(20, np.int64); order = np.arange(20, dtype=np.int64)
sizes = np.array(net.mlp()[0], np.int64); bs = 10
dense = [slot for slot in net.slots if slot]
w_off = np.array([s["W"][0] for s in dense], np.int64); b_off = np.array([s["b"][0] for s in dense], np.int64)
kernels.train_batches(x, labels, order, net.params, np.zeros_like(net.params), np.zeros_like(net.params), sizes,
                      w_off, b_off, 1, 1, bs, 0, 2, np.float32(0.1), np.float32(0.9), np.float32(0.0),
                      np.zeros(bs * int(sizes.sum()), np.float32), np.zeros(2 * bs * 16, np.float32), np.zeros(2))
t2 = time.perf_counter()
kernels.warp_images(np.zeros((2, 28, 28), np.uint8), np.zeros((2, 2, 3), np.float32), np.zeros(2, np.int8),
                    np.zeros((2, 784), np.float32))
t3 = time.perf_counter()
from digitnet import conv_kernels
from digitnet.nn.layers import Activation, Conv, Dense, Flatten, MaxPool
from digitnet.stack_kernels import StackStep
cnet = Network.init([Conv(4, 5), Activation("relu"), MaxPool(2), Flatten(), Dense(10), Activation("softmax")],
                    (1, 28, 28), "cross-entropy", seed=0)
step = StackStep(cnet)
for n in (1, 2):                     # one thread and two, as training's auto runs both
    conv_kernels.set_threads(n)
    step.cost_and_gradient(np.zeros((4, 784), np.float32), np.zeros(4, np.int64), np.random.default_rng(0))
t4 = time.perf_counter()
from digitnet.optim_kernels import FAST as OPTIMIZERS
for name in ("sgd", "adam"):         # the optimizer steps training takes
    OPTIMIZERS[name](cnet.n_params, 0.9, 1e-4, cnet.decay_mask()).step(cnet.params, np.zeros_like(cnet.params), 0.1)
t5 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "train_batches": t2 - t1, "warp_images": t3 - t2, "conv_step": t4 - t3,
                  "optimizers": t5 - t4, "total": t5 - t0}))
"""


def numba_compile() -> dict:
    """Seconds to import the kernels and make their first calls: with an empty NUMBA_CACHE_DIR
    (cold: numba compiles) and again with the cache it just filled (cached: numba loads)."""
    with tempfile.TemporaryDirectory(prefix="digitnet-bench-numba-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        runs = {}
        for label in ("cold", "cached"):
            out = subprocess.run([sys.executable, "-c", _COMPILE_PROBE], env=env, capture_output=True, text=True,
                                 check=True)
            runs[label] = json.loads(out.stdout.strip().splitlines()[-1])
        return runs


_WRAPPER = ("import resource, subprocess, sys\n"
            "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)\n"
            "sys.stderr.write(r.stderr)")


def peak_memory(model_out: str, data: str = "fashion-mnist") -> dict:
    """Peak resident memory (MiB) and wall seconds of ``digitnet train`` on the full data set for
    one epoch with the default preset (augmentation and validation on). A small wrapper process
    starts it and reads RUSAGE_CHILDREN ru_maxrss: measured from this (large) process, a child's
    figure would include the parent's pages at fork. The model written (``model_out``) serves
    the predict benchmark afterwards."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, str(BIN / "digitnet"), "train", "--data", data,
                           "--epochs", "1", "--json", "--out", model_out, "--force"],
                          capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    seconds = time.perf_counter() - t0
    peak_kib, code = (int(v) for v in proc.stdout.split())
    result = {"command": f"digitnet train --data {data} --epochs 1 --json --out TMP --force",
              "peak_rss_mib": peak_kib / 1024, "seconds": seconds, "exit_code": code}
    if code:
        result["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1]
    return result


PREDICT_KEYS = ("model", "cold_one_png_s", "import_numpy_pil_s", "cold_ratio", "idx_images", "idx_images_per_s",
                "idx_peak_rss_mb", "png_images", "png_images_per_s")


def predict_cold(model: str | None) -> dict | None:
    """Run ``benchmarks/predict_bench.py --quick`` (the predict engineer's) if it exists, on the
    shipped default model when there is one, else on ``model``; keep its speed figures."""
    script = ROOT / "benchmarks" / "predict_bench.py"
    if not script.exists():
        return None
    from digitnet.modelfile import default_model_path

    default = default_model_path()
    cmd = [sys.executable, str(script), "--quick"]
    if not Path(default).exists() and model:
        cmd += ["--model", model]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = proc.stdout.strip().splitlines()
    try:
        full = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"exit_code": proc.returncode, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return {k: full[k] for k in PREDICT_KEYS if k in full}
