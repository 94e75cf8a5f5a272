"""The model file: a ``.npz`` holding each layer's arrays (float32) and ``meta``, one JSON
string in a 0-d unicode array. Loaded with ``allow_pickle=False`` and validated against the
registries and the array shapes; written atomically (temporary file, fsync, ``os.replace``).

Version 2 (written now) names its layers in the metadata, Keras-style, and stores layer i's
arrays as ``layer{i}.W``, ``layer{i}.b`` (i from 1, counting every layer)::

    "layers": [{"type": "conv", "filters": 32, "kernel": 5, "stride": 1, "padding": 0},
               {"type": "activation", "function": "relu"}, {"type": "maxpool", "size": 2, "stride": 2},
               {"type": "flatten"}, {"type": "dense", "units": 10}, {"type": "activation", "function": "softmax"}]

Version 1 (digitnet 0.1) held a dense network: ``sizes``, ``activation``, ``cost`` and arrays
``W1, b1, … WL, bL``; it still loads, as the same dense layers.

A file from a stranger is read member by member: the metadata first (strict JSON, bounded in
size and nesting, with the types the commands read), then only the arrays its layers need,
each checked against its layer's shape from the header before it is read. Finite weights so
large that a forward pass could overflow float32 are refused too (``check_usable``), and
``check_savable`` holds a model about to be trained to the loader's own limits.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitnet import __version__
from digitnet.atomic import atomic_write
from digitnet.errors import DigitnetError, ModelError, UsageError
from digitnet.modelpath import default_model
from digitnet.nn.functions import ACTIVATIONS, COSTS
from digitnet.nn.layers import MAX_UNITS, layer_from_config
from digitnet.nn.network import Network, dense_layers
from digitnet.npzfile import open_npz

FORMAT = "digitnet-model"
FORMAT_VERSION = 2
MAX_LAYERS = 256
MAX_SIDE = 4096                # pixels per side of the input images
MAX_META_BYTES = 1 << 24       # the metadata string: far above any history digitnet writes
MAX_META_DEPTH = 16            # nesting of the metadata's lists and objects


@dataclass
class Model:
    """A network plus what describes it: class names, input shape, preprocessing, training
    config, per-epoch history, data set identity, and anything else in ``meta``."""

    network: Network
    class_names: tuple[str, ...]
    input_shape: tuple[int, int] = (28, 28)
    preprocessing: str = "mnist"
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    dataset: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    path: str = ""

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Output activations (n, n_classes) for images x (n, H, W) or (n, H*W), floats in [0, 1]."""
        return self.network.predict_proba(x)

    @property
    def data_spec(self) -> str:
        """The data set this model was trained on, as ``--data`` spells it (embedded when unrecorded)."""
        return self.dataset.get("spec") or "embedded"

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Class scores (n, n_classes), summing to 1 per row, for images x (n, H, W) or
        (n, H*W), floats in [0, 1]: what predict, evaluate, inspect and draw show."""
        return self.network.scores(x)

    def check_fits(self, dataset, spec: str = "") -> None:
        """Refuse (UsageError, one line) a data set this model cannot be scored on or trained
        further with: other image sizes, another number of classes, or other classes (a
        Fashion-MNIST model on digits would label a 7 "Sneaker")."""
        where = spec or dataset.name
        h, w = self.input_shape
        if tuple(dataset.input_shape) != tuple(self.input_shape) or dataset.n_classes != len(self.class_names):
            raise UsageError(f"{where}: {dataset.input_shape[0]}×{dataset.input_shape[1]} images in {dataset.n_classes} "
                             f"classes, but the model takes {h}×{w} in {len(self.class_names)}")
        if tuple(dataset.class_names) != tuple(self.class_names):
            theirs, ours = _names(dataset.class_names), _names(self.class_names)
            trained = self.dataset.get("spec") or self.dataset.get("name")
            raise UsageError(f"{where}: its classes ({theirs}) are not the model's ({ours}"
                             + (f", from {trained}" if trained else "") + ")")

    def to_meta(self) -> dict:
        """The JSON metadata stored with the arrays."""
        meta = dict(self.meta)
        for old in ("sizes", "activation"):          # version 1's description of a dense network
            meta.pop(old, None)
        meta.update(format=FORMAT, format_version=FORMAT_VERSION,
                    layers=[layer.config() for layer in self.network.layers], cost=self.network.cost,
                    input_shape=list(self.input_shape), class_names=list(self.class_names),
                    preprocessing=self.preprocessing, config=self.config, history=self.history,
                    dataset=self.dataset, digitnet_version=__version__)
        meta.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        return meta


def _names(names, k: int = 3) -> str:
    return ", ".join(str(n)[:20] for n in names[:k]) + (", …" if len(names) > k else "")


def check_savable(model: Model, where: str = "") -> None:
    """Raise UsageError when ``model`` could be saved but not loaded again: its metadata goes
    through the loader's own checks (the same limits: input size, layers, parameters). Run it
    before training, so a run never ends in a file digitnet refuses."""
    meta = json.loads(json.dumps(model.to_meta(), allow_nan=False))
    try:
        _check_class_names(meta, network_from_meta(meta, Path("model"))[0], Path("model"))
    except ModelError as e:
        reason = str(e).removeprefix("model: ")
        raise UsageError(f"{where or model.dataset.get('spec') or 'this data'}: this network on these images would "
                         f"make a model digitnet cannot load ({reason}); nothing was trained") from None


def save_model(model: Model, path: str | os.PathLike, replace: bool = True) -> Path:
    """Write ``model`` to ``path`` atomically: a crash leaves the old file or the new one.

    The parent directory is created when missing. The file keeps the mode of the one it
    replaces (else 0666 less the umask). With ``replace=False`` a file that exists at ``path``
    when the model is published, even one that appeared meanwhile, is kept: FileExistsError.
    Returns the path written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DigitnetError(f"{path.parent}: cannot create the directory ({e.strerror})") from None
    if path.is_dir():
        raise DigitnetError(f"{path}: is a directory; give a file name such as {path / 'model.npz'}")
    arrays = {f"layer{i}.{name}": np.ascontiguousarray(a, np.float32)
              for i, views in enumerate(model.network.views, start=1) for name, a in views.items()}
    arrays["meta"] = np.array(json.dumps(model.to_meta(), allow_nan=False))
    try:
        with atomic_write(path, replace=replace) as f:
            np.savez_compressed(f, **arrays)
    except FileExistsError:
        raise
    except OSError as e:
        raise DigitnetError(f"{path}: could not write the model ({e.strerror})") from None
    return path


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"{text[:20]} is out of range")
    return v


def _depth(value) -> int:
    """How deeply lists and objects nest in a parsed JSON value (iteratively: no recursion)."""
    deepest, todo = 0, [(value, 0)]
    while todo:
        v, d = todo.pop()
        if isinstance(v, (list, dict)):
            deepest = max(deepest, d + 1)
            if d + 1 <= MAX_META_DEPTH:
                todo.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def parse_meta(text: str, path: Path) -> dict:
    """The metadata JSON: strict (no NaN or Infinity, no number beyond a double, nesting at
    most MAX_META_DEPTH deep), so every command can print it and write it back as JSON."""
    try:
        meta = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}: metadata is not valid JSON ({e.msg})") from None
    except ValueError as e:          # NaN/Infinity/1e999, or an integer of thousands of digits
        raise ModelError(f"{path}: metadata is not valid JSON ({str(e).split(';')[0]})") from None
    except RecursionError:
        raise ModelError(f"{path}: metadata nests lists or objects too deeply") from None
    if _depth(meta) > MAX_META_DEPTH:
        raise ModelError(f"{path}: metadata nests lists or objects more than {MAX_META_DEPTH} deep")
    return meta


def _meta_from(z, path: Path) -> dict:
    if "meta" not in z:
        raise ModelError(f"{path}: not a digitnet model (no 'meta' entry; it holds {', '.join(list(z)[:6]) or 'nothing'})")
    shape, dtype = z.header("meta")
    if dtype.kind != "U" or shape != ():
        raise ModelError(f"{path}: 'meta' must be a JSON string, found {dtype} {shape}")
    meta = parse_meta(str(z.read("meta", MAX_META_BYTES, "its metadata")), path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{path}: not a digitnet model (metadata format is {meta.get('format') if isinstance(meta, dict) else None!r})")
    return meta


def _check(cond: bool, path: Path, what: str) -> None:
    if not cond:
        raise ModelError(f"{path}: {what}")


_NUMBER_FIELDS = ("epoch", "lr", "loss", "accuracy", "val_loss", "val_accuracy", "seconds", "samples_per_second")
# what the commands read from a stranger's metadata, and the types they need
_INT, _NUM, _STR, _BOOL = "a whole number", "a number", "a string", "true or false"
_TOP_FIELDS = {"best_epoch": _INT, "test_accuracy": _NUM, "test_loss": _NUM, "test_n": _INT, "stopped": _STR,
               "preset": _STR, "created": _STR, "digitnet_version": _STR}
_CONFIG_FIELDS = {"activation": _STR, "cost": _STR, "layers": _STR, "optimizer": _STR, "schedule": _STR,
                  "epochs": _INT, "batch_size": _INT, "seed": _INT, "lr": _NUM, "momentum": _NUM, "l2": _NUM,
                  "val_split": _NUM, "augment": _BOOL}


def _is_number(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _is(v, kind: str) -> bool:
    """``v`` is None or of ``kind`` (booleans are not numbers; 2.0 is not a whole number)."""
    if v is None:
        return True
    if kind == _INT:
        return type(v) is int
    if kind == _NUM:
        return _is_number(v)
    return isinstance(v, str) if kind == _STR else isinstance(v, bool)


def _scalar(v) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _check_descriptions(meta: dict, path: Path) -> None:
    """The metadata that describes rather than computes (config, history, data set,
    preprocessing, results) must have the types the commands read, so a stranger's file is
    refused here with one line instead of failing later inside a command."""
    _check(isinstance(meta.get("preprocessing", "mnist"), str), path, "preprocessing must be a name (a string)")
    for key, kind in _TOP_FIELDS.items():
        _check(_is(meta.get(key), kind), path, f"{key} must be {kind}, not {meta.get(key)!r:.40}")
    config = meta.get("config") or {}
    _check(isinstance(config, dict), path, "config must be a JSON object")
    for key, value in config.items():
        kind = _CONFIG_FIELDS.get(key)
        if key == "hidden":
            ok, kind = isinstance(value, list) and all(type(h) is int for h in value), "a list of whole numbers"
        else:
            ok = _is(value, kind) if kind else _scalar(value)
            kind = kind or "a string, number or true/false"
        _check(ok, path, f"config {key} must be {kind}, not {value!r:.40}")
    dataset = meta.get("dataset") or {}
    _check(isinstance(dataset, dict) and all(isinstance(dataset.get(k, ""), str) for k in ("name", "spec", "checksum"))
           and all(type(dataset.get(k, 0)) is int for k in ("train", "test"))
           and all(_scalar(v) for v in dataset.values()),
           path, "dataset must be a JSON object (name, spec, checksum: strings; train, test: whole numbers)")
    history = meta.get("history") or []
    _check(isinstance(history, list) and all(isinstance(h, dict) and all(_is_number(h.get(k)) for k in _NUMBER_FIELDS)
                                             and _is(h.get("epoch"), _INT) for h in history),
           path, f"history must be a list of per-epoch records with numbers ({', '.join(_NUMBER_FIELDS)}; "
                 "epoch a whole number)")


def check_output(path: str | os.PathLike) -> Path:
    """Say before any work whether a model can be written to ``path``: the path must not be a
    directory and its nearest existing ancestor must be a writable directory (missing
    directories are created by ``save_model``). Raises UsageError naming what is in the way."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--out {path} is a directory; give a file name such as {path / 'digitnet.npz'}")
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"--out {path}: {parent} is a file, not a directory, so nothing can be written under it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out {path}: the directory {parent} is not writable")
    return path


def _network_v1(meta: dict, path: Path) -> tuple[Network, dict[str, np.ndarray]]:
    """A version-1 file's dense network (``sizes``, ``activation``, ``cost``) and the arrays it
    needs, ``W1, b1, …``, as views of its parameters."""
    sizes = meta.get("sizes")
    _check(isinstance(sizes, list) and 2 <= len(sizes) <= MAX_LAYERS
           and all(type(s) is int and 0 < s <= MAX_UNITS for s in sizes),
           path, f"layer sizes {sizes!r:.200} are not a list of positive whole numbers")
    act, cost = meta.get("activation"), meta.get("cost")
    _check(isinstance(act, str) and act in ACTIVATIONS and ACTIVATIONS[act].hidden, path,
           f"unknown activation {act!r:.60} (known: {', '.join(a for a in ACTIVATIONS if ACTIVATIONS[a].hidden)})")
    _check(isinstance(cost, str) and cost in COSTS, path, f"unknown cost {cost!r:.60} (known: {', '.join(COSTS)})")
    _check(_shape_ok(meta.get("input_shape")) and meta["input_shape"][0] * meta["input_shape"][1] == sizes[0],
           path, f"input shape {meta.get('input_shape')!r:.60} does not match the {sizes[0]} inputs")
    # version 1 fixed the output by the cost: softmax with cross-entropy, sigmoid with quadratic
    try:
        net = Network(dense_layers(sizes, act, COSTS[cost].output), (1, *meta["input_shape"]), cost)
    except ValueError as e:
        raise ModelError(f"{path}: {e}") from None
    dense = [views for views in net.views if views]
    return net, {f"{name}{l}": views[name] for l, views in enumerate(dense, start=1) for name in ("W", "b")}


def _network_v2(meta: dict, path: Path) -> tuple[Network, dict[str, np.ndarray]]:
    """A version-2 file's network (the ``layers`` list through the registry) and the arrays it
    needs, ``layer{i}.NAME``, as views of its parameters."""
    configs, cost = meta.get("layers"), meta.get("cost")
    _check(isinstance(configs, list) and 1 <= len(configs) <= MAX_LAYERS, path,
           f"layers must be a list of 1 to {MAX_LAYERS} layer objects")
    _check(isinstance(cost, str) and cost in COSTS, path, f"unknown cost {cost!r:.60} (known: {', '.join(COSTS)})")
    _check(_shape_ok(meta.get("input_shape")), path,
           f"input shape {meta.get('input_shape')!r:.60} is not two whole numbers from 1 to {MAX_SIDE}")
    try:
        net = Network([layer_from_config(c) for c in configs], (1, *meta["input_shape"]), cost)
    except ValueError as e:
        raise ModelError(f"{path}: {e}") from None
    return net, {f"layer{i}.{name}": a
                 for i, views in enumerate(net.views, start=1) for name, a in views.items()}


READERS = {1: _network_v1, 2: _network_v2}


def network_from_meta(meta: dict, path: Path) -> tuple[Network, dict[str, np.ndarray]]:
    """The network a file's metadata describes (parameters zero) and, by member name, the
    views its stored arrays fill: what the loader checks, before reading any array."""
    version = meta.get("format_version")
    _check(type(version) is int and version in READERS, path,
           f"model format version {version!r:.20} is not supported (this digitnet reads {', '.join(map(str, READERS))})")
    _check_descriptions(meta, path)
    return READERS[version](meta, path)


def _check_class_names(meta: dict, net: Network, path: Path) -> None:
    names = meta.get("class_names")
    _check(isinstance(names, list) and len(names) == net.n_outputs and all(isinstance(c, str) for c in names),
           path, f"class names {names!r:.200} do not match the {net.n_outputs} outputs")


def _shape_ok(shape) -> bool:
    return isinstance(shape, list) and len(shape) == 2 and all(type(s) is int and 0 < s <= MAX_SIDE for s in shape)


def _fill(net: Network, targets: dict[str, np.ndarray], z, path: Path) -> None:
    """Copy each stored array into its view, checking dtype and shape from the member's
    header before reading it (so memory never exceeds the network's own size), then finiteness."""
    for name, target in targets.items():
        shape, dtype = z.header(name)
        _check(dtype == np.float32, path, f"{name} is {dtype}, expected float32")
        _check(tuple(shape) == target.shape, path, f"{name} has shape {tuple(shape)} but the layers need {target.shape}")
        arr = z.read(name)
        _check(bool(np.isfinite(arr).all()), path, f"{name} holds NaN or infinite values")
        target[...] = arr


# --- weights that pass as numbers but not as a model ----------------------------------------
# Finite float32 weights can still make a forward pass overflow to inf and the scores NaN
# (1e30 × 784 pixels). The loader bounds, layer by layer, the largest magnitude any input
# image in [0, 1] can produce (interval arithmetic in float64: |W a + b| ≤ max_row Σ|W| · |a|max
# + |b|max), and refuses the file when a bound leaves the range float32 computes safely.
SAFE = 1e30          # any value a layer outputs (float32 holds up to 3.4e38: room for sums)
SAFE_SQUARED = 1e15  # queries and keys, whose products are attention scores (inf − inf is NaN)


class _Overflow(Exception):
    pass


def _limit(bound: float, limit: float = SAFE) -> float:
    if not bound <= limit:          # also catches NaN
        raise _Overflow(bound)
    return bound


def _maxabs(a: np.ndarray) -> float:
    return float(np.abs(a, dtype=np.float64).max(initial=0.0))


def _rows(W: np.ndarray) -> float:
    """max over output units of Σ|w| over that unit's inputs (W's first axis is the output)."""
    return float(np.abs(W.reshape(len(W), -1), dtype=np.float64).sum(axis=1).max(initial=0.0))


def _linear(W, b, bound):
    return _rows(W) * bound + _maxabs(b)


def _layernorm(gamma, beta):
    # |x̂| ≤ √D for any finite input (if its variance overflows, x̂ is 0 and the output β)
    return math.sqrt(len(gamma)) * _maxabs(gamma) + _maxabs(beta)


def _block(layer, p, bound):
    """x1 = x + W_o·attention(LN1 x) + b_o; out = x1 + W_2·gelu(W_1 LN2(x1) + b_1) + b_2."""
    qkv = _limit(_linear(p["W_qkv"], p["b_qkv"], _layernorm(p["ln1_gamma"], p["ln1_beta"])), SAFE_SQUARED)
    x1 = _limit(bound + _linear(p["W_o"], p["b_o"], qkv))      # attention averages values: |y| ≤ |v|
    h = _limit(_linear(p["W_1"], p["b_1"], _layernorm(p["ln2_gamma"], p["ln2_beta"])))
    return x1 + _linear(p["W_2"], p["b_2"], h)                  # |gelu(h)| ≤ |h|


BOUNDED = ("sigmoid", "tanh", "softmax")
BOUNDS = {   # layer type -> (layer, its arrays, bound on |input|) -> bound on |output|
    "dense": lambda layer, p, b: _linear(p["W"], p["b"], b),
    "conv": lambda layer, p, b: _linear(p["W"], p["b"], b),       # zero padding adds nothing
    "activation": lambda layer, p, b: 1.0 if layer.function in BOUNDED else b,
    "flatten": lambda layer, p, b: b,
    "dropout": lambda layer, p, b: b,
    "maxpool": lambda layer, p, b: b,
    "patch": lambda layer, p, b: max(_maxabs(p["cls"]), _linear(p["W"], p["b"], b)) + _maxabs(p["pos"]),
    "block": _block,
    "cls": lambda layer, p, b: _layernorm(p["gamma"], p["beta"]),
}


def check_usable(net: Network, path: str | os.PathLike = "") -> None:
    """Refuse a network whose weights, though finite, can overflow float32 in a forward pass
    for some image with pixels in [0, 1] (its scores would be NaN). ModelError names the layer."""
    bound = 1.0
    for i, (layer, p) in enumerate(zip(net.layers, net.views), start=1):
        try:
            bound = _limit(BOUNDS[layer.type](layer, p, bound))
        except _Overflow as e:
            raise ModelError(f"{path}: not a usable model: weights so large that layer {i} ({layer.describe()}) "
                             f"can reach {e.args[0]:.1e}, beyond what float32 computes safely (its scores could be NaN)") from None


def load_model(path: str | os.PathLike) -> Model:
    """Load and validate a model file (version 1 or 2); ModelError says what is wrong. Never
    unpickles; reads only the members the network needs, each after checking its header,
    and refuses weights that would make the scores overflow (see ``check_usable``)."""
    path = Path(path)
    with open_npz(path, ModelError, "a digitnet model") as z:
        meta = _meta_from(z, path)
        net, targets = network_from_meta(meta, path)
        stored = set(z) - {"meta"}
        if stored != set(targets):
            shown = sorted(stored)
            listed = ", ".join(repr(n[:40]) for n in shown[:12]) + (f", … ({len(shown):,} in all)" if len(shown) > 12 else "")
            _check(False, path, f"arrays [{listed}] do not match the layers, which need {sorted(targets)}"
                   if meta["format_version"] != 1 else f"arrays [{listed}] do not match {len(targets) // 2} layers")
        _fill(net, targets, z, path)
    _check_class_names(meta, net, path)
    check_usable(net, path)
    return Model(net, tuple(meta["class_names"]), tuple(meta["input_shape"]), str(meta.get("preprocessing", "mnist")),
                 meta.get("config") or {}, meta.get("history") or [], meta.get("dataset") or {}, meta, str(path))


# The model used when none is named has one rule, in digitnet.modelpath; ``default_model_path``
# is its older name here, kept for scripts that import it.
default_model_path = default_model
