"""One epoch of mini-batch SGD three ways, on the same data and the same starting weights.

* ``digitnet``: the real thing, ``digitnet.training.train`` for one epoch with augmentation
  and validation off; its own per-epoch timer (``history[0]["seconds"]``) is the figure.
* ``numpy``: the baseline, a plain vectorized NumPy implementation of the same network,
  written here the way one would write it by hand (one ``@`` per layer per batch).
* ``torch``: PyTorch CPU, the idiomatic loop (``nn.Linear`` layers, ``optim.SGD``, tensors
  loaded up front), when torch is importable.

Every trainer starts from the weights of ``Network.init(dense_layers(sizes, ...), seed=0)``,
applies the same update (momentum ``v <- mu v - lr (grad + l2 W)``, no decay on biases) and
returns the trained network as a ``digitnet.nn.network.Network`` so the caller can check that
all three learned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Workload:
    """A network and the SGD settings of one benchmark row."""

    name: str
    hidden: tuple[int, ...]
    activation: str
    cost: str
    batch_size: int
    lr: float
    momentum: float
    l2: float

    @property
    def sizes(self) -> tuple[int, ...]:
        return (784, *self.hidden, 10)


WORKLOADS = (
    Workload("784-16-16-10 sigmoid/quadratic, batch 10", (16, 16), "sigmoid", "quadratic", 10, 3.0, 0.0, 0.0),
    Workload("784-128-10 relu/CE, batch 32", (128,), "relu", "cross-entropy", 32, 0.1, 0.9, 1e-4),
    Workload("784-128-10 relu/CE, batch 128", (128,), "relu", "cross-entropy", 128, 0.1, 0.9, 1e-4),
    Workload("784-512-512-10 relu/CE, batch 128", (512, 512), "relu", "cross-entropy", 128, 0.1, 0.9, 1e-4),
)


def initial_network(w: Workload):
    """The starting weights every implementation copies: digitnet's seeded init of the dense
    stack (flatten, then dense and activation per layer; the cost's output activation)."""
    from digitnet.nn.functions import COSTS
    from digitnet.nn.network import Network, dense_layers

    return Network.init(dense_layers(w.sizes, w.activation, COSTS[w.cost].output), (1, 28, 28), w.cost, seed=0)


def weights_and_biases(net) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A dense stack's W (n_l, n_{l-1}) and b (n_l,) per layer, as views into ``net.params``."""
    dense = [views for views in net.views if views]
    return [v["W"] for v in dense], [v["b"] for v in dense]


def kernel_layout(net) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sizes, w_off, b_off) of a dense stack as ``kernels.train_batches`` takes them."""
    dense = [slot for slot in net.slots if slot]
    return (np.array(net.mlp()[0], np.int64), np.array([s["W"][0] for s in dense], np.int64),
            np.array([s["b"][0] for s in dense], np.int64))


# ---------------------------------------------------------------------------------- digitnet
class _OutOfTime(Exception):
    pass


def training_epoch(config, dataset, threads: int | None, time_limit: float = 1e9) -> tuple[float, int, object]:
    """(seconds, samples, network) for ``digitnet.training.train`` with ``config`` (usually
    one epoch) at ``threads`` (None: auto), its own per-epoch timers (``history[i]["seconds"]``)
    the figure. Past ``time_limit`` seconds the run is cut short (a pathologically slow setting
    must not stall the benchmark; a many-epoch config measures a steady stretch of that length):
    then the rate comes from the chunks done after the first, and the network is None."""
    from digitnet.training import train

    marks: list[tuple[float, int]] = []

    def on_chunk(epoch, done, total, loss, acc):
        marks.append((time.perf_counter(), epoch * total + done))           # batches since the start
        if marks[-1][0] - marks[0][0] > time_limit and marks[-1][1] < config.epochs * total:
            raise _OutOfTime

    try:
        result = train(dataset, config, threads=threads, on_chunk=on_chunk)
    except _OutOfTime:
        (t1, d1), (t2, d2) = marks[0], marks[-1]
        return t2 - t1, (d2 - d1) * config.batch_size, None
    return (sum(h["seconds"] for h in result.history), len(dataset.train_labels) * config.epochs,
            result.network)


def digitnet_epoch(w: Workload, dataset, threads: int | None, time_limit: float = 1e9) -> tuple[float, int, object]:
    """(seconds, samples, network) for one epoch of ``digitnet.training.train`` on the whole
    train split (augmentation and validation off); see ``training_epoch``."""
    from digitnet.training import TrainConfig

    config = TrainConfig(hidden=w.hidden, activation=w.activation, cost=w.cost, epochs=1, batch_size=w.batch_size,
                         lr=w.lr, momentum=w.momentum, l2=w.l2, schedule="constant", seed=0, augment=False,
                         val_split=0.0)
    return training_epoch(config, dataset, threads, time_limit)


def digitnet_kernel_epoch(w: Workload, x: np.ndarray, labels: np.ndarray, order: np.ndarray,
                          per_call: int | None) -> float:
    """Seconds for one epoch of ``kernels.train_batches`` called directly, ``per_call`` samples
    per call (None: the whole epoch in one call). Measures what training's chunking costs."""
    from digitnet import kernels
    from digitnet.nn.functions import ACTIVATIONS, COSTS

    net = initial_network(w)
    n, bs = len(x), w.batch_size
    n_batches = -(-n // bs)
    step = n_batches if per_call is None else max(1, per_call // bs)
    sizes, w_off, b_off = kernel_layout(net)
    velocity, grad = np.zeros_like(net.params), np.zeros_like(net.params)
    acts = np.zeros(bs * int(sizes.sum()), np.float32)
    deltas = np.zeros(2 * bs * int(sizes[1:].max()), np.float32)
    stats = np.zeros(2, np.float64)
    act, cost = ACTIVATIONS[w.activation].code, COSTS[w.cost].code
    t0 = time.perf_counter()
    for first in range(0, n_batches, step):
        kernels.train_batches(x, labels, order, net.params, velocity, grad, sizes, w_off, b_off, act, cost,
                              bs, first, min(n_batches, first + step), np.float32(w.lr), np.float32(w.momentum),
                              np.float32(w.l2), acts, deltas, stats)
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------- NumPy
def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def numpy_epoch(w: Workload, x: np.ndarray, labels: np.ndarray, order: np.ndarray,
                time_limit: float = 1e9) -> tuple[float, int, object]:
    """(seconds, samples, network) for one epoch of plain vectorized NumPy backprop, float32
    (cut short after ``time_limit`` seconds: then samples < len(x))."""
    net = initial_network(w)
    weights, biases = weights_and_biases(net)
    Ws, bs_ = [W.copy() for W in weights], [b.copy() for b in biases]
    vW, vb = [np.zeros_like(W) for W in Ws], [np.zeros_like(b) for b in bs_]
    eye = np.eye(10, dtype=np.float32)
    lr, mu, l2 = np.float32(w.lr), np.float32(w.momentum), np.float32(w.l2)
    sigmoid_out = w.cost == "quadratic"
    relu = w.activation == "relu"
    L = len(Ws)
    t0 = time.perf_counter()
    done = len(x)
    for start in range(0, len(x), w.batch_size):
        if start % 4096 < w.batch_size and time.perf_counter() - t0 > time_limit:
            done = start
            break
        idx = order[start:start + w.batch_size]
        m = len(idx)
        a = x[idx]
        activations = [a]
        for l in range(L):                                        # z = a W^T + b   (m, n_l)
            z = a @ Ws[l].T + bs_[l]
            if l == L - 1:
                a = _sigmoid(z) if sigmoid_out else _softmax(z)
            else:
                a = np.maximum(z, 0) if relu else _sigmoid(z)
            activations.append(a)
        y = eye[labels[idx]]
        delta = ((a - y) * a * (1 - a) if sigmoid_out else a - y) / np.float32(m)
        for l in range(L - 1, -1, -1):
            gW = delta.T @ activations[l]                         # (n_l, n_{l-1})
            gb = delta.sum(axis=0)
            if l > 0:
                prev = activations[l]
                delta = (delta @ Ws[l]) * ((prev > 0) if relu else prev * (1 - prev))
            if mu:
                vW[l] *= mu
                vW[l] -= lr * (gW + l2 * Ws[l])
                vb[l] *= mu
                vb[l] -= lr * gb
                Ws[l] += vW[l]
                bs_[l] += vb[l]
            else:
                Ws[l] -= lr * (gW + l2 * Ws[l]) if l2 else lr * gW
                bs_[l] -= lr * gb
    seconds = time.perf_counter() - t0
    for dst, src in zip(weights + biases, Ws + bs_):
        dst[...] = src
    return seconds, done, net


# ----------------------------------------------------------------------------------- PyTorch
def torch_available() -> bool:
    """True when ``import torch`` works."""
    try:
        import torch  # noqa: F401
    except Exception:
        return False
    return True


def torch_epoch(w: Workload, x: np.ndarray, labels: np.ndarray, order: np.ndarray,
                threads: int, time_limit: float = 1e9) -> tuple[float, int, object]:
    """(seconds, samples, network) for one epoch of the idiomatic PyTorch loop on pre-loaded
    tensors (cut short after ``time_limit`` seconds: then samples < len(x))."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    net = initial_network(w)
    net_weights, net_biases = weights_and_biases(net)
    layers = []
    for W, b in zip(net_weights, net_biases):
        lin = torch.nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W))
            lin.bias.copy_(torch.from_numpy(b))
        layers += [lin, torch.nn.ReLU() if w.activation == "relu" else torch.nn.Sigmoid()]
    quadratic = w.cost == "quadratic"
    model = torch.nn.Sequential(*(layers if quadratic else layers[:-1]))   # CE: softmax lives in the loss
    weights = [m.weight for m in model if isinstance(m, torch.nn.Linear)]
    biases = [m.bias for m in model if isinstance(m, torch.nn.Linear)]
    opt = torch.optim.SGD([{"params": weights, "weight_decay": w.l2}, {"params": biases, "weight_decay": 0.0}],
                          lr=w.lr, momentum=w.momentum)
    X, Y, order_t = torch.from_numpy(x), torch.from_numpy(labels), torch.from_numpy(order)
    Y1 = torch.nn.functional.one_hot(Y, 10).float()
    t0 = time.perf_counter()
    done = len(x)
    for start in range(0, len(x), w.batch_size):
        if start % 4096 < w.batch_size and time.perf_counter() - t0 > time_limit:
            done = start
            break
        idx = order_t[start:start + w.batch_size]
        out = model(X[idx])
        if quadratic:
            loss = 0.5 * ((out - Y1[idx]) ** 2).sum(dim=1).mean()
        else:
            loss = F.cross_entropy(out, Y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        for dst, src in zip(net_weights + net_biases, weights + biases):
            dst[...] = src.numpy()
    return seconds, done, net


def torch_inference(net, x: np.ndarray, threads: int) -> float:
    """Seconds for PyTorch's batched forward (no grad) of ``net``'s weights over x (n, 784)."""
    import torch

    torch.set_num_threads(threads)
    weights, biases = weights_and_biases(net)
    Ws = [torch.from_numpy(W.copy()) for W in weights]
    bs = [torch.from_numpy(b.copy()) for b in biases]
    X = torch.from_numpy(x)
    hidden = torch.relu if net.mlp()[1] == "relu" else torch.sigmoid
    t0 = time.perf_counter()
    with torch.inference_mode():
        a = X
        for l, (W, b) in enumerate(zip(Ws, bs)):
            z = torch.addmm(b, a, W.t())
            a = hidden(z) if l < len(Ws) - 1 else (torch.sigmoid(z) if net.cost == "quadratic" else torch.softmax(z, 1))
    return time.perf_counter() - t0
