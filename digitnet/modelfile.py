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
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitnet import __version__
from digitnet.atomic import atomic_write
from digitnet.errors import DigitnetError, ModelError, UsageError
from digitnet.nn.functions import ACTIVATIONS, COSTS
from digitnet.nn.layers import MAX_UNITS, layer_from_config
from digitnet.nn.network import Network, dense_layers
from digitnet.npzfile import read_npz

FORMAT = "digitnet-model"
FORMAT_VERSION = 2
MAX_LAYERS = 256


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


def save_model(model: Model, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` atomically: a crash leaves the old file or the new one.

    The parent directory is created when missing. Returns the path written.
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
        with atomic_write(path) as f:
            np.savez_compressed(f, **arrays)
    except OSError as e:
        raise DigitnetError(f"{path}: could not write the model ({e.strerror})") from None
    return path


def _meta_from(z: dict, path: Path) -> dict:
    if "meta" not in z:
        raise ModelError(f"{path}: not a digitnet model (no 'meta' entry; it holds {', '.join(list(z)[:6]) or 'nothing'})")
    raw = z["meta"]
    if raw.dtype.kind != "U" or raw.shape != ():
        raise ModelError(f"{path}: 'meta' must be a JSON string, found {raw.dtype} {raw.shape}")
    try:
        meta = json.loads(str(raw))
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}: metadata is not valid JSON ({e.msg})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{path}: not a digitnet model (metadata format is {meta.get('format') if isinstance(meta, dict) else None!r})")
    return meta


def _check(cond: bool, path: Path, what: str) -> None:
    if not cond:
        raise ModelError(f"{path}: {what}")


_NUMBER_FIELDS = ("epoch", "lr", "loss", "accuracy", "val_loss", "val_accuracy", "seconds", "samples_per_second")


def _is_number(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _check_descriptions(meta: dict, path: Path) -> None:
    """The metadata that describes rather than computes (config, history, data set,
    preprocessing) must have the types the commands read, so a stranger's file is refused
    here with one line instead of failing later inside a command."""
    _check(isinstance(meta.get("preprocessing", "mnist"), str), path, "preprocessing must be a name (a string)")
    _check(isinstance(meta.get("config") or {}, dict), path, "config must be a JSON object")
    dataset = meta.get("dataset") or {}
    _check(isinstance(dataset, dict) and all(isinstance(dataset.get(k, ""), str) for k in ("name", "spec", "checksum"))
           and all(type(dataset.get(k, 0)) is int for k in ("train", "test")),
           path, "dataset must be a JSON object (name, spec, checksum: strings; train, test: whole numbers)")
    history = meta.get("history") or []
    _check(isinstance(history, list) and all(isinstance(h, dict) and all(_is_number(h.get(k)) for k in _NUMBER_FIELDS)
                                             for h in history),
           path, f"history must be a list of per-epoch records with numbers ({', '.join(_NUMBER_FIELDS)})")


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


def _network_v1(meta: dict, z: dict, path: Path) -> Network:
    """A version-1 file's dense network: ``sizes``, ``activation``, ``cost``, ``W1, b1, …``."""
    sizes = meta.get("sizes")
    _check(isinstance(sizes, list) and 2 <= len(sizes) <= MAX_LAYERS
           and all(type(s) is int and 0 < s <= MAX_UNITS for s in sizes),
           path, f"layer sizes {sizes!r} are not a list of positive whole numbers")
    act, cost = meta.get("activation"), meta.get("cost")
    _check(isinstance(act, str) and act in ACTIVATIONS and ACTIVATIONS[act].hidden, path,
           f"unknown activation {act!r} (known: {', '.join(a for a in ACTIVATIONS if ACTIVATIONS[a].hidden)})")
    _check(isinstance(cost, str) and cost in COSTS, path, f"unknown cost {cost!r} (known: {', '.join(COSTS)})")
    _check(_shape_ok(meta.get("input_shape")) and meta["input_shape"][0] * meta["input_shape"][1] == sizes[0],
           path, f"input shape {meta.get('input_shape')!r} does not match the {sizes[0]} inputs")
    # version 1 fixed the output by the cost: softmax with cross-entropy, sigmoid with quadratic
    net = Network(dense_layers(sizes, act, COSTS[cost].output), (1, *meta["input_shape"]), cost)
    expected = {f"{k}{l}" for l in range(1, len(sizes)) for k in "Wb"} | {"meta"}
    _check(set(z) == expected, path, f"arrays {sorted(set(z) - {'meta'})} do not match {len(sizes) - 1} layers")
    dense = [views for views in net.views if views]
    _fill(net, {f"{name}{l}": views[name] for l, views in enumerate(dense, start=1) for name in ("W", "b")}, z, path)
    return net


def _network_v2(meta: dict, z: dict, path: Path) -> Network:
    """A version-2 file's network: the ``layers`` list through the registry, ``layer{i}.NAME`` arrays."""
    configs, cost = meta.get("layers"), meta.get("cost")
    _check(isinstance(configs, list) and 1 <= len(configs) <= MAX_LAYERS, path,
           f"layers must be a list of 1 to {MAX_LAYERS} layer objects")
    _check(isinstance(cost, str) and cost in COSTS, path, f"unknown cost {cost!r} (known: {', '.join(COSTS)})")
    _check(_shape_ok(meta.get("input_shape")), path, f"input shape {meta.get('input_shape')!r} is not two whole numbers")
    try:
        net = Network([layer_from_config(c) for c in configs], (1, *meta["input_shape"]), cost)
    except ValueError as e:
        raise ModelError(f"{path}: {e}") from None
    targets = {f"layer{i}.{name}": a for i, views in enumerate(net.views, start=1) for name, a in views.items()}
    _check(set(z) == set(targets) | {"meta"}, path,
           f"arrays {sorted(set(z) - {'meta'})} do not match the layers, which need {sorted(targets)}")
    _fill(net, targets, z, path)
    return net


def _shape_ok(shape) -> bool:
    return isinstance(shape, list) and len(shape) == 2 and all(type(s) is int and 0 < s <= 4096 for s in shape)


def _fill(net: Network, targets: dict[str, np.ndarray], z: dict, path: Path) -> None:
    """Copy each stored array into its view, checking dtype, shape and finiteness."""
    for name, target in targets.items():
        arr = z[name]
        _check(arr.dtype == np.float32, path, f"{name} is {arr.dtype}, expected float32")
        _check(arr.shape == target.shape, path, f"{name} has shape {arr.shape} but the layers need {target.shape}")
        _check(bool(np.isfinite(arr).all()), path, f"{name} holds NaN or infinite values")
        target[...] = arr


def load_model(path: str | os.PathLike) -> Model:
    """Load and validate a model file (version 1 or 2); ModelError says what is wrong. Never unpickles."""
    path = Path(path)
    z = read_npz(path, ModelError, "a digitnet model")
    meta = _meta_from(z, path)
    version = meta.get("format_version")
    readers = {1: _network_v1, 2: _network_v2}
    _check(type(version) is int and version in readers, path,
           f"model format version {version!r} is not supported (this digitnet reads {', '.join(map(str, readers))})")
    net = readers[version](meta, z, path)
    names = meta.get("class_names")
    _check(isinstance(names, list) and len(names) == net.n_outputs and all(isinstance(c, str) for c in names),
           path, f"class names {names!r} do not match the {net.n_outputs} outputs")
    _check_descriptions(meta, path)
    return Model(net, tuple(names), tuple(meta["input_shape"]), str(meta.get("preprocessing", "mnist")),
                 meta.get("config") or {}, meta.get("history") or [], meta.get("dataset") or {}, meta, str(path))


def default_model_path() -> Path:
    """The model used when none is named: $DIGITNET_MODEL, else the shipped default
    (inside the installed package, or ``models/`` of a checkout)."""
    env = os.environ.get("DIGITNET_MODEL")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for candidate in (here / "models" / "digitnet.npz", here.parent / "models" / "digitnet.npz"):
        if candidate.is_file():
            return candidate
    return here.parent / "models" / "digitnet.npz"
