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

import probes  # noqa: E402
import trainers  # noqa: E402
from trainers import WORKLOADS, Workload  # noqa: E402

README_BEGIN, README_END = "<!-- bench:begin -->", "<!-- bench:end -->"


def blas_info() -> list[dict]:
    """The BLAS libraries loaded (NumPy's, SciPy's which numba calls, torch's), via threadpoolctl."""
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import threadpool_info

    keep = ("user_api", "internal_api", "version", "num_threads", "architecture", "prefix", "filepath")
    return [{k: v for k, v in lib.items() if k in keep} for lib in threadpool_info()]


def accuracy(net, x: np.ndarray, labels: np.ndarray) -> float:
    """Share of ``labels`` that ``net`` gets right on x (n, 784): the sanity check that it learned."""
    return float((net.predict_proba(x).argmax(axis=1) == labels).mean())


def bench_workload(w: Workload, dataset, x, labels, x_test, y_test, repeats: int, threads: int,
                   use_torch: bool, chunk_check: bool) -> dict:
    """Median samples/s of one epoch for each implementation, taking turns ``repeats`` times."""
    from threadpoolctl import threadpool_limits

    n = len(x)
    times: dict[str, list[float]] = {"digitnet": [], "numpy": []}
    if use_torch:
        times["torch"] = []
    if chunk_check:
        times["kernel_one_call"], times["kernel_chunked_4096"] = [], []
    nets = {}
    for rep in range(repeats):
        order = np.random.default_rng([1234, rep]).permutation(n).astype(np.int64)
        s, nets["digitnet"] = trainers.digitnet_epoch(w, dataset, threads)
        times["digitnet"].append(s)
        with threadpool_limits(limits=threads, user_api="blas"):
            s, nets["numpy"] = trainers.numpy_epoch(w, x, labels, order)
            times["numpy"].append(s)
            if chunk_check:
                times["kernel_one_call"].append(trainers.digitnet_kernel_epoch(w, x, labels, order, None))
                times["kernel_chunked_4096"].append(trainers.digitnet_kernel_epoch(w, x, labels, order, 4096))
        if use_torch:
            s, nets["torch"] = trainers.torch_epoch(w, x, labels, order, threads)
            times["torch"].append(s)
    row = {"workload": w.name, "sizes": list(w.sizes), "activation": w.activation, "cost": w.cost,
           "batch_size": w.batch_size, "lr": w.lr, "momentum": w.momentum, "l2": w.l2, "samples": n,
           "seconds": times,
           "samples_per_second": {k: n / statistics.median(v) for k, v in times.items()},
           "test_accuracy_after_epoch": {k: accuracy(net, x_test, y_test) for k, net in nets.items()}}
    sps = row["samples_per_second"]
    row["digitnet_vs_numpy"] = sps["digitnet"] / sps["numpy"]
    if use_torch:
        row["digitnet_vs_torch"] = sps["digitnet"] / sps["torch"]
    # inference: batched NumPy forward (Network.predict_proba) of the trained net over the test images
    net = nets["digitnet"]
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


def fmt_k(v: float) -> str:
    return f"{v / 1000:.0f}k" if v >= 10_000 else f"{v / 1000:.1f}k"


def table(result: dict) -> str:
    """The Markdown table of the training rows, then the other measurements."""
    use_torch = result["torch"] is not None
    head = ["workload", "digitnet", "NumPy", *(["PyTorch"] if use_torch else []), "digitnet/NumPy",
            *(["digitnet/PyTorch"] if use_torch else []), "test acc. (dn/np" + ("/pt)" if use_torch else ")")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["training"]:
        s = r["samples_per_second"]
        acc = r["test_accuracy_after_epoch"]
        cells = [r["workload"], fmt_k(s["digitnet"]), fmt_k(s["numpy"]), *([fmt_k(s["torch"])] if use_torch else []),
                 f"{r['digitnet_vs_numpy']:.2f}×", *([f"{r['digitnet_vs_torch']:.2f}×"] if use_torch else []),
                 "/".join(f"{acc[k]:.3f}" for k in ("digitnet", "numpy", "torch") if k in acc)]
        lines.append("| " + " | ".join(cells) + " |")
    out = ["Training, samples/s (one epoch of %d Fashion-MNIST images, median of %d, float32):"
           % (result["training"][0]["samples"], result["repeats"]), "", *lines, ""]
    if any("kernel_one_call" in r["samples_per_second"] for r in result["training"]):
        out += ["Chunking (kernel called directly; one call per epoch vs one call per ~4096 samples, as training does):",
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
                       f"{c['cached']['warp_images']:.3f} s)")
        if "peak_memory" in p:
            m = p["peak_memory"]
            out.append(f"- peak memory of `{m['command']}`: {m['peak_rss_mib']:.0f} MiB ({m['seconds']:.1f} s wall"
                       + (f", exit {m['exit_code']}: {m.get('error', '')}" if m["exit_code"] else "") + ")")
        if p.get("predict_cold") is not None:
            out.append(f"- `digitnet predict one.png` cold: {json.dumps(p['predict_cold'])}")
    env = result["environment"]
    blas = "; ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('prefix')}, {b.get('architecture')}, "
                     f"{b.get('num_threads')} threads)" for b in env["blas"])
    out += ["", f"Threads: {result['threads']} (BLAS cap for every implementation; PyTorch "
                f"`set_num_threads({result['threads']})`). BLAS: {blas}. OPENBLAS_CORETYPE="
                f"{env['OPENBLAS_CORETYPE']}. {env['python']}, NumPy {env['numpy']}, numba {env['numba']}"
                + (f", PyTorch {result['torch']}" if use_torch else "") + f"; {env['cpu_count']} cores; "
                f"load average before the run {env['loadavg_before']}."]
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
    ap.add_argument("--chunk-check", action="store_true",
                    help="also time the kernel called once per epoch vs once per 4096 samples")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    args = ap.parse_args(argv)

    import numba

    from digitnet.datasets import load_dataset
    from digitnet.training import train, TrainConfig  # noqa: F401  (compiles nothing yet)

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
        trainers.torch_epoch(WORKLOADS[1], x[:2048], labels[:2048], np.arange(2048, dtype=np.int64), args.threads)

    result = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "repeats": args.repeats, "threads": args.threads,
              "torch": torch_version, "training": []}
    for w in WORKLOADS:
        if args.only and args.only not in w.name:
            continue
        t0 = time.perf_counter()
        row = bench_workload(w, dataset, x, labels, x_test, y_test, args.repeats, args.threads, use_torch,
                             args.chunk_check)
        result["training"].append(row)
        s = row["samples_per_second"]
        print(f"{w.name}: " + ", ".join(f"{k} {fmt_k(v)}/s" for k, v in s.items())
              + f"  [{time.perf_counter() - t0:.0f} s]", flush=True)
    result["environment"] = {
        "python": f"Python {platform.python_version()}", "numpy": np.__version__, "numba": numba.__version__,
        "cpu_count": os.cpu_count(), "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
        "loadavg_before": " ".join(f"{v:.2f}" for v in loadavg), "blas": blas_info()}
    if not (args.quick or args.no_probes):
        result["probes"] = {"cold_start": probes.cold_help(), "numba_compile": probes.numba_compile(),
                            "peak_memory": probes.peak_memory(), "predict_cold": probes.predict_cold()}
        print("probes done", flush=True)
    result["environment"]["loadavg_after"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    text = table(result)
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
