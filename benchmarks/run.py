"""``make bench``: digitnet's training speed side by side with plain NumPy and PyTorch CPU.

One run, one process, the same data (Fashion-MNIST, 60,000 training images, float32) and the
same starting weights for every implementation. Each workload trains one epoch per
implementation, the implementations taking turns, three times; the table shows the median
samples/s and the ratios. Then: inference images/s, cold start of ``digitnet --help``, numba
compile time cold vs cached, and peak memory of a 60k training run.

    .venv/bin/python benchmarks/run.py            # the whole thing (a few minutes)
    .venv/bin/python benchmarks/run.py --quick    # 1 repeat on 12k images, no subprocess probes

Writes ``benchmarks/results/latest.json`` and the table into ``benchmarks/README.md``.
The machine is shared: absolute figures move with its load, ratios within one run much less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

import conv_trainers  # noqa: E402
import probes  # noqa: E402
import trainers  # noqa: E402
from trainers import WORKLOADS, Workload  # noqa: E402

README_BEGIN, README_END = "<!-- bench:begin -->", "<!-- bench:end -->"


def blas_info() -> list[dict]:
    """The BLAS libraries loaded (NumPy's, which the kernels call; SciPy's if installed; torch's),
    via threadpoolctl."""
    try:
        import scipy.linalg.cython_blas  # noqa: F401
    except ImportError:
        pass
    from threadpoolctl import threadpool_info

    keep = ("user_api", "internal_api", "version", "num_threads", "architecture", "prefix", "filepath")
    return [{k: v for k, v in lib.items() if k in keep} for lib in threadpool_info()]


def accuracy(net, x: np.ndarray, labels: np.ndarray) -> float:
    """Share of ``labels`` that ``net`` gets right on x (n, 784): the sanity check that it learned."""
    return float((net.predict_proba(x).argmax(axis=1) == labels).mean())


def bench_workload(w: Workload, dataset, x, labels, x_test, y_test, repeats: int, threads: int,
                   use_torch: bool, chunk_check: bool, time_limit: float) -> dict:
    """Median samples/s of one epoch for each implementation, taking turns ``repeats`` times."""
    from threadpoolctl import threadpool_limits

    n = len(x)
    times: dict[str, list[float]] = {"digitnet": [], "numpy": []}
    if threads > 1:
        times["digitnet_1thread"], times["numpy_1thread"] = [], []
    if use_torch:
        times["torch"] = []
        if threads > 1:
            times["torch_1thread"] = []
    if chunk_check:
        times["kernel_one_call"], times["kernel_chunked_4096"] = [], []
    samples = {k: [] for k in times}
    nets = {}

    def record(key, seconds, done, net=None):
        times[key].append(seconds)
        samples[key].append(done)
        if net is not None and done == n:           # a net cut short is no check of learning
            nets[key] = net

    for rep in range(repeats):
        order = np.random.default_rng([1234, rep]).permutation(n).astype(np.int64)
        record("digitnet", *trainers.digitnet_epoch(w, dataset, threads, time_limit))
        if "digitnet_1thread" in times:
            record("digitnet_1thread", *trainers.digitnet_epoch(w, dataset, 1, time_limit)[:2])
        with threadpool_limits(limits=threads, user_api="blas"):
            record("numpy", *trainers.numpy_epoch(w, x, labels, order, time_limit))
        if "numpy_1thread" in times:
            with threadpool_limits(limits=1, user_api="blas"):
                record("numpy_1thread", *trainers.numpy_epoch(w, x, labels, order, time_limit)[:2])
        if chunk_check:              # one BLAS thread: only the calls differ, and no collapse (README)
            with threadpool_limits(limits=1, user_api="blas"):
                record("kernel_one_call", trainers.digitnet_kernel_epoch(w, x, labels, order, None), n)
                record("kernel_chunked_4096", trainers.digitnet_kernel_epoch(w, x, labels, order, 4096), n)
        if use_torch:
            record("torch", *trainers.torch_epoch(w, x, labels, order, threads, time_limit))
            if "torch_1thread" in times:
                record("torch_1thread", *trainers.torch_epoch(w, x, labels, order, 1, time_limit)[:2])
    # a trainer cut short by the time limit leaves no network: that check is then skipped
    rates = {k: statistics.median(d / s for d, s in zip(samples[k], times[k])) for k in times}
    row = {"workload": w.name, "sizes": list(w.sizes), "activation": w.activation, "cost": w.cost,
           "batch_size": w.batch_size, "lr": w.lr, "momentum": w.momentum, "l2": w.l2, "samples": n,
           "seconds": times, "samples_timed": samples,
           "cut_short": sorted(k for k in times if min(samples[k]) < n),
           "samples_per_second": rates,
           "test_accuracy_after_epoch": {k: accuracy(net, x_test, y_test) for k, net in nets.items()}}
    sps = row["samples_per_second"]
    best = {k: max(sps[k], sps.get(k + "_1thread", 0)) for k in ("digitnet", "numpy", "torch") if k in sps}
    row["digitnet_vs_numpy"] = sps["digitnet"] / sps["numpy"]
    row["digitnet_vs_numpy_best"] = best["digitnet"] / best["numpy"]
    if use_torch:
        row["digitnet_vs_torch"] = sps["digitnet"] / sps["torch"]
        row["digitnet_vs_torch_best"] = best["digitnet"] / best["torch"]
    # inference: batched NumPy forward (Network.predict_proba) of a trained net over the test images
    net = nets.get("digitnet") or trainers.initial_network(w)
    inf = []
    for _ in range(3):
        t0 = time.perf_counter()
        net.predict_proba(x_test)
        inf.append(time.perf_counter() - t0)
    row["inference_images_per_second"] = {"digitnet_numpy_forward": len(x_test) / statistics.median(inf)}
    if use_torch:
        tt = [trainers.torch_inference(net, x_test, threads) for _ in range(3)]
        row["inference_images_per_second"]["torch"] = len(x_test) / statistics.median(tt)
    return row


def fmt_k(v: float, cut: bool = False) -> str:
    """Thousands, one decimal below 10k; a † when the epoch was cut short by the time limit."""
    return (f"{v / 1000:.0f}k" if v >= 10_000 else f"{v / 1000:.1f}k") + ("†" if cut else "")


def table(result: dict) -> str:
    """The Markdown table of the training rows, then the other measurements."""
    use_torch = result["torch"] is not None
    t = result["threads"]
    cols = [("digitnet", f"digitnet ({t} thr)"), ("digitnet_1thread", "digitnet (1 thr)"),
            ("numpy", f"NumPy ({t} thr)"), ("numpy_1thread", "NumPy (1 thr)"),
            ("torch", f"PyTorch ({t} thr)"), ("torch_1thread", "PyTorch (1 thr)")]
    cols = [(k, h) for k, h in cols if k in result["training"][0]["samples_per_second"]]
    ratios = [("digitnet_vs_numpy", f"digitnet/NumPy ({t} thr)"), ("digitnet_vs_numpy_best", "best/best"),
              ("digitnet_vs_torch", f"digitnet/PyTorch ({t} thr)"), ("digitnet_vs_torch_best", "best/best")]
    ratios = [(k, h) for k, h in ratios if k in result["training"][0]]
    head = ["workload", *(h for _, h in cols), *(h for _, h in ratios),
            "test acc. after the epoch (dn/np" + ("/pt)" if use_torch else ")")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["training"]:
        s = r["samples_per_second"]
        acc = r["test_accuracy_after_epoch"]
        c = set(r["cut_short"])
        cells = [r["workload"], *(fmt_k(s[k], k in c) for k, _ in cols), *(f"{r[k]:.2f}×" for k, _ in ratios),
                 "/".join(f"{acc[k]:.3f}" if k in acc else "–" for k in ("digitnet", "numpy", "torch")
                          if k == "torch" and use_torch or k != "torch")]
        lines.append("| " + " | ".join(cells) + " |")
    out = ["Training, samples/s (one epoch of %d Fashion-MNIST images, median of %d, float32; "
           "best/best: each implementation at its faster thread setting):"
           % (result["training"][0]["samples"], result["repeats"]), "", *lines, "",
           "† cut short by the time limit (%g s an epoch); the rate is over the part done." % result["time_limit"],
           ""]
    if any("kernel_one_call" in r["samples_per_second"] for r in result["training"]):
        out += ["Chunking (kernel called directly on one BLAS thread; one call per epoch vs one call per ~4096 "
                "samples, as training does):",
                ""]
        out += [f"- {r['workload']}: {fmt_k(r['samples_per_second']['kernel_one_call'])} vs "
                f"{fmt_k(r['samples_per_second']['kernel_chunked_4096'])} samples/s"
                for r in result["training"] if "kernel_one_call" in r["samples_per_second"]]
        out.append("")
    out += ["Inference, images/s (batched forward over the 10,000 test images):", ""]
    for r in result["training"]:
        i = r["inference_images_per_second"]
        out.append(f"- {r['sizes']}: digitnet (NumPy forward) {fmt_k(i['digitnet_numpy_forward'])}"
                   + (f", PyTorch {fmt_k(i['torch'])}" if "torch" in i else ""))
    p = result.get("probes") or {}
    if p:
        out += [""]
        if "cold_start" in p:
            c = p["cold_start"]
            out.append(f"- `digitnet --help` cold start: {c['digitnet_help_seconds']:.3f} s "
                       f"(bare `python -c pass`: {c['python_startup_seconds']:.3f} s; imports numba: "
                       f"{'yes' if c['help_imports_numba'] else 'no'})")
        if "numba_compile" in p:
            c = p["numba_compile"]
            out.append(f"- numba kernels, import + first calls: cold (empty cache) {c['cold']['total']:.2f} s, "
                       f"cached {c['cached']['total']:.2f} s (train_batches {c['cold']['train_batches']:.2f} → "
                       f"{c['cached']['train_batches']:.3f} s, warp_images {c['cold']['warp_images']:.2f} → "
                       f"{c['cached']['warp_images']:.3f} s"
                       + (f", the fused conv step {c['cold']['conv_step']:.2f} → {c['cached']['conv_step']:.3f} s"
                          if "conv_step" in c["cold"] else "")
                       + (f", the optimizer steps {c['cold']['optimizers']:.2f} → {c['cached']['optimizers']:.3f} s"
                          if "optimizers" in c["cold"] else "") + ")")
        if "peak_memory" in p:
            m = p["peak_memory"]
            out.append(f"- peak memory of `{m['command']}`: {m['peak_rss_mib']:.0f} MiB ({m['seconds']:.1f} s wall"
                       + (f", exit {m['exit_code']}: {m.get('error', '')}" if m["exit_code"] else "") + ")")
        if p.get("predict_cold") is not None:
            c = p["predict_cold"]
            if "cold_one_png_s" in c:
                out.append(f"- `digitnet predict one.png` cold (benchmarks/predict_bench.py --quick): "
                           f"{c['cold_one_png_s']:.3f} s (`python -c 'import numpy, PIL.Image'`: "
                           f"{c.get('import_numpy_pil_s', float('nan')):.3f} s); predict on a {c.get('idx_images')}-image "
                           f"IDX file: {c.get('idx_images_per_s')} images/s")
            else:
                out.append(f"- predict benchmark failed: {json.dumps(c)}")
    env = result["environment"]
    blas = "; ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('prefix')}, {b.get('architecture')}, "
                     f"{b.get('num_threads')} threads)" for b in env["blas"])
    out += ["", f"Threads: {result['threads']} (BLAS cap for every implementation; PyTorch "
                f"`set_num_threads({result['threads']})`). BLAS: {blas}. OPENBLAS_CORETYPE="
                f"{env['OPENBLAS_CORETYPE']}. {env['python']}, NumPy {env['numpy']}, numba {env['numba']}"
                + (f", PyTorch {result['torch']}" if use_torch else "") + f"; {env['cpu_count']} cores; "
                f"load average before the run {env['loadavg_before']}, after {env.get('loadavg_after', '?')}."]
    return "\n".join(out)


def update_readme(text: str, when: str) -> None:
    """Replace the table between the bench markers in benchmarks/README.md (if present)."""
    readme = HERE / "README.md"
    if not readme.exists():
        return
    body = readme.read_text()
    if README_BEGIN not in body or README_END not in body:
        return
    head, rest = body.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(f"{head}{README_BEGIN}\n_Last run: {when}._\n\n{text}\n{README_END}{tail}")
    os.replace(tmp, readme)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="epochs per implementation and workload (median)")
    ap.add_argument("--quick", action="store_true", help="1 repeat on 12k images, no subprocess probes, no files")
    ap.add_argument("--only", default="", help="run only workloads whose name contains this text")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="thread cap for every implementation")
    ap.add_argument("--no-torch", action="store_true", help="leave PyTorch out even when installed")
    ap.add_argument("--no-probes", action="store_true", help="skip cold start, compile time and peak memory")
    ap.add_argument("--no-conv", action="store_true", help="skip the convolutional workloads (conv_trainers.py)")
    ap.add_argument("--conv-time-limit", type=float, default=15.0,
                    help="seconds after which one timed epoch of a conv workload is cut short")
    ap.add_argument("--chunk-check", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the kernel called once per epoch vs once per 4096 samples (as training does)")
    ap.add_argument("--time-limit", type=float, default=4.0,
                    help="seconds after which one timed epoch is cut short (its rate still counts)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    args = ap.parse_args(argv)

    import numba

    from digitnet.datasets import load_dataset

    use_torch = not args.no_torch and trainers.torch_available()
    torch_version = None
    if use_torch:
        import torch
        torch_version = torch.__version__
    loadavg = os.getloadavg()
    dataset = load_dataset("fashion-mnist")
    if args.quick:
        from dataclasses import replace
        dataset = replace(dataset, train_images=dataset.train_images[:12000], train_labels=dataset.train_labels[:12000])
        args.repeats = 1
    x = dataset.train_images.reshape(len(dataset.train_images), -1).astype(np.float32) / np.float32(255)
    labels = dataset.train_labels.astype(np.int64)
    x_test = dataset.test_images.reshape(len(dataset.test_images), -1).astype(np.float32) / np.float32(255)
    y_test = dataset.test_labels

    # compile (or load) the kernels before any clock starts
    from dataclasses import replace
    small = replace(dataset, train_images=dataset.train_images[:256], train_labels=dataset.train_labels[:256])
    trainers.digitnet_epoch(WORKLOADS[0], small, args.threads)
    if use_torch:
        trainers.torch_epoch(WORKLOADS[1], x[:2048], labels[:2048], np.arange(2048, dtype=np.int64), 1)

    result = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "repeats": args.repeats, "threads": args.threads, "time_limit": args.time_limit, "command": " ".join(["benchmarks/run.py", *(argv or sys.argv[1:])]),
              "torch": torch_version, "training": []}
    for w in WORKLOADS:
        if args.only and args.only not in w.name:
            continue
        t0 = time.perf_counter()
        row = bench_workload(w, dataset, x, labels, x_test, y_test, args.repeats, args.threads, use_torch,
                             args.chunk_check, args.time_limit)
        result["training"].append(row)
        s = row["samples_per_second"]
        print(f"{w.name}: " + ", ".join(f"{k} {fmt_k(v)}/s" for k, v in s.items())
              + f"  [{time.perf_counter() - t0:.0f} s]", flush=True)
    if not args.no_conv:
        result["conv"] = conv_trainers.run(dataset, x, labels, x_test, y_test, args.repeats, args.threads, use_torch,
                                           args.conv_time_limit, args.only)
    result["environment"] = {
        "python": f"Python {platform.python_version()}", "numpy": np.__version__, "numba": numba.__version__,
        "cpu_count": os.cpu_count(), "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
        "loadavg_before": " ".join(f"{v:.2f}" for v in loadavg), "blas": blas_info()}
    if not (args.quick or args.no_probes):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="digitnet-bench-") as tmp:
            model = os.path.join(tmp, "fashion-1-epoch.npz")
            result["probes"] = {"cold_start": probes.cold_help(), "numba_compile": probes.numba_compile(),
                                "peak_memory": probes.peak_memory(model)}
            result["probes"]["predict_cold"] = probes.predict_cold(model if os.path.exists(model) else None)
        print("probes done", flush=True)
    result["environment"]["loadavg_after"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    text = table(result) if result["training"] else ""
    if result.get("conv", {}).get("rows"):
        text += ("\n\n" if text else "") + conv_trainers.table(result["conv"])
    print()
    print(text)
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, args.out)
        if not args.only:
            update_readme(text, result["when"])
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
