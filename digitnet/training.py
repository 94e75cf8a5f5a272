"""Training: the run configuration, presets, learning-rate schedules, and the SGD loop.

The loop is Python per *chunk* of mini-batches (a few thousand samples), never per sample
or per batch: each chunk is one call of the compiled ``kernels.train_batches``. Between
chunks it reports progress and checks for Ctrl-C/SIGTERM; between epochs it validates and
keeps the best network so far. All randomness (init, validation split, shuffles,
augmentation) comes from Generators seeded by ``config.seed``: same inputs, same bits.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from digitnet.datasets import Dataset
from digitnet.errors import TrainingError, UsageError
from digitnet.modelfile import MAX_LAYER_SIZE
from digitnet.network import ACTIVATIONS, COSTS, Network, resolve

SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "constant": lambda epoch, epochs: 1.0,
    # ×0.1 at half of the run and again at three quarters
    "step": lambda epoch, epochs: 0.1 ** ((epoch >= epochs // 2) + (epoch >= (3 * epochs) // 4)),
    # half a cosine from 1 down towards 0 (the last epoch still learns a little)
    "cosine": lambda epoch, epochs: 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)),
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run, kept apart from the learned weights."""

    hidden: tuple[int, ...] = (512, 256)
    activation: str = "relu"
    cost: str = "cross-entropy"
    epochs: int = 100
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    l2: float = 1e-4
    schedule: str = "cosine"
    seed: int = 0
    augment: bool = True
    val_split: float = 0.1

    def validate(self) -> TrainConfig:
        """Raise UsageError naming the first option that cannot work; return self."""
        resolve(ACTIVATIONS, self.activation, "activation (--activation)")
        resolve(COSTS, self.cost, "cost (--cost)")
        resolve(SCHEDULES, self.schedule, "schedule (--schedule)")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise UsageError(f"--hidden: every layer needs at least 1 neuron, got {','.join(map(str, self.hidden)) or 'nothing'}")
        if max(self.hidden) > MAX_LAYER_SIZE:
            raise UsageError(f"--hidden: at most {MAX_LAYER_SIZE:,} neurons per layer, got {max(self.hidden):,}")
        if self.seed < 0:
            raise UsageError(f"--seed must be 0 or more, got {self.seed}")
        checks = [("--epochs", self.epochs >= 1, "at least 1"), ("--batch-size", self.batch_size >= 1, "at least 1"),
                  ("--lr", self.lr > 0 and math.isfinite(self.lr), "a positive number"),
                  ("--momentum", 0 <= self.momentum < 1, "in [0, 1)"),
                  ("--l2", self.l2 >= 0 and math.isfinite(self.l2), "0 or more"),
                  ("--val-split", 0 <= self.val_split < 1, "in [0, 1)")]
        for option, ok, what in checks:
            if not ok:
                raise UsageError(f"{option} must be {what}, got {getattr(self, option[2:].replace('-', '_'))}")
        return self

    def to_json(self) -> dict:
        """The config as JSON-ready values."""
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_json(cls, d: dict) -> TrainConfig:
        """Inverse of ``to_json``; unknown keys are ignored (older or newer files)."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "hidden" in known:
            known["hidden"] = tuple(known["hidden"])
        return cls(**known)


PRESETS: dict[str, TrainConfig] = {
    # The video's network: 784-16-16-10, sigmoid everywhere, quadratic cost, plain SGD.
    "3b1b": TrainConfig(hidden=(16, 16), activation="sigmoid", cost="quadratic", epochs=30, batch_size=10,
                        lr=3.0, momentum=0.0, l2=0.0, schedule="constant", augment=False, val_split=0.1),
    # Nielsen's network.py: 784-30-10, sigmoid, quadratic cost, batch 10, eta 3.0.
    "nielsen": TrainConfig(hidden=(30,), activation="sigmoid", cost="quadratic", epochs=30, batch_size=10,
                           lr=3.0, momentum=0.0, l2=0.0, schedule="constant", augment=False, val_split=0.1),
    # The best accuracy we reach in about a minute on two cores: 784-512-256-10 ReLU, softmax and
    # cross-entropy, momentum SGD with a cosine schedule, L2, augmentation; 100 epochs.
    # Measured on embedded+fonts (README): 784-256-128 x30 98.35%, 512-256 x60 98.55-98.85%,
    # 512-256 x100 99.15%, 1024-512 x40 98.5% test accuracy.
    "default": TrainConfig(),
}


def resolve_config(preset: str = "default", **overrides) -> TrainConfig:
    """A preset with the given options (those not None) replacing its values, validated."""
    base = resolve(PRESETS, preset, "preset (--preset)")
    return replace(base, **{k: v for k, v in overrides.items() if v is not None}).validate()


@dataclass
class EpochStats:
    """What one epoch did: cost and accuracy on the training data it saw, and on validation."""

    epoch: int
    lr: float
    loss: float
    accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    seconds: float
    samples_per_second: float


@dataclass
class TrainResult:
    """The best network (by validation accuracy), the full history, and how the run ended."""

    network: Network
    history: list[dict]
    best_epoch: int
    stopped: str = "completed"          # "completed" or "interrupted"
    signal: int | None = None
    seconds: float = 0.0
    samples_per_second: float = 0.0
    val_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, validation) row indices; validation holds round(fraction * n) rows."""
    order = np.random.default_rng([seed, 0x5EED]).permutation(n)
    k = int(round(n * fraction))
    return np.sort(order[k:]), np.sort(order[:k])


def evaluate_arrays(net: Network, x: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(mean cost, accuracy) of ``net`` on float inputs x (n, n_0) and labels (n,), NumPy only."""
    probs = net.predict_proba(x)
    y = np.zeros_like(probs)
    y[np.arange(len(labels)), labels] = 1
    loss = float(COSTS[net.cost].value(probs, y).mean())
    return loss, float((probs.argmax(axis=1) == labels).mean())


class _StopSignals:
    """Turn SIGINT/SIGTERM into a flag checked between chunks, so a run stops cleanly."""

    def __init__(self):
        self.signum: int | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def _blas_limits(threads: int | None):
    """Limit BLAS threads to ``threads``: NumPy's OpenBLAS, which the kernels call too."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads or os.cpu_count() or 1, user_api="blas")


def _to_unit_float(images: np.ndarray, n_in: int) -> np.ndarray:
    """uint8 images (n, ...) as float32 rows (n, n_in) in [0, 1], scaled in place (one copy)."""
    x = images.reshape(len(images), n_in).astype(np.float32)
    x /= np.float32(255)
    return x


def train(dataset: Dataset, config: TrainConfig, *, resume: Network | None = None, history: list[dict] | None = None,
          threads: int | None = None, on_chunk: Callable[[int, int, int, float, float], None] | None = None,
          on_epoch: Callable[[EpochStats], None] | None = None) -> TrainResult:
    """Train a network on ``dataset``'s train split with mini-batch SGD; return the best one.

    ``resume`` continues from an existing network (its sizes must fit the data) and its
    ``history``. ``on_chunk(epoch, batches_done, batches_total, loss, accuracy)`` is called
    every few thousand samples and ``on_epoch`` after each epoch. Ctrl-C or SIGTERM stops the
    run after the current chunk of mini-batches: the result then says ``stopped="interrupted"``
    and carries the best network so far. A non-finite cost raises TrainingError.
    """
    from digitnet import kernels
    from digitnet.augment import PROFILES, augment

    config.validate()
    images, labels = dataset.train_images, dataset.train_labels
    n_in = int(np.prod(dataset.input_shape))
    sizes = (n_in, *config.hidden, dataset.n_classes)
    if resume is not None:
        if resume.sizes[0] != n_in or resume.sizes[-1] != dataset.n_classes:
            raise UsageError(f"--resume: the model takes {resume.sizes[0]} inputs and has {resume.sizes[-1]} classes; "
                             f"the data has {n_in} and {dataset.n_classes}")
        net = resume.copy()
    else:
        net = Network.init(sizes, config.activation, config.cost, seed=config.seed)
    history = list(history or [])
    first_epoch = len(history)

    train_idx, val_idx = split_validation(len(images), config.val_split, config.seed)
    if len(train_idx) == 0:
        raise UsageError("--val-split leaves no training data")
    train_images, train_labels = images[train_idx], labels[train_idx]
    x_val = _to_unit_float(images[val_idx], n_in)
    y_val = labels[val_idx]
    # the kernels read x_epoch (n, n_0) float32: augmentation rewrites it every epoch from the
    # uint8 images, so only an un-augmented run needs the plain float copy
    x_epoch = np.empty((len(train_idx), n_in), np.float32) if config.augment else _to_unit_float(train_images, n_in)

    n = len(train_idx)
    bs = min(config.batch_size, n)
    n_batches = math.ceil(n / bs)
    per_chunk = max(1, 4096 // bs)
    act, cost = ACTIVATIONS[net.activation].code, COSTS[net.cost].code
    sizes_arr = np.array(net.sizes, np.int64)
    velocity = np.zeros_like(net.params)
    grad = np.zeros_like(net.params)
    acts = np.zeros(bs * sum(net.sizes), np.float32)
    deltas = np.zeros(2 * bs * max(net.sizes[1:]), np.float32)

    best_net, best_acc, best_epoch = net.copy(), -1.0, first_epoch
    stopped, signum = "completed", None
    t_run, samples_done = time.perf_counter(), 0
    with _StopSignals() as stop, _blas_limits(threads):
        for e in range(config.epochs):
            epoch = first_epoch + e
            t0 = time.perf_counter()
            rng = np.random.default_rng([config.seed, epoch])
            lr = config.lr * SCHEDULES[config.schedule](e, config.epochs)
            if config.augment:
                augment(train_images, rng, PROFILES[dataset.augmentation], out=x_epoch)
            order = rng.permutation(n).astype(np.int64)
            stats = np.zeros(2, np.float64)
            done = 0
            while done < n_batches and stop.signum is None:
                last = min(n_batches, done + per_chunk)
                kernels.train_batches(x_epoch, train_labels, order, net.params, velocity, grad, sizes_arr,
                                      net.w_off, net.b_off, act, cost, bs, done, last, np.float32(lr),
                                      np.float32(config.momentum), np.float32(config.l2), acts, deltas, stats)
                seen = min(n, last * bs)
                samples_done += seen - min(n, done * bs)
                done = last
                if not math.isfinite(stats[0]):
                    raise TrainingError(f"the cost became non-finite in epoch {epoch + 1} (lr {lr:g} is too high for "
                                        f"this network): try a lower --lr, e.g. --lr {config.lr / 10:g}")
                if on_chunk:
                    on_chunk(epoch, done, n_batches, stats[0] / seen, stats[1] / seen)
            if stop.signum is not None and done < n_batches:
                stopped, signum = "interrupted", stop.signum
                if best_acc < 0:      # interrupted in the first epoch: the partly trained net is what we have
                    best_net = net.copy()
                break
            if not np.isfinite(net.params).all():
                raise TrainingError(f"the weights became non-finite in epoch {epoch + 1}: try a lower --lr")
            seconds = time.perf_counter() - t0
            val_loss, val_acc = evaluate_arrays(net, x_val, y_val) if len(val_idx) else (None, None)
            s = EpochStats(epoch + 1, lr, stats[0] / n, stats[1] / n, val_loss, val_acc, seconds, n / seconds)
            history.append(asdict(s))
            score = val_acc if val_acc is not None else s.accuracy
            if score > best_acc:
                best_net, best_acc, best_epoch = net.copy(), score, epoch + 1
            if on_epoch:
                on_epoch(s)
            if stop.signum is not None:
                stopped, signum = "interrupted", stop.signum
                break
    elapsed = time.perf_counter() - t_run
    return TrainResult(best_net, history, best_epoch, stopped, signum, elapsed, samples_done / max(elapsed, 1e-9), val_idx)


def model_from_result(result: TrainResult, dataset: Dataset, config: TrainConfig, data_spec: str,
                      extra_meta: dict | None = None):
    """Wrap a training result as a ``modelfile.Model`` ready to save (config, history, data identity)."""
    from digitnet.modelfile import Model

    meta = {"best_epoch": result.best_epoch, "stopped": result.stopped, **(extra_meta or {})}
    return Model(result.network, dataset.class_names, dataset.input_shape, "mnist", config.to_json(), result.history,
                 {"name": dataset.name, "spec": data_spec, "checksum": dataset.checksum,
                  "augmentation": dataset.augmentation if config.augment else None,
                  "train": int(len(dataset.train_labels)), "test": int(len(dataset.test_labels))}, meta)
