"""Convolutional workloads for ``make bench``: one epoch of mini-batch SGD three ways, on the
same data, the same starting weights and the same update rule.

* ``digitnet``: the step ``training.train`` takes for these networks, the fused
  ``stack_kernels.StackStep`` (the whole stack in one compiled call a batch; the per-layer
  stand-ins ``Network.cost_and_gradient(..., fast=conv_kernels.FAST)`` for a network it
  does not take), and the optimizer's step training takes per batch
  (``optim_kernels.CompiledSGD``: ``nn.optim.SGD``'s bits in one compiled pass). Set
  ``VIA_TRAINING = True`` to time ``training.train`` itself instead (one epoch, augmentation
  and validation off, its own per-epoch clock).
* ``numpy``: the same network without ``fast``: the NumPy layers of ``digitnet.nn`` (the
  reference the stand-ins are tested against).
* ``torch``: PyTorch CPU, the idiomatic loop (``nn.Conv2d``/``nn.MaxPool2d``/``nn.Linear``,
  ``optim.SGD`` with weight decay on weights only, tensors loaded up front).

Each starts from ``Network.init(..., seed=0)``'s weights and applies v <- mu v - lr (grad +
l2 W) (no decay on biases), W <- W + v, and hands back a ``digitnet.nn.network.Network`` so
the caller can check that all three learned. GFLOP/s figures count 3 × 2 × the layers'
forward multiply-adds (``Layer.macs``) per sample, against the sgemm peak measured here.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np

VIA_TRAINING = False          # True: time digitnet.training.train (see the module docstring)


@dataclass(frozen=True)
class ConvWorkload:
    """A ``--layers`` network on 28×28 images (relu, softmax/cross-entropy) and its SGD settings."""

    name: str
    layers: str
    batch_size: int
    lr: float = 0.05
    momentum: float = 0.9
    l2: float = 1e-4

    def network(self):
        """The seeded starting network every implementation copies."""
        from digitnet.nn.network import Network
        from digitnet.nn.spec import architecture, parse_layers

        layers = architecture(parse_layers(self.layers, "relu"), (1, 28, 28), 10, "softmax")
        return Network.init(layers, (1, 28, 28), "cross-entropy", seed=0)

    def macs(self) -> int:
        """Forward multiply-adds per sample."""
        return sum(layer.macs() for layer in self.network().layers)


LENET5 = "conv6x5p2,pool2,conv16x5,pool2,dense120,dense84"
TWO_CONV = "conv32x5,pool2,conv64x5,pool2,dense256"
CONV_WORKLOADS = (
    ConvWorkload("LeNet-5 (conv6x5p2,pool2,conv16x5,pool2,dense120,dense84), batch 32", LENET5, 32),
    ConvWorkload("LeNet-5 (conv6x5p2,pool2,conv16x5,pool2,dense120,dense84), batch 128", LENET5, 128),
    ConvWorkload("two-conv (conv32x5,pool2,conv64x5,pool2,dense256), batch 32", TWO_CONV, 32),
    ConvWorkload("two-conv (conv32x5,pool2,conv64x5,pool2,dense256), batch 128", TWO_CONV, 128),
)


def sgemm_peak(threads: int, n: int = 2048) -> float:
    """GFLOP/s of NumPy's sgemm (the OpenBLAS the kernels call) on an n³ product, best of 5,
    at ``threads`` BLAS threads: the ceiling the GFLOP/s columns are read against."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    with threadpool_limits(limits=threads, user_api="blas"):
        np.matmul(a, b, out=c)
        best = min(_timed(lambda: np.matmul(a, b, out=c)) for _ in range(5))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------- digitnet
def _sgd_epoch(w: ConvWorkload, net, x, labels, order, fast, time_limit: float) -> tuple[float, int]:
    """(seconds, samples) of one epoch of cost_and_gradient + SGD.step over ``order``; cut
    short after ``time_limit`` seconds (checked every ~4096 samples)."""
    from digitnet.nn.optim import SGD
    from digitnet.optim_kernels import CompiledSGD
    from digitnet.stack_kernels import training_step

    opt = (CompiledSGD if fast is not None else SGD)(net.n_params, w.momentum, w.l2, net.decay_mask())
    step = training_step(net, fast)                 # the step training takes
    g = np.zeros_like(net.params)
    rng = np.random.default_rng(0)
    bs = w.batch_size
    t0 = time.perf_counter()
    done = len(order)
    for start in range(0, len(order), bs):
        if start % 4096 < bs and start and time.perf_counter() - t0 > time_limit:
            done = start
            break
        rows = order[start:start + bs]
        _, g, _ = step(x[rows], labels[rows], rng, g)
        opt.step(net.params, g, w.lr)
    return time.perf_counter() - t0, done


def digitnet_epoch(w: ConvWorkload, dataset, x, labels, order, threads: int,
                   time_limit: float = 1e9) -> tuple[float, int, object]:
    """(seconds, samples, network) for one epoch of digitnet's layer stack with the compiled
    stand-ins, at ``threads`` threads (BLAS and numba)."""
    from threadpoolctl import threadpool_limits

    from digitnet import conv_kernels

    conv_kernels.set_threads(threads)
    if VIA_TRAINING:
        return _training_epoch(w, dataset, threads, time_limit)
    net = w.network()
    with threadpool_limits(limits=threads, user_api="blas"):
        # load (or compile) the kernels and size the work buffers before the clock starts
        warm = net.copy()
        _sgd_epoch(w, warm, x, labels, order[:2 * w.batch_size], conv_kernels.FAST, time_limit)
        seconds, done = _sgd_epoch(w, net, x, labels, order, conv_kernels.FAST, time_limit)
    return seconds, done, (net if done == len(order) else None)


def _training_epoch(w: ConvWorkload, dataset, threads: int, time_limit: float) -> tuple[float, int, object]:
    """``training.train`` for one epoch (augmentation and validation off); see
    ``trainers.training_epoch``."""
    from digitnet.training import TrainConfig

    from trainers import training_epoch

    config = TrainConfig(layers=w.layers, activation="relu", cost="cross-entropy", epochs=1, batch_size=w.batch_size,
                         lr=w.lr, momentum=w.momentum, l2=w.l2, schedule="constant", seed=0, augment=False,
                         val_split=0.0)
    return training_epoch(config, dataset, threads, time_limit)


def numpy_epoch(w: ConvWorkload, x, labels, order, threads: int, time_limit: float = 1e9) -> tuple[float, int, object]:
    """(seconds, samples, network) for one epoch of the NumPy layers (no ``fast``)."""
    from threadpoolctl import threadpool_limits

    net = w.network()
    with threadpool_limits(limits=threads, user_api="blas"):
        seconds, done = _sgd_epoch(w, net, x, labels, order, None, time_limit)
    return seconds, done, (net if done == len(order) else None)


# ----------------------------------------------------------------------------------- PyTorch
def torch_model(net):
    """The PyTorch twin of a digitnet Network (the output softmax lives in the loss), with
    its weights copied; returns (model, weights, biases)."""
    import torch

    from digitnet.nn.layers import Activation, Conv, Dense, Dropout, Flatten, MaxPool

    mods, weights, biases = [], [], []
    for layer, p in zip(net.layers[:-1], net.views[:-1]):
        if isinstance(layer, Conv):
            mod = torch.nn.Conv2d(layer.in_shape[0], layer.filters, layer.kernel, layer.stride, layer.padding)
        elif isinstance(layer, Dense):
            mod = torch.nn.Linear(layer.in_shape[0], layer.units)
        elif isinstance(layer, MaxPool):
            mod = torch.nn.MaxPool2d(layer.size, layer.stride)
        elif isinstance(layer, Activation) and layer.function == "relu":
            mod = torch.nn.ReLU()
        elif isinstance(layer, Flatten):
            mod = torch.nn.Flatten()
        elif isinstance(layer, Dropout):
            mod = torch.nn.Dropout(layer.rate)
        else:
            raise ValueError(f"no PyTorch twin for {layer!r}")
        if p:
            with torch.no_grad():
                mod.weight.copy_(torch.from_numpy(p["W"].copy()))
                mod.bias.copy_(torch.from_numpy(p["b"].copy()))
            weights.append(mod.weight)
            biases.append(mod.bias)
        mods.append(mod)
    return torch.nn.Sequential(*mods), weights, biases


def torch_epoch(w: ConvWorkload, x, labels, order, threads: int, time_limit: float = 1e9) -> tuple[float, int, object]:
    """(seconds, samples, network) for one epoch of the idiomatic PyTorch loop on pre-loaded
    tensors (cut short after ``time_limit`` seconds: then samples < len(x))."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    net = w.network()
    model, weights, biases = torch_model(net)
    opt = torch.optim.SGD([{"params": weights, "weight_decay": w.l2}, {"params": biases, "weight_decay": 0.0}],
                          lr=w.lr, momentum=w.momentum)
    X = torch.from_numpy(x.reshape(len(x), 1, 28, 28))
    Y, order_t = torch.from_numpy(labels), torch.from_numpy(order)
    bs = w.batch_size
    t0 = time.perf_counter()
    done = len(order)
    for start in range(0, len(order), bs):
        if start % 4096 < bs and start and time.perf_counter() - t0 > time_limit:
            done = start
            break
        idx = order_t[start:start + bs]
        loss = F.cross_entropy(model(X[idx]), Y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    if done < len(order):
        return seconds, done, None
    with torch.no_grad():
        for layer, p, mod in zip(net.layers, net.views, model):
            if p:
                p["W"][...] = mod.weight.numpy()
                p["b"][...] = mod.bias.numpy()
    return seconds, done, net


# -------------------------------------------------------------------------------- the run
def _accuracy(net, x_test, y_test) -> float:
    return float((net.predict_proba(x_test).argmax(axis=1) == y_test).mean())


def bench_conv_workload(w: ConvWorkload, dataset, x, labels, x_test, y_test, repeats: int, threads: int,
                        use_torch: bool, time_limit: float) -> dict:
    """Median samples/s of one epoch for digitnet, the NumPy layers and PyTorch, taking turns
    ``repeats`` times on the same shuffled orders; GFLOP/s from the layers' multiply-adds."""
    n = len(x)
    x = x.reshape(n, -1)
    times: dict[str, list[float]] = {"digitnet": [], "numpy": []}
    if use_torch:
        times["torch"] = []
    samples: dict[str, list[int]] = {k: [] for k in times}
    nets = {}
    for rep in range(repeats):
        order = np.random.default_rng([4321, rep]).permutation(n).astype(np.int64)
        for key, run in (("digitnet", lambda: digitnet_epoch(w, dataset, x, labels, order, threads, time_limit)),
                         ("numpy", lambda: numpy_epoch(w, x, labels, order, threads, time_limit)),
                         ("torch", lambda: torch_epoch(w, x, labels, order, threads, time_limit))):
            if key not in times:
                continue
            seconds, done, net = run()
            times[key].append(seconds)
            samples[key].append(done)
            if net is not None:
                nets[key] = net
    rates = {k: statistics.median(d / s for d, s in zip(samples[k], times[k])) for k in times}
    flops = 3 * 2 * w.macs()
    row = {"workload": w.name, "layers": w.layers, "batch_size": w.batch_size, "lr": w.lr, "momentum": w.momentum,
           "l2": w.l2, "samples": n, "threads": threads, "macs_per_sample": w.macs(), "seconds": times,
           "samples_timed": samples, "cut_short": sorted(k for k in times if min(samples[k]) < n),
           "samples_per_second": rates, "gflops": {k: v * flops / 1e9 for k, v in rates.items()},
           "test_accuracy_after_epoch": {k: _accuracy(net, x_test, y_test) for k, net in nets.items()}}
    row["digitnet_vs_numpy"] = rates["digitnet"] / rates["numpy"]
    if use_torch:
        row["digitnet_vs_torch"] = rates["digitnet"] / rates["torch"]
    return row


def run(dataset, x, labels, x_test, y_test, repeats: int, threads: int, use_torch: bool, time_limit: float,
        only: str = "") -> dict:
    """Every conv workload (those whose name contains ``only``), and the sgemm peak."""
    result = {"sgemm_peak_gflops": sgemm_peak(threads), "threads": threads, "rows": []}
    for w in CONV_WORKLOADS:
        if only and only not in w.name:
            continue
        t0 = time.perf_counter()
        row = bench_conv_workload(w, dataset, x, labels, x_test, y_test, repeats, threads, use_torch, time_limit)
        result["rows"].append(row)
        s = row["samples_per_second"]
        print(f"{w.name}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in s.items())
              + f"  [{time.perf_counter() - t0:.0f} s]", flush=True)
    return result


def table(result: dict) -> str:
    """The Markdown table of the conv rows."""
    rows = result["rows"]
    if not rows:
        return ""
    t, peak = result["threads"], result["sgemm_peak_gflops"]
    use_torch = "torch" in rows[0]["samples_per_second"]
    head = ["workload", f"digitnet ({t} thr)", "NumPy layers", *(["PyTorch"] if use_torch else []),
            "digitnet/NumPy", *(["digitnet/PyTorch"] if use_torch else []),
            "GFLOP/s (dn/np" + ("/pt)" if use_torch else ")"),
            "test acc. after the epoch (dn/np" + ("/pt)" if use_torch else ")")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = ["digitnet", "numpy", *(["torch"] if use_torch else [])]
    for r in rows:
        s, gf, acc, cut = r["samples_per_second"], r["gflops"], r["test_accuracy_after_epoch"], set(r["cut_short"])
        cells = [r["workload"], *(f"{s[k]:,.0f}" + ("†" if k in cut else "") for k in keys),
                 f"{r['digitnet_vs_numpy']:.2f}×", *([f"{r['digitnet_vs_torch']:.2f}×"] if use_torch else []),
                 "/".join(f"{gf[k]:.0f}" for k in keys), "/".join(f"{acc[k]:.3f}" if k in acc else "–" for k in keys)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([
        f"Convolutional networks, samples/s (one epoch of {rows[0]['samples']} Fashion-MNIST images, median of "
        f"{len(rows[0]['seconds']['digitnet'])}, float32, {t} threads; relu, softmax/cross-entropy, SGD momentum "
        f"0.9; digitnet = the fused training step of `stack_kernels`, as `train` takes it; "
        f"NumPy = the NumPy layers of `digitnet.nn`). "
        f"GFLOP/s = 6 × forward multiply-adds × samples/s; sgemm peak here: {peak:.0f} GFLOP/s "
        f"(2048³, {t} threads). † cut short by the time limit.",
        "", *lines])


def main(argv: list[str] | None = None) -> int:
    """The conv workloads alone (``run.py`` runs them after the dense ones):
    ``.venv/bin/python benchmarks/conv_trainers.py --quick --only LeNet``."""
    import argparse
    import os
    from dataclasses import replace

    from digitnet.datasets import load_dataset

    ap = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 repeat on 12k images")
    ap.add_argument("--only", default="", help="run only workloads whose name contains this text")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--time-limit", type=float, default=15.0)
    args = ap.parse_args(argv)
    dataset = load_dataset("fashion-mnist")
    if args.quick:
        dataset = replace(dataset, train_images=dataset.train_images[:12000], train_labels=dataset.train_labels[:12000])
        args.repeats = 1
    x = dataset.train_images.reshape(len(dataset.train_images), -1).astype(np.float32) / np.float32(255)
    labels = dataset.train_labels.astype(np.int64)
    x_test = dataset.test_images.reshape(len(dataset.test_images), -1).astype(np.float32) / np.float32(255)
    use_torch = False
    if not args.no_torch:
        try:
            import torch  # noqa: F401
            use_torch = True
        except ImportError:
            pass
    result = run(dataset, x, labels, x_test, dataset.test_labels, args.repeats, args.threads, use_torch,
                 args.time_limit, args.only)
    print()
    print(table(result))
    return 0


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    sys.exit(main())
