"""Measure ``digitnet predict``: batch speed, peak memory, cold single-image time, and accuracy
on person-made digit images.

    .venv/bin/python benchmarks/predict_bench.py [--model PATH] [--quick]

Figures (printed as a table and as one JSON line at the end):
- images/s for a 60k IDX file (train-images-idx3-ubyte.gz of Fashion-MNIST when present, else
  60k embedded digits repeated) and for a directory of 10k PNGs, each in a fresh process
  running the real command with ``--format csv`` into /dev/null, with its peak RSS;
- the median of 5 cold ``digitnet predict one.png`` runs, and its ratio to the median of 5
  ``python -c "import numpy, PIL.Image"``;
- accuracy of the model on 500 generated person-made images (tests/digit_images.py, seed 7)
  and on the 30 samples in ../shared/samples/user-digits.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FASHION_TRAIN = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
SAMPLES = ROOT.parent / "shared" / "samples" / "user-digits"
sys.path.insert(0, str(ROOT / "tests"))


def timed(cmd: list[str], env=None) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process; raises if it fails."""
    code = ("import resource, subprocess, sys, time\n"
            "t = time.perf_counter(); r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
            "dt = time.perf_counter() - t\n"
            "print(dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, r.returncode)")
    out = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, env=env, check=True).stdout.split()
    if out[2] != "0":
        raise SystemExit(f"{' '.join(cmd)} exited {out[2]}")
    return float(out[0]), int(out[1])


def make_idx(folder: Path, n: int) -> Path:
    """A 60k-image IDX file: Fashion-MNIST's train images, or embedded digits repeated."""
    if FASHION_TRAIN.exists() and n == 60_000:
        return FASHION_TRAIN
    import numpy as np

    from digitnet.datasets import load_dataset
    from digitnet.idx import write_idx

    x = load_dataset("embedded").train_images
    path = folder / "images-idx3-ubyte"
    write_idx(path, np.resize(x, (n, 28, 28)))
    return path


def make_pngs(folder: Path, n: int) -> Path:
    """n PNGs of real digits drawn as people hand them over: dark on light, 64×64."""
    from PIL import Image

    from digitnet.datasets import load_dataset

    x = load_dataset("embedded").test_images
    d = folder / "pngs"
    d.mkdir()
    for i in range(n):
        Image.fromarray(255 - x[i % len(x)]).resize((64, 64)).save(d / f"{i:05d}.png")
    return d


def accuracy(model: str, folder: Path, rows=None) -> tuple[float, int, list]:
    """Share of images in ``folder`` (labels.csv: file,label) the model reads right, and the misses."""
    from digitnet.modelfile import load_model
    from digitnet.predict import predict_inputs

    labels = {r["file"]: int(r["label"]) for r in csv.DictReader(open(folder / "labels.csv"))}
    paths = [str(folder / f) for f in labels]
    wrong = []
    for r, (name, y) in zip(predict_inputs(load_model(model), paths), labels.items()):
        if r.label != y:
            wrong.append((name, y, r.label, r.error))
    return 1 - len(wrong) / len(labels), len(labels), wrong


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model file [default: the shipped default]")
    ap.add_argument("--quick", action="store_true", help="10k IDX, 1k PNGs, 200 generated images")
    args = ap.parse_args()
    from digitnet.modelfile import default_model_path

    model = args.model or str(default_model_path())
    n_idx, n_png, n_gen = (10_000, 1_000, 200) if args.quick else (60_000, 10_000, 500)
    env = dict(os.environ, DIGITNET_MODEL=model)
    digitnet = str(BIN / "digitnet")
    results = {"model": model}
    with tempfile.TemporaryDirectory(prefix="predict-bench-") as tmp:
        tmp = Path(tmp)
        idx = make_idx(tmp, n_idx)
        seconds, rss = timed([digitnet, "predict", str(idx), "--format", "csv"], env)
        results.update(idx_file=str(idx), idx_images=n_idx, idx_images_per_s=round(n_idx / seconds), idx_peak_rss_mb=round(rss / 2**20))
        pngs = make_pngs(tmp, n_png)
        seconds, rss = timed([digitnet, "predict", str(pngs), "--format", "csv"], env)
        results.update(png_images=n_png, png_images_per_s=round(n_png / seconds), png_peak_rss_mb=round(rss / 2**20))
        one = next(pngs.iterdir())
        timed([digitnet, "predict", str(one)], env)  # warm the OS file cache once, as a user's second call would be
        cold = statistics.median(timed([digitnet, "predict", str(one)], env)[0] for _ in range(5))
        base = statistics.median(timed([sys.executable, "-c", "import numpy, PIL.Image"])[0] for _ in range(5))
        results.update(cold_one_png_s=round(cold, 3), import_numpy_pil_s=round(base, 3), cold_ratio=round(cold / base, 2))
        from digit_images import write_set

        gen = tmp / "generated"
        write_set(gen, n_gen, seed=7)
        acc, n, wrong = accuracy(model, gen)
        results.update(generated_accuracy=round(acc, 4), generated_n=n)
    if SAMPLES.is_dir():
        acc, n, wrong_samples = accuracy(model, SAMPLES)
        results.update(samples_accuracy=round(acc, 4), samples_n=n, samples_wrong=[f"{f} ({y} read as {p})" for f, y, p, _ in wrong_samples])
    for k, v in results.items():
        print(f"{k:>22}  {v}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
