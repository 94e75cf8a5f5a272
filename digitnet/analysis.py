"""Looking inside a trained network, as 3Blue1Brown's "Analyzing our neural network" does:
parameter counts, one input's activations layer by layer, the network's verdict on pure
noise, the input it "most likes" for a digit (gradient ascent on the pixels), and its most
confidently wrong test digits. The views behind ``digitnet inspect``.

Plain NumPy through ``digitnet.nn``: nothing here imports numba. "Confidence" below is the
winner's class score (``Model.scores``: softmax outputs, or sigmoid outputs divided by their
sum), the same number predict and evaluate show.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitnet.atomic import atomic_write
from digitnet.errors import DigitnetError, UsageError
from digitnet.nn.functions import to_unit_float
from digitnet.nn.layers import Activation
from digitnet.nn.network import Network
from digitnet.nn.spec import describe_layers


# ---------------------------------------------------------------------------------------------
# Architecture and history

def parameter_counts(net: Network) -> list[dict]:
    """One row per layer, as Keras' summary: its index (from 1), type, short name, input and
    output shape per image, the shape of each of its arrays, the count of weights, biases,
    other parameters (see array_kind) and all, and ``weight_layer``: its number for ``inspect weights --layer`` (None without weights)."""
    rows, learned = [], learned_layers(net)
    for i, (layer, views) in enumerate(zip(net.layers, net.views)):
        counts = {name: int(a.size) for name, a in views.items()}
        kinds = {kind: sum(c for name, c in counts.items() if array_kind(name) == kind) for kind in ARRAY_KINDS}
        rows.append({"layer": i + 1, "type": layer.type, "name": layer.describe(),
                     "input_shape": list(net.shapes[i]), "output_shape": list(net.shapes[i + 1]),
                     "arrays": {name: list(a.shape) for name, a in views.items()},
                     "weight_layer": learned.index(i) + 1 if i in learned else None,
                     **kinds, "parameters": sum(counts.values())})
    return rows


ARRAY_KINDS = ("weights", "biases", "other")


def array_kind(name: str) -> str:
    """What a layer's array is, by its name: ``weights`` (W, and a transformer block's W_qkv,
    W_o, W_1, W_2), ``biases`` (b, b_qkv…), else ``other`` (LayerNorm gains and shifts, the
    class token, position embeddings)."""
    head = name.split("_")[0]
    return "weights" if head == "W" else "biases" if head == "b" else "other"


def model_summary(model) -> dict:
    """Everything ``inspect summary`` shows, JSON-ready: the layers, cost, parameter counts
    per layer and in all, data set, config, history and the final/best accuracies. ``sizes``
    and ``activation`` are given for plain dense stacks (None otherwise)."""
    net = model.network
    layers = parameter_counts(net)
    hist = model.history
    best = model.meta.get("best_epoch")
    best_row = next((h for h in hist if h.get("epoch") == best), None)
    mlp = net.mlp()
    return {
        "path": model.path, "architecture": describe_layers(net.layers),
        "sizes": list(mlp[0]) if mlp else None, "activation": mlp[1] if mlp else None,
        "cost": net.cost, "output": net.output,
        "layers": layers, "parameters": sum(r["parameters"] for r in layers),
        "class_names": list(model.class_names), "input_shape": list(model.input_shape),
        "dataset": model.dataset, "config": model.config, "history": hist,
        "epochs": len(hist), "best_epoch": best, "stopped": model.meta.get("stopped"),
        "preset": model.meta.get("preset"), "created": model.meta.get("created"),
        "final_train_accuracy": hist[-1].get("accuracy") if hist else None,
        "final_val_accuracy": hist[-1].get("val_accuracy") if hist else None,
        "best_val_accuracy": best_row.get("val_accuracy") if best_row else None,
    }


def test_accuracy(model, measure: bool = True) -> tuple[float | None, str]:
    """(accuracy, where it comes from): the test accuracy recorded in the model file if any,
    else measured now on the test split of the model's own data set (when ``measure``), else
    None. A data set that cannot be loaded gives None and the reason, not an error."""
    from digitnet.errors import DataError

    recorded = model.meta.get("test_accuracy")
    if isinstance(recorded, (int, float)) and not isinstance(recorded, bool):
        return float(recorded), "recorded in the model file when it was trained"
    if not measure:
        return None, "not measured (--no-test)"
    try:
        images, labels, _ = load_split(model, None, "test")
    except (DataError, UsageError) as e:
        return None, f"not measured: {e}"
    predicted = model.scores(to_unit_float(images)).argmax(axis=1)
    return float((predicted == labels).mean()), f"{len(labels):,} test images of {model.dataset.get('spec') or 'embedded'}, measured now"


# ---------------------------------------------------------------------------------------------
# Selecting layers and neurons

def parse_neurons(text: str, n: int, option: str = "--neurons", what: str = "neurons") -> np.ndarray:
    """'0:16', '3', '1,5,9' or ':' -> sorted unique indices below ``n`` (UsageError naming
    ``option`` otherwise); ``what`` the layer has n of (neurons, filters, maps, channels)."""
    text = (text or ":").strip()
    try:
        if ":" in text:
            lo, _, hi = text.partition(":")
            start = int(lo) if lo.strip() else 0
            stop = int(hi) if hi.strip() else n
            idx = np.arange(max(start, 0), min(stop, n))
        else:
            idx = np.array(sorted({int(p) for p in text.split(",") if p.strip()}), np.int64)
    except ValueError:
        raise UsageError(f"{option}: expected a range such as 0:16 or a list such as 1,5,9, got {text!r}") from None
    if idx.size == 0 or idx.min() < 0 or idx.max() >= n:
        raise UsageError(f"{option} {text!r}: this layer has {what} 0 to {n - 1}")
    return idx.astype(np.int64)


def learned_layers(net: Network) -> list[int]:
    """Indices into ``net.layers`` of the layers with weights, in order: weight layer 1 is
    the first of them (the one that sees the pixels)."""
    return [i for i, views in enumerate(net.views) if "W" in views]


def layer_weights(net: Network, layer: int) -> np.ndarray:
    """The weights of weight layer 1..L: dense (n_out, n_in), conv (F, C, k, k)."""
    return net.views[weight_layer_index(net, layer)]["W"]


def weight_layer_index(net: Network, layer: int) -> int:
    """The index into ``net.layers`` of weight layer 1..L (UsageError naming the range otherwise)."""
    learned = learned_layers(net)
    if not 1 <= layer <= len(learned):
        raise UsageError(f"--layer {layer}: this network has weight layers 1 to {len(learned)}")
    return learned[layer - 1]


def feeds(net: Network, index: int) -> tuple[str, tuple[int, ...]]:
    """(name, shape per image) of what layer ``index`` reads, looking back through flatten,
    dropout and activation layers: ``input``, or e.g. ``pool2``, (16, 5, 5) for the first
    dense layer after a conv stack."""
    j = index - 1
    while j >= 0 and net.layers[j].type in ("flatten", "dropout", "activation"):
        j -= 1
    return ("input", net.shapes[0]) if j < 0 else (net.layers[j].describe(), net.shapes[j + 1])


def load_split(model, spec: str | None = None, split: str = "test"):
    """(images uint8 (n, H, W), labels (n,), Dataset) of a data set split the model can read;
    ``spec`` defaults to the data set the model was trained on (embedded when unrecorded)."""
    from digitnet.datasets import load_dataset

    if split not in ("test", "train"):
        raise UsageError(f"--split must be test or train, not {split!r}")
    spec = spec or model.data_spec
    dataset = load_dataset(spec)
    if dataset.input_shape != tuple(model.input_shape) or dataset.n_classes != len(model.class_names):
        raise UsageError(f"{spec}: {dataset.input_shape[0]}×{dataset.input_shape[1]} images in {dataset.n_classes} classes, "
                         f"but the model takes {model.input_shape[0]}×{model.input_shape[1]} in {len(model.class_names)}")
    images, labels = dataset.split(split)
    return images, labels, dataset


# ---------------------------------------------------------------------------------------------
# One input, layer by layer

@dataclass
class Stage:
    """One step of a forward pass as ``inspect activations`` draws it: ``name`` (``input``,
    or a learned layer with its activation, e.g. ``conv6x5p2:relu``), the layer's type
    (input, conv, dense), its activation function (None if linear) and ``values``, one
    image's output: (C, H, W) feature maps or (n,) neurons."""

    name: str
    kind: str
    activation: str | None
    values: np.ndarray


def forward_stages(model, image: np.ndarray) -> list[Stage]:
    """The input (1, H, W), then each learned layer's output after the activation that follows
    it (its neurons' or maps' activations; a patch embedding's or transformer block's tokens
    (T, D)), for one image (H, W) in [0, 1]: the last stage is the network's output. Pooling,
    flatten, dropout and a transformer's class-token read-out are steps between stages."""
    net = model.network
    outs = [a for _, a in layer_outputs(model, image)]                # outs[i + 1]: layer i's output
    stages = [Stage("input", "input", None, outs[0])]
    blocks = [i for i, layer in enumerate(net.layers) if layer.type == "block"]
    for i in sorted(learned_layers(net) + blocks):                    # a block's output: its tokens (T, D)
        after = net.layers[i + 1] if i + 1 < len(net.layers) else None
        act = after.function if isinstance(after, Activation) else None
        stages.append(Stage(net.layers[i].describe() + (f":{act}" if act else ""), net.layers[i].type, act,
                            outs[i + 2] if act else outs[i + 1]))
    if stages[-1].values is not outs[-1]:                             # a stack that ends in no learned layer
        stages.append(Stage("output", "output", net.output, outs[-1]))
    return stages


def layer_activations(model, image: np.ndarray) -> list[np.ndarray]:
    """``forward_stages`` flattened: the pixels, each learned layer's activations (a dense
    layer's neurons, or a conv layer's maps), the outputs; each 1-D."""
    return [s.values.reshape(-1) for s in forward_stages(model, image)]


def layer_outputs(model, image: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(name, output) of the input and of every layer for one image (H, W) in [0, 1]; outputs
    keep their shape per image ((C, H, W) feature maps, (n,) neurons)."""
    net = model.network
    x = np.asarray(image, np.float32).reshape(1, -1)
    if x.shape[1] != net.n_inputs:
        raise UsageError(f"the image has {x.shape[1]} pixels, the model takes {net.n_inputs}")
    outs = net.feedforward(x)
    return [("input", outs[0][0])] + [(layer.describe(), a[0]) for layer, a in zip(net.layers, outs[1:])]


# ---------------------------------------------------------------------------------------------
# Noise

@dataclass
class NoiseReport:
    """The network's answers for ``samples`` uniform-noise images: the first few images (k, H, W),
    all predictions (n,) and confidences (n,), the count per class and the mean confidence."""

    samples: int
    seed: int
    images: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    class_counts: np.ndarray
    mean_confidence: float

    def to_json(self, class_names) -> dict:
        """JSON-ready summary (no images): samples, seed, mean_confidence, class_counts by name…"""
        return {"samples": self.samples, "seed": self.seed, "mean_confidence": self.mean_confidence,
                "median_confidence": float(np.median(self.confidence)),
                "share_above_0.9": float((self.confidence > 0.9).mean()),
                "class_counts": {name: int(c) for name, c in zip(class_names, self.class_counts)},
                "first": [{"predicted": int(p), "name": class_names[p], "confidence": float(c)}
                          for p, c in zip(self.predicted[:len(self.images)], self.confidence[:len(self.images)])]}


def noise_experiment(model, samples: int = 1000, seed: int = 0, keep: int = 4) -> NoiseReport:
    """Feed ``samples`` images of uniform noise in [0, 1] (seeded) and tally the answers: the
    video's point that the network answers confidently even when there is nothing to see."""
    if samples < 1:
        raise UsageError(f"--samples must be at least 1, got {samples}")
    h, w = model.input_shape
    x = np.random.default_rng(seed).random((samples, h * w), dtype=np.float32)
    probs = model.scores(x)                                    # (samples, n_classes)
    predicted = probs.argmax(axis=1)
    confidence = probs[np.arange(samples), predicted]
    counts = np.bincount(predicted, minlength=probs.shape[1])
    return NoiseReport(samples, seed, x[:keep].reshape(-1, h, w), predicted, confidence, counts,
                       float(confidence.mean()))


# ---------------------------------------------------------------------------------------------
# Dreaming: gradient ascent on the input

def one_blas_thread():
    """A context limiting BLAS to one thread: the many tiny products of a gradient ascent run
    tens of times slower when BLAS threads contend for a busy machine's cores."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


@dataclass
class Dream:
    """The image (H, W) in [0, 1] that gradient ascent found for ``digit``, the target's
    output activation before and after, the winning class, and the activation per step."""

    digit: int
    image: np.ndarray
    probability: float
    start_probability: float
    predicted: int
    steps: int
    trace: np.ndarray
    outputs: np.ndarray

    def to_json(self, class_names) -> dict:
        """JSON-ready summary: digit, probability, start probability, prediction, outputs."""
        return {"digit": self.digit, "name": class_names[self.digit], "probability": self.probability,
                "start_probability": self.start_probability, "predicted": self.predicted,
                "steps": self.steps, "outputs": [float(v) for v in self.outputs],
                "mean_pixel": float(self.image.mean())}


def dream_starts(h: int, w: int, restarts: int, seed: int) -> np.ndarray:
    """Starting images (restarts, h*w) for ``dream``: black (the background the network
    saw in training), then mid-grey with a little noise, then uniform noise, all seeded."""
    rng = np.random.default_rng(seed)
    starts = rng.random((restarts, h * w))
    starts[0] = 0.0
    if restarts > 1:
        starts[1] = np.clip(0.5 + 0.05 * rng.standard_normal(h * w), 0.0, 1.0)
    return starts


def dream(model, digit: int, steps: int = 200, step_size: float = 0.05, l2: float = 0.0, seed: int = 0,
          restarts: int = 4, start: np.ndarray | None = None) -> Dream:
    """Gradient ascent on the pixels to maximise ln a_L[digit] − l2·‖x − ½‖²: the image the
    network would "most like to see" for ``digit`` (3Blue1Brown ch. 2).

    Each step moves every pixel by ``step_size`` times the gradient divided by its largest
    magnitude (so the step is the same for any model's scale), then clips to [0, 1]: projected
    gradient ascent. Clipping creates local maxima, so ``restarts`` starting images
    (``dream_starts``, or the one (H, W) image ``start``) climb at once as one batch and the
    best is kept. The penalty pulls pixels towards mid-grey, favouring quieter images."""
    net = model.network
    n_out = net.n_outputs
    if not 0 <= digit < n_out:
        raise UsageError(f"DIGIT must be a class from 0 to {n_out - 1}, got {digit}")
    if steps < 0:
        raise UsageError(f"--steps must be 0 or more, got {steps}")
    if not step_size > 0:
        raise UsageError(f"--step-size must be positive, got {step_size}")
    if not l2 >= 0:
        raise UsageError(f"--l2 must be 0 or more, got {l2}")
    if restarts < 1:
        raise UsageError(f"--restarts must be at least 1, got {restarts}")
    h, w = model.input_shape
    if start is None:
        x = dream_starts(h, w, restarts, seed)                 # (k, n_0)
    else:
        x = np.clip(np.asarray(start, np.float64).reshape(1, h * w), 0.0, 1.0)
    net64 = net.astype(np.float64)
    targets = np.full(len(x), digit)
    trace = np.empty((steps + 1, len(x)))
    with one_blas_thread():
        for i in range(steps):
            a_L, grad = net64.input_gradient(x, targets)       # (k, n_L), (k, n_0)
            trace[i] = a_L[:, digit]
            grad = grad - 2.0 * l2 * (x - 0.5)
            peak = np.abs(grad).max(axis=1, keepdims=True)     # (k, 1)
            x = np.clip(x + step_size * grad / np.where(peak > 0, peak, 1.0), 0.0, 1.0)
    outputs = net64.predict_proba(x)                           # (k, n_L)
    trace[-1] = outputs[:, digit]
    best = int(np.argmax(outputs[:, digit]))
    return Dream(int(digit), x[best].reshape(h, w).astype(np.float32), float(outputs[best, digit]),
                 float(trace[0, best]), int(outputs[best].argmax()), steps, trace[:, best], outputs[best])


# ---------------------------------------------------------------------------------------------
# Confident mistakes

@dataclass
class Mistakes:
    """The most confidently wrong images: row indices into the split (k,), true and predicted
    labels (k,), the winner's confidence (k,), the images (k, H, W) uint8, and the totals."""

    index: np.ndarray
    true: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    images: np.ndarray
    n: int
    n_wrong: int

    def to_json(self, class_names) -> dict:
        """JSON-ready: totals and one object per mistake (index, true, predicted, confidence)."""
        return {"n": self.n, "errors": self.n_wrong, "error_rate": self.n_wrong / max(self.n, 1),
                "mistakes": [{"index": int(i), "true": int(t), "predicted": int(p), "true_name": class_names[t],
                              "predicted_name": class_names[p], "confidence": float(c)}
                             for i, t, p, c in zip(self.index, self.true, self.predicted, self.confidence)]}


def confident_errors(model, images: np.ndarray, labels: np.ndarray, limit: int = 12) -> Mistakes:
    """The ``limit`` wrong predictions with the highest confidence on uint8 images (n, H, W)
    and labels (n,), most confident first (ties by index, so the order is reproducible)."""
    if limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    x = to_unit_float(images)
    probs = model.scores(x)
    predicted = probs.argmax(axis=1)
    confidence = probs[np.arange(len(x)), predicted]
    wrong = np.flatnonzero(predicted != labels)
    order = wrong[np.lexsort((wrong, -confidence[wrong]))][:limit]
    return Mistakes(order, labels[order], predicted[order], confidence[order], images[order], len(x), len(wrong))


# ---------------------------------------------------------------------------------------------
# Pictures as files

def save_png(rgb: np.ndarray, path: str | os.PathLike, force: bool = False, inputs=()) -> Path:
    """Write an (H, W, 3) uint8 image as a PNG with Pillow, atomically (temp file, then
    published), by train's rule: an existing file is refused unless ``force`` (checked again
    when the image is published, so a file that appeared meanwhile is kept too), and a file
    among ``inputs`` (the model being inspected) is never written over, forced or not.
    UsageError names ``--png`` and the file; the file replaced keeps its mode."""
    from PIL import Image

    from digitnet.atomic import check_target

    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--png {path} is a directory; give a file name such as {path / 'weights.png'}")
    if not path.parent.is_dir():
        raise UsageError(f"--png {path}: the folder {path.parent} does not exist")
    check_target(path, force, inputs, "--png")
    try:
        with atomic_write(path, replace=force) as f:
            Image.fromarray(np.ascontiguousarray(rgb, np.uint8), "RGB").save(f, format="PNG")
    except FileExistsError:
        raise UsageError(f"{path} appeared while the image was drawn; it is kept (pass --force to replace it)") from None
    except OSError as e:
        raise DigitnetError(f"{path}: could not write the image ({e.strerror})") from None
    return path
