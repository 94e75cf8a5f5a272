"""``make bench``'s loaded run: training speed alone and beside one CPU-bound neighbour.

Each workload trains (Fashion-MNIST, as many epochs as fit in ``--time-limit`` seconds; the
rate is over that stretch) first alone and then while a neighbour process spins on one
core (``python -c "while True: pass"``), for digitnet at ``--threads auto`` (the default),
pinned to 1 and to all cores, and for PyTorch CPU at all cores and at one, in the same run.
The figure is the loaded/alone ratio of epoch time: 2.0 would be exactly half the machine.
Then batched inference (the shipped CNN over the 10k test images, as predict and evaluate run
it) the same way, and two ``digitnet train`` processes started together, each against one run alone.
Alone, digitnet auto and all cores run three times, interleaved, and the medians stand: on a
shared host a single 10 s run can meet a busy spell.

digitnet runs through ``digitnet.training.train``, the code ``digitnet train`` runs, so the
thread governor (``digitnet/threads.py``) is what is measured.

    .venv/bin/python benchmarks/loaded.py            # everything (~12 minutes)
    .venv/bin/python benchmarks/loaded.py --quick    # two workloads, shorter cuts, no files

Writes ``benchmarks/results/loaded.json`` and its table into ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

import conv_trainers  # noqa: E402
import trainers  # noqa: E402

README_BEGIN, README_END = "<!-- loaded:begin -->", "<!-- loaded:end -->"


@contextlib.contextmanager
def neighbour():
    """One CPU-bound process for the length of the block."""
    p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def digitnet_rate(config_kw: dict, dataset, threads: int | None, time_limit: float) -> float:
    """Samples/s of ``training.train`` at ``threads`` (None: auto) over its first
    ``time_limit`` seconds: as many epochs as fit (one epoch of a small MLP is a fraction of a
    second, shorter than a real run's start)."""
    from digitnet.training import TrainConfig

    config = TrainConfig(epochs=1000, schedule="constant", seed=0, augment=False, val_split=0.0, **config_kw)
    seconds, samples, _ = trainers.training_epoch(config, dataset, threads, time_limit)
    return samples / max(seconds, 1e-9)


def workloads(quick: bool) -> list[tuple[str, dict, object]]:
    """(name, TrainConfig settings, the PyTorch epoch for it) per workload."""
    rows = []
    for w in trainers.WORKLOADS:
        kw = dict(hidden=w.hidden, activation=w.activation, cost=w.cost, batch_size=w.batch_size, lr=w.lr,
                  momentum=w.momentum, l2=w.l2)
        rows.append((w.name, kw, lambda x, y, order, t, lim, w=w: trainers.torch_epoch(w, x, y, order, t, lim)))
    for w in (conv_trainers.CONV_WORKLOADS[0], conv_trainers.CONV_WORKLOADS[3]):
        kw = dict(layers=w.layers, activation="relu", cost="cross-entropy", batch_size=w.batch_size, lr=w.lr,
                  momentum=w.momentum, l2=w.l2)
        rows.append((w.name, kw, lambda x, y, order, t, lim, w=w: conv_trainers.torch_epoch(w, x, y, order, t, lim)))
    return [rows[1], rows[4]] if quick else rows


def bench(dataset, x, labels, time_limit: float, use_torch: bool, quick: bool, repeats: int = 3) -> list[dict]:
    """Rates alone and loaded for every workload and implementation (digitnet auto and all
    cores alone: the median of ``repeats`` interleaved runs)."""
    cores = len(os.sched_getaffinity(0))
    order = np.random.default_rng(99).permutation(len(x)).astype(np.int64)
    impls = {"digitnet auto": None, "digitnet 1 thread": 1, f"digitnet {cores} threads": cores}
    out = []
    for name, kw, torch_epoch in workloads(quick):
        row = {"workload": name, "alone": {}, "loaded": {}}
        runs = {k: (lambda t=t: digitnet_rate(kw, dataset, t, time_limit)) for k, t in impls.items()}
        if use_torch:
            for t, label in ((cores, f"PyTorch {cores} threads"), (1, "PyTorch 1 thread")):
                runs[label] = lambda t=t: (lambda s, d, _: d / s)(*torch_epoch(x, labels, order, t, time_limit))
        for t in (1, cores):                            # compile (or load) the kernels first, serial and parallel
            digitnet_rate(kw, dataset, t, 0.5)
        for key, run in runs.items():
            row["alone"][key] = run()
        # auto against all cores alone (the quiet-machine promise) varies run to run on a
        # shared host: both again, interleaved, ``repeats`` in all; the medians are the figures
        pair = ("digitnet auto", f"digitnet {cores} threads")
        quiet = {k: [row["alone"][k]] for k in pair}
        for _ in range(repeats - 1):
            for k in pair:
                quiet[k].append(runs[k]())
        row["alone_runs"] = quiet
        row["alone"].update({k: statistics.median(v) for k, v in quiet.items()})
        row["auto_vs_all_cores_alone"] = row["alone"][pair[0]] / row["alone"][pair[1]]
        with neighbour():
            for key, run in runs.items():
                row["loaded"][key] = run()
        row["ratio"] = {k: row["alone"][k] / row["loaded"][k] for k in runs}          # loaded/alone time
        row["auto_vs_1_thread_loaded"] = row["loaded"]["digitnet auto"] / row["loaded"]["digitnet 1 thread"]
        print(f"{name}: " + ", ".join(f"{k} {row['alone'][k]:.0f}/s → {row['loaded'][k]:.0f}/s ({row['ratio'][k]:.2f}×)"
                                      for k in runs), flush=True)
        out.append(row)
    return out


def inference(x: np.ndarray, time_limit: float) -> list[dict]:
    """Images/s of batched inference (``Network.predict_proba``, as predict and evaluate run
    it) alone and loaded, with the inference governor at auto and pinned to 1 and all cores."""
    from digitnet import threads
    from digitnet.modelfile import load_model

    cores = len(os.sched_getaffinity(0))
    models = {"the shipped CNN (models/digitnet.npz)": load_model(ROOT / "models" / "digitnet.npz").network}
    rows = []
    for name, net in models.items():
        row = {"workload": f"inference, {name}", "alone": {}, "loaded": {}}

        def rate(pinned):
            threads._INFERENCE = threads.Governor(threads.BlasThreads(), pinned=pinned, window=0.1)
            t0, n = time.perf_counter(), 0
            while time.perf_counter() - t0 < time_limit:
                net.predict_proba(x)
                n += len(x)
            return n / (time.perf_counter() - t0)

        impls = {"digitnet auto": None, "digitnet 1 thread": 1, f"digitnet {cores} threads": cores}
        rate(1)
        for where in ("alone", "loaded"):
            with neighbour() if where == "loaded" else contextlib.nullcontext():
                for key, pinned in impls.items():
                    row[where][key] = rate(pinned)
        threads._INFERENCE = None
        row["ratio"] = {k: row["alone"][k] / row["loaded"][k] for k in impls}
        row["auto_vs_1_thread_loaded"] = row["loaded"]["digitnet auto"] / row["loaded"]["digitnet 1 thread"]
        row["auto_vs_all_cores_alone"] = row["alone"]["digitnet auto"] / row["alone"][f"digitnet {cores} threads"]
        print(f"{row['workload']}: " + ", ".join(f"{k} {row['alone'][k]:.0f}/s → {row['loaded'][k]:.0f}/s "
                                                 f"({row['ratio'][k]:.2f}×)" for k in impls), flush=True)
        rows.append(row)
    return rows


def two_runs(epochs: int) -> dict:
    """Training seconds of ``digitnet train --preset mlp`` (Fashion-MNIST, no augmentation)
    alone, then of two started together."""
    with tempfile.TemporaryDirectory() as tmp:
        def start(i: int):
            cmd = [str(Path(sys.executable).parent / "digitnet"), "train", "--preset", "mlp", "--data", "fashion-mnist",
                   "--epochs", str(epochs), "--no-augment", "--val-split", "0", "--json", "--force",
                   "--out", str(Path(tmp) / f"m{i}.npz")]
            return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

        def seconds(p) -> float:
            return float(json.loads(p.communicate()[0])["seconds"])

        alone = seconds(start(0))
        pair = [start(1), start(2)]
        together = [seconds(p) for p in pair]
    return {"command": "digitnet train --preset mlp --data fashion-mnist --epochs %d --no-augment --val-split 0" % epochs,
            "alone_seconds": alone, "together_seconds": together, "ratios": [t / alone for t in together]}


def table(result: dict) -> str:
    """The README's table of one loaded run."""
    rows = result["workloads"]
    keys = list(rows[0]["ratio"])
    lines = [f"_Last run: {result['date']}; load average before {result['load_before']}._", "",
             "Training time beside one CPU-bound neighbour ÷ alone (2.0 = exactly half the machine; samples/s alone → loaded):",
             "", "| workload | " + " | ".join(keys) + " | auto ÷ 1 thread, loaded | auto ÷ all cores, alone |",
             "|---|" + "---|" * (len(keys) + 2)]
    for r in rows + result.get("inference", []):
        cells = [f"**{r['ratio'][k]:.2f}×** ({r['alone'][k] / 1e3:.1f}k → {r['loaded'][k] / 1e3:.1f}k)"
                 if k in r["ratio"] else "" for k in keys]
        quiet = r.get("auto_vs_all_cores_alone")
        lines.append(f"| {r['workload']} | " + " | ".join(cells) + f" | {r['auto_vs_1_thread_loaded']:.2f} | "
                     + (f"{quiet:.2f} |" if quiet is not None else "|"))
    t = result.get("two_runs")
    if t:
        lines += ["", f"Two `{t['command']}` started together: {t['together_seconds'][0]:.1f} s and "
                      f"{t['together_seconds'][1]:.1f} s of training against {t['alone_seconds']:.1f} s alone "
                      f"({t['ratios'][0]:.2f}× and {t['ratios'][1]:.2f}×)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the loaded benchmark and record it."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two workloads, 3 s cuts, no files written")
    ap.add_argument("--time-limit", type=float, default=None, help="seconds of each timed (part) epoch")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "loaded.json")
    args = ap.parse_args(argv)

    from digitnet.datasets import load_dataset

    dataset = load_dataset("fashion-mnist")
    x = dataset.train_images.reshape(len(dataset.train_images), -1).astype(np.float32) / np.float32(255)
    labels = dataset.train_labels.astype(np.int64)
    use_torch = not args.no_torch and trainers.torch_available()
    limit = args.time_limit or (3.0 if args.quick else 10.0)
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "load_before": " ".join(f"{v:.2f}" for v in os.getloadavg()),
              "time_limit": limit, "cores": len(os.sched_getaffinity(0)),
              "workloads": bench(dataset, x, labels, limit, use_torch, args.quick, repeats=1 if args.quick else 3)}
    result["inference"] = inference(dataset.test_images.reshape(-1, 784).astype(np.float32) / np.float32(255), limit)
    if not args.quick:
        result["two_runs"] = two_runs(2)
        print(f"two runs together: {result['two_runs']['ratios']}")
    result["load_after"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(table(result))
    if args.quick:
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    readme = HERE / "README.md"
    text = readme.read_text()
    if README_BEGIN in text:
        head, rest = text.split(README_BEGIN, 1)
        text = head + README_BEGIN + "\n" + table(result) + "\n" + README_END + rest.split(README_END, 1)[1]
    else:
        text += f"\n## Under load\n\n{README_BEGIN}\n{table(result)}\n{README_END}\n"
    readme.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
