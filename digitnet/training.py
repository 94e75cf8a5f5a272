"""Training: the run configuration, presets, learning-rate schedules, and the loop.

The loop is Python per *chunk* of mini-batches (a few thousand samples), never per sample.
A plain dense stack trained with SGD runs each chunk as one call of the fused kernel
``kernels.train_batches``; any other stack (convolution, dropout, Adam) runs the network's
own chain rule per mini-batch, with compiled stand-ins for the heavy layers. Between
chunks it reports progress and checks for Ctrl-C/SIGTERM (``stop_signals``, which a command
holds around training, evaluation and saving alike); between epochs it validates and keeps
the best network so far. All randomness (init, validation split, shuffles,
augmentation) comes from Generators seeded by ``config.seed``: same inputs, same bits.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from digitnet.datasets import Dataset
from digitnet.errors import ModelError, TrainingError, UsageError
from digitnet.metrics import loss_and_accuracy
from digitnet.nn.functions import ACTIVATIONS, COST_ALIASES, COSTS, HIDDEN_ACTIVATIONS, resolve, to_unit_float
from digitnet.nn.network import Network
from digitnet.nn.optim import OPTIMIZERS
from digitnet.nn.spec import architecture, describe_layers, parse_layers
from digitnet.threads import BlasThreads, Governor, cores


def _warmup_cosine(epoch: int, epochs: int) -> float:
    """For transformers (with Adam): a linear ramp over the first 5% of the epochs (at least
    one; none in a one-epoch run), then half a cosine over the rest."""
    warm = min(max(1, round(epochs / 20)), epochs - 1)
    if epoch < warm:
        return (epoch + 1) / (warm + 1)
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - warm) / (epochs - warm)))


SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "constant": lambda epoch, epochs: 1.0,
    # ×0.1 at half of the run and again at three quarters
    "step": lambda epoch, epochs: 0.1 ** ((epoch >= epochs // 2) + (epoch >= (3 * epochs) // 4)),
    # half a cosine from 1 down towards 0 (the last epoch still learns a little)
    "cosine": lambda epoch, epochs: 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)),
    "warmup-cosine": _warmup_cosine,
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run, kept apart from the learned weights."""

    hidden: tuple[int, ...] = (512, 256)
    activation: str = "relu"
    cost: str = "cross-entropy"
    layers: str = ""                    # the --layers grammar (digitnet.nn.spec); "" means dense ``hidden``
    optimizer: str = "sgd"
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
        if self.activation not in HIDDEN_ACTIVATIONS:
            raise UsageError(f"unknown activation (--activation) {self.activation!r}; choose one of: "
                             f"{', '.join(HIDDEN_ACTIVATIONS)}")
        resolve(COSTS, self.cost, "cost (--cost)")
        resolve(SCHEDULES, self.schedule, "schedule (--schedule)")
        resolve(OPTIMIZERS, self.optimizer, "optimizer (--optimizer)")
        if not self.layers and (not self.hidden or any(h < 1 for h in self.hidden)):
            raise UsageError(f"--hidden: every layer needs at least 1 neuron, got {','.join(map(str, self.hidden)) or 'nothing'}")
        self.hidden_layers()                     # a bad --layers / --hidden token is named here
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

    @property
    def layer_spec(self) -> str:
        """The hidden layers in the --layers grammar: ``layers``, or ``hidden`` as dense layers."""
        return self.layers or ",".join(f"dense{h}" for h in self.hidden)

    def hidden_layers(self):
        """The hidden layers this config describes (UsageError naming a bad token)."""
        return parse_layers(self.layer_spec, self.activation)

    def build(self, input_shape: tuple[int, int], n_classes: int) -> Network:
        """A new network for (H, W) images in ``n_classes`` classes, seeded by ``seed``; the
        output layer is dense with the cost's output activation (softmax or sigmoid)."""
        shape = (1, *input_shape)
        layers = architecture(self.hidden_layers(), shape, n_classes, COSTS[self.cost].output)
        return Network.init(layers, shape, self.cost, seed=self.seed)

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
    # LeNet-5 (LeCun et al. 1998) with today's habits: ReLU, max pooling, softmax/cross-entropy.
    "lenet": TrainConfig(layers="conv6x5p2,pool2,conv16x5,pool2,dense120,dense84", hidden=(), epochs=40,
                         batch_size=32, lr=0.05, momentum=0.9, l2=1e-4),
    # Two convolutional layers (Nielsen ch. 6, the Keras/PyTorch MNIST examples' shape).
    "cnn": TrainConfig(layers="conv32x5,pool2,conv64x5,pool2,dense256,dropout0.5", hidden=(), epochs=30,
                       batch_size=64, lr=0.05, momentum=0.9, l2=1e-4),
    # Two convolutional layers of 3×3 (the Keras MNIST example's kernels), the first padded so
    # the second sees 14×14: about cnn's work, and better on clothes. Measured: embedded+fonts
    # x30 99.05-99.30%; Fashion-MNIST --no-augment --val-split 0 --l2 5e-4 x30 93.04-93.05%,
    # x26 92.91-92.94% (369 s quiet on the fused step; cnn x30: 91.86%).
    "cnn3": TrainConfig(layers="conv32x3p1,pool2,conv64x3,pool2,dense256,dropout0.5", hidden=(), epochs=30,
                        batch_size=64, lr=0.05, momentum=0.9, l2=1e-4),
    # The cnn with each 5×5 convolution replaced by two 3×3 ones (as VGG does: the same reach,
    # a ReLU between): about twice the work of `cnn`. Measured on embedded+fonts (2,000 test
    # digits): x30 99.10-99.35% (99.35% in 173 s quiet on the fused step); cnn: 98.90-99.20%.
    "vgg": TrainConfig(layers="conv32x3,conv32x3,pool2,conv64x3,conv64x3,pool2,dense256,dropout0.5", hidden=(),
                       epochs=30, batch_size=64, lr=0.05, momentum=0.9, l2=1e-4),
    # The best dense network in about a minute on two cores: 784-512-256-10 ReLU, softmax and
    # cross-entropy, momentum SGD with a cosine schedule, L2, augmentation; 100 epochs.
    # Measured on embedded+fonts: 784-256-128 x30 98.35%, 512-256 x60 98.55-98.85%,
    # 512-256 x100 99.15%, 1024-512 x40 98.5% test accuracy.
    "mlp": TrainConfig(),
    # A vision transformer ("But what is a GPT?" on digits): 7×7 patches as 64-wide tokens and
    # four pre-norm blocks of 4 heads; AdamW-style decay and a warm-up, as transformers want.
    # Measured on embedded+fonts (2,000 test digits): x60 98.15%, x100 98.75%; 4×4 patches as
    # 32-wide tokens x60 97.80%; with decay on every weight matrix (not only those named W):
    # x100 98.90%, six blocks x100 98.85%. Small data needs the epochs.
    "attention": TrainConfig(layers="patch7x64,block4,block4,block4,block4", hidden=(), optimizer="adam",
                             epochs=100, batch_size=64, lr=1e-3, l2=0.05, schedule="warmup-cosine"),
}
PRESETS["default"] = PRESETS["cnn"]


def _given(overrides: dict) -> dict:
    """The options that were given (not None), with cost aliases (mse, log-loss) resolved."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if "cost" in given:
        given["cost"] = COST_ALIASES.get(given["cost"], given["cost"])
    if "hidden" in given and "layers" not in given:
        given["layers"] = ""                     # --hidden replaces a preset's --layers
    return given


def resolve_config(preset: str = "default", **overrides) -> TrainConfig:
    """A preset with the given options (those not None) replacing its values, validated."""
    base = resolve(PRESETS, preset, "preset (--preset)")
    return replace(base, **_given(overrides)).validate()


ARCHITECTURE_OPTIONS = ("layers", "hidden", "activation", "cost")


def resume_config(model, **overrides) -> TrainConfig:
    """The config a resumed run uses: the model's own, its layers written out, with the given
    options on top. Options that would change the layers, activation or cost are refused
    unless they describe the model's own network. A stranger's model whose config has
    values of the wrong type is the model's fault (ModelError)."""
    net = model.network
    own = describe_layers(net.layers)
    try:
        base = TrainConfig.from_json(model.config)
        base = replace(base, layers=own, cost=net.cost)
        given = _given(overrides)
        if any(k in given for k in ARCHITECTURE_OPTIONS):
            wanted = replace(base, **{k: v for k, v in given.items() if k in ARCHITECTURE_OPTIONS})
            rebuilt = architecture(wanted.hidden_layers(), net.input_shape, net.n_outputs, net.output)
            if describe_layers(rebuilt) != own or wanted.cost != net.cost or wanted.activation != base.activation:
                raise UsageError(f"--resume keeps the model's network ({own}, {net.cost}); "
                                 "drop --layers/--hidden/--activation/--cost or train a new model")
        return replace(base, **{k: v for k, v in given.items() if k not in ARCHITECTURE_OPTIONS}).validate()
    except (TypeError, ValueError) as e:
        raise ModelError(f"{model.path}: its training config has values of the wrong type ({e})") from None


def data_for(model, data: str | None) -> str:
    """The data set a command uses for ``model``: ``data`` when given, else the one the model
    was trained on (embedded when unrecorded)."""
    return data or (model.data_spec if model is not None else "embedded")


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
    threads: dict[int, float] = field(default_factory=dict)    # seconds of training at each thread count


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, validation) row indices; validation holds round(fraction * n) rows."""
    order = np.random.default_rng([seed, 0x5EED]).permutation(n)
    k = int(round(n * fraction))
    return np.sort(order[k:]), np.sort(order[:k])


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
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt      # Ctrl-C twice: stop now (a save in progress leaves the old file)
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


_GUARDS: list[_StopSignals] = []


@contextmanager
def stop_signals() -> Iterator[_StopSignals]:
    """SIGINT and SIGTERM as a flag (``.signum``) for the whole block, instead of
    KeyboardInterrupt or death: a command that trains, evaluates and saves holds one around
    all three, so a signal at any moment still ends in the saved model. Nested uses (``train``
    inside such a command) share the outer flag."""
    if _GUARDS:
        yield _GUARDS[-1]
        return
    with _StopSignals() as stop:
        _GUARDS.append(stop)
        try:
            yield stop
        finally:
            _GUARDS.pop()


def _blas_limits(threads: int | None):
    """Limit BLAS threads to ``threads`` (all cores for auto) for a block, restored after it:
    NumPy's OpenBLAS, which the kernels call too."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads or cores(), user_api="blas")


def _governor(threads: int | None) -> Governor:
    """The run's thread governor: ``threads`` pinned, or chosen from measured throughput
    (None: auto); it sets BLAS's threads and the parallel kernels' together."""
    from digitnet import conv_kernels

    blas = BlasThreads()

    def apply(n: int) -> None:
        blas(n)
        conv_kernels.set_threads(n)

    return Governor(apply, pinned=threads)


class _MLPKernel:
    """A chunk of mini-batches through the fused dense kernel (plain dense stacks, SGD)."""

    def __init__(self, net: Network, optimizer, bs: int, kernels):
        sizes, hidden, output = net.mlp()
        self.net, self.velocity, self.kernels = net, optimizer.velocity, kernels
        self.sizes = np.array(sizes, np.int64)
        dense = [s for s in net.slots if s]
        self.w_off = np.array([s["W"][0] for s in dense], np.int64)
        self.b_off = np.array([s["b"][0] for s in dense], np.int64)
        self.act, self.cost = ACTIVATIONS[hidden].code, COSTS[net.cost].code
        self.momentum, self.l2 = optimizer.momentum, optimizer.l2
        self.grad = np.zeros_like(net.params)
        self.acts = np.zeros(bs * sum(sizes), np.float32)
        self.deltas = np.zeros(2 * bs * max(sizes[1:]), np.float32)
        self.bs = bs

    @staticmethod
    def fits(net: Network, config: TrainConfig) -> bool:
        """True when the kernel trains exactly this network and update: a dense stack whose
        output and cost are a pair it knows, with SGD."""
        mlp = net.mlp()
        return (mlp is not None and config.optimizer == "sgd"
                and (mlp[2], net.cost) in (("softmax", "cross-entropy"), ("sigmoid", "quadratic")))

    def run(self, x, labels, order, first, last, lr, stats, rng):
        self.kernels.train_batches(x, labels, order, self.net.params, self.velocity, self.grad, self.sizes,
                                   self.w_off, self.b_off, self.act, self.cost, self.bs, first, last,
                                   np.float32(lr), np.float32(self.momentum), np.float32(self.l2),
                                   self.acts, self.deltas, stats)


class _LayerSteps:
    """A chunk of mini-batches, one batch at a time, and the optimizer's step after each: the
    whole step in one compiled call when ``stack_kernels`` takes the network (conv nets),
    else the network's own chain rule with compiled stand-ins for the heavy layers."""

    def __init__(self, net: Network, optimizer, bs: int, fast: dict | None):
        from digitnet.stack_kernels import training_step

        self.net, self.optimizer, self.bs = net, optimizer, bs
        self.g = np.zeros_like(net.params)
        self.step = training_step(net, fast)

    def run(self, x, labels, order, first, last, lr, stats, rng):
        for batch in range(first, last):
            rows = order[batch * self.bs:(batch + 1) * self.bs]
            y = labels[rows]
            cost, g, a_L = self.step(x[rows], y, rng, self.g)
            self.optimizer.step(self.net.params, g, lr)
            stats[0] += cost * len(rows)
            stats[1] += int((a_L.argmax(axis=1) == y).sum())


def train(dataset: Dataset, config: TrainConfig, *, resume: Network | None = None, history: list[dict] | None = None,
          threads: int | None = None, on_chunk: Callable[[int, int, int, float, float], None] | None = None,
          on_epoch: Callable[[EpochStats], None] | None = None) -> TrainResult:
    """Train a network on ``dataset``'s train split with mini-batch SGD; return the best one.

    ``resume`` continues from an existing network (its input and classes must fit the data)
    and its ``history``. ``on_chunk(epoch, batches_done, batches_total, loss, accuracy)`` is called
    every few thousand samples and ``on_epoch`` after each epoch. Ctrl-C or SIGTERM stops the
    run after the current chunk of mini-batches: the result then says ``stopped="interrupted"``
    and carries the best network so far. A non-finite cost raises TrainingError.
    """
    from digitnet import kernels
    from digitnet.augment import PROFILES, augment
    from digitnet import attention_kernels, conv_kernels, optim_kernels

    fast = {**conv_kernels.FAST, **attention_kernels.FAST}     # compiled stand-ins, by layer type

    config.validate()
    images, labels = dataset.train_images, dataset.train_labels
    n_in = int(np.prod(dataset.input_shape))
    if resume is not None:
        if resume.input_shape[1:] != tuple(dataset.input_shape) or resume.n_outputs != dataset.n_classes:
            raise UsageError(f"--resume: the model takes {'×'.join(map(str, resume.input_shape[1:]))} images in "
                             f"{resume.n_outputs} classes; the data has "
                             f"{'×'.join(map(str, dataset.input_shape))} in {dataset.n_classes}")
        net = resume.copy()
    else:
        net = config.build(tuple(dataset.input_shape), dataset.n_classes)
    history = list(history or [])
    first_epoch = len(history)
    from digitnet.modelfile import check_savable     # one limit: what is trained can be loaded again
    check_savable(model_from_result(TrainResult(net, history, first_epoch), dataset, config, dataset.name),
                  dataset.source or dataset.name)

    train_idx, val_idx = split_validation(len(images), config.val_split, config.seed)
    if len(train_idx) == 0:
        raise UsageError("--val-split leaves no training data")
    train_images, train_labels = images[train_idx], labels[train_idx]
    x_val = to_unit_float(images[val_idx]).reshape(len(val_idx), n_in)
    y_val = labels[val_idx]
    # training reads x_epoch (n, n_0) float32: augmentation rewrites it every epoch from the
    # uint8 images, so only an un-augmented run needs the plain float copy
    x_epoch = (np.empty((len(train_idx), n_in), np.float32) if config.augment
               else to_unit_float(train_images).reshape(len(train_idx), n_in))

    n = len(train_idx)
    bs = min(config.batch_size, n)
    n_batches = math.ceil(n / bs)
    per_chunk = max(1, 4096 // bs)
    optimizer = optim_kernels.FAST[config.optimizer](net.n_params, config.momentum, config.l2, net.decay_mask())
    steps = (_MLPKernel(net, optimizer, bs, kernels) if _MLPKernel.fits(net, config)
             else _LayerSteps(net, optimizer, bs, fast))

    best_net, best_acc, best_epoch = net.copy(), -1.0, first_epoch
    stopped, signum = "completed", None
    t_run, samples_done = time.perf_counter(), 0
    with stop_signals() as stop, _blas_limits(threads):
        governor = _governor(threads)
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
                last = min(n_batches, done + max(1, governor.samples(per_chunk * bs) // bs))
                governor.threads()
                t_chunk = time.perf_counter()
                steps.run(x_epoch, train_labels, order, done, last, lr, stats, rng)
                seen = min(n, last * bs)
                governor.done(seen - min(n, done * bs), time.perf_counter() - t_chunk)
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
            val_loss, val_acc = loss_and_accuracy(net, x_val, y_val) if len(val_idx) else (None, None)
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
    return TrainResult(best_net, history, best_epoch, stopped, signum, elapsed, samples_done / max(elapsed, 1e-9), val_idx,
                       {n: round(t, 3) for n, t in sorted(governor.seconds_at.items())})


def model_from_result(result: TrainResult, dataset: Dataset, config: TrainConfig, data_spec: str,
                      extra_meta: dict | None = None):
    """Wrap a training result as a ``modelfile.Model`` ready to save (config, history, data identity)."""
    from digitnet.modelfile import Model

    meta = {"best_epoch": result.best_epoch, "stopped": result.stopped, **(extra_meta or {})}
    if result.threads:                     # seconds trained at each thread count (auto moves between them)
        meta["threads"] = {str(n): t for n, t in result.threads.items()}
    return Model(result.network, dataset.class_names, dataset.input_shape, "mnist", config.to_json(), result.history,
                 {"name": dataset.name, "spec": data_spec, "checksum": dataset.checksum,
                  "augmentation": dataset.augmentation if config.augment else None,
                  "train": int(len(dataset.train_labels)), "test": int(len(dataset.test_labels))}, meta)
