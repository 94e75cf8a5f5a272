"""Property tests: digitnet's readers, fed random bytes and random arrays, either succeed or
raise digitnet's own errors (DigitnetError subclasses) and nothing else: no ValueError,
EOFError, zlib.error, MemoryError or RuntimeWarning escaping from NumPy, gzip or Pillow.

Inputs are random but shaped to get past the first check: a real header with random fields
and random bodies, a good file with random bytes changed or cut, random arrays of every
dtype, NaN and infinities included. Example counts stay modest so the file runs in seconds.
"""

from __future__ import annotations

import gzip
import inspect
import io
import json
import struct
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from digitnet.errors import DigitnetError
from digitnet.idx import IDX_TYPES, iter_idx_chunks, read_idx
from digitnet.modelfile import Model, load_model, save_model
from digitnet.nn.layers import LAYERS
from digitnet.nn.network import Network, dense_layers
from digitnet.preprocess import load_image, resize_plain, to_mnist

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def only_own_errors(fn, *args):
    """Call fn; return its result, or None when it raised a DigitnetError. Any other
    exception, and any warning, fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return fn(*args)
        except DigitnetError as e:
            assert str(e) and "\n" not in str(e), f"not one line: {e!r}"
            return None


@st.composite
def idx_blobs(draw):
    """An IDX file: a plausible header (sometimes a random one) and a body that may be
    shorter or longer than the header claims; raw or gzipped, whole or cut."""
    if draw(st.booleans()):
        ndim = draw(st.integers(1, 4))
        code = draw(st.sampled_from(sorted(IDX_TYPES)))
        dims = draw(st.lists(st.one_of(st.integers(0, 6), st.integers(0, 2 ** 32 - 1)), min_size=ndim, max_size=ndim))
        head = bytes([0, 0, code, ndim]) + struct.pack(f">{ndim}I", *dims)
    else:
        head = draw(st.binary(max_size=20))
    blob = head + draw(st.binary(max_size=300))
    if draw(st.booleans()):
        blob = gzip.compress(blob)
        if draw(st.booleans()):
            blob = blob[: draw(st.integers(0, len(blob)))]
    return blob


@SETTINGS
@given(blob=idx_blobs())
def test_idx_reader_raises_only_its_own_errors(tmp_path, blob):
    path = tmp_path / "f.idx"
    path.write_bytes(blob)
    whole = only_own_errors(read_idx, path)
    chunks = only_own_errors(lambda p: list(iter_idx_chunks(p, chunk=2)), path)
    if whole is not None:                 # what the whole reader accepts, the streaming one reads the same
        assert chunks is not None
        got = np.concatenate(chunks) if chunks else np.zeros((0, *whole.shape[1:]), whole.dtype)
        assert np.array_equal(got.reshape(whole.shape), whole, equal_nan=whole.dtype.kind == "f")


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("prop") / "good.npz"
    net = Network.init(dense_layers((16, 3, 2), "relu", "softmax"), (1, 4, 4), "cross-entropy", seed=0)
    save_model(Model(net, ("a", "b"), input_shape=(4, 4)), path)
    return path.read_bytes()


@SETTINGS
@given(data=st.data())
def test_model_loader_on_damaged_files_raises_only_model_errors(tmp_path, model_bytes, data):
    blob = bytearray(model_bytes)
    how = data.draw(st.sampled_from(["cut", "flip", "random", "splice"]))
    if how == "cut":
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    elif how == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(blob) - 1))
            blob[i] = data.draw(st.integers(0, 255))
    elif how == "random":
        blob = bytearray(b"PK\x03\x04" + data.draw(st.binary(max_size=400)))
    else:
        i = data.draw(st.integers(0, len(blob)))
        blob[i:i] = data.draw(st.binary(min_size=1, max_size=50))
    path = tmp_path / "m.npz"
    path.write_bytes(bytes(blob))
    only_own_errors(load_model, path)


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10, 10 ** 6),
                                     st.floats(allow_nan=True), st.text(max_size=8)),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                           max_leaves=12)
META_KEYS = ["format", "format_version", "layers", "sizes", "activation", "cost", "input_shape", "class_names",
             "preprocessing", "config", "history", "dataset"]


@SETTINGS
@given(changes=st.dictionaries(st.sampled_from(META_KEYS), json_values, min_size=1, max_size=4),
       arrays=st.dictionaries(st.sampled_from(["layer2.W", "layer2.b", "layer4.W", "layer4.b", "W1", "x"]),
                              hnp.arrays(st.sampled_from([np.float32, np.float64, np.int8, np.bool_]),
                                         hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)), max_size=3))
def test_model_loader_on_strangers_metadata_raises_only_model_errors(tmp_path, model_bytes, changes, arrays):
    good = tmp_path / "good.npz"
    good.write_bytes(model_bytes)
    with np.load(good, allow_pickle=False) as z:
        content = {k: z[k] for k in z.files}
    meta = json.loads(str(content["meta"]))
    meta.update(changes)
    content["meta"] = np.array(json.dumps(meta))
    content.update(arrays)
    np.savez(tmp_path / "m.npz", **content)
    model = only_own_errors(load_model, tmp_path / "m.npz")
    if model is not None:                 # whatever loads must also run
        out = model.predict_proba(np.zeros((2, *model.input_shape), np.float32))
        assert out.shape == (2, len(model.class_names)) and np.isfinite(out).all()


# a layer config: a known type (mostly) with its required settings and a few others, each
# drawn small or of the wrong type. (A config that lacks a required setting is
# test_modelfile.py's missing-setting case.)
_SETTING_VALUES = st.one_of(st.integers(0, 6), st.sampled_from([0.0, 0.5, 0.99, -1, 2 ** 40, "relu", "softmax",
                                                                 "swish", None, True, [], {}]))
_SETTING_NAMES = sorted({name for cls in LAYERS.values() for name in cls.SETTINGS} | {"extra"})


@st.composite
def layer_configs(draw):
    kind = draw(st.one_of(st.sampled_from(sorted(LAYERS)), st.text(max_size=5)))
    config = {"type": kind}
    if kind in LAYERS:
        params = inspect.signature(LAYERS[kind].__init__).parameters.values()
        for p in params:
            if p.name != "self" and p.default is p.empty:
                config[p.name] = draw(_SETTING_VALUES)
    for name in draw(st.lists(st.sampled_from(_SETTING_NAMES), max_size=3)):
        config[name] = draw(_SETTING_VALUES)
    return config


_PLAUSIBLE = st.one_of(
    st.builds(lambda f, k, s, p: {"type": "conv", "filters": f, "kernel": k, "stride": s, "padding": p},
              st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(0, 1)),
    st.builds(lambda k, s: {"type": "maxpool", "size": k, "stride": s}, st.integers(1, 2), st.integers(1, 2)),
    st.builds(lambda f: {"type": "activation", "function": f}, st.sampled_from(["relu", "tanh", "sigmoid"])),
    st.builds(lambda r: {"type": "dropout", "rate": r}, st.sampled_from([0.0, 0.25, 0.5])),
    st.builds(lambda n: {"type": "dense", "units": n}, st.integers(1, 4)),
    st.just({"type": "flatten"}))


@st.composite
def plausible_layer_lists(draw):
    """Layers that often make a network: a few from a menu, then flatten, dense 2 and an
    output activation; sometimes one entry swapped for a stranger's."""
    layers = draw(st.lists(_PLAUSIBLE, max_size=5)) + [{"type": "flatten"}, {"type": "dense", "units": 2},
                                                        {"type": "activation",
                                                         "function": draw(st.sampled_from(["softmax", "sigmoid"]))}]
    if draw(st.booleans()):
        layers[draw(st.integers(0, len(layers) - 1))] = draw(layer_configs())
    return layers


@SETTINGS
@given(layers=st.one_of(plausible_layer_lists(), st.lists(layer_configs(), max_size=7), json_values),
       keep_arrays=st.booleans(), version=st.sampled_from([2, 2, 1]))
def test_model_loader_on_strangers_layer_lists_raises_only_model_errors(tmp_path, model_bytes, layers, keep_arrays,
                                                                       version):
    """Any layer list (types and settings drawn at random), with the arrays of the good file
    or with arrays made to fit the list: loads, or is refused with a ModelError."""
    good = tmp_path / "good.npz"
    good.write_bytes(model_bytes)
    with np.load(good, allow_pickle=False) as z:
        content = {k: z[k] for k in z.files}
    meta = json.loads(str(content["meta"]))
    meta.update(layers=layers, format_version=version)
    if not keep_arrays and isinstance(layers, list):
        # arrays shaped for the list as the loader would read it, when it can be built at all
        try:
            from digitnet.nn.layers import layer_from_config

            net = Network([layer_from_config(c) for c in layers], (1, 4, 4))
            content = {f"layer{i}.{n}": np.zeros(a.shape, np.float32) for i, v in enumerate(net.views, start=1)
                       for n, a in v.items()}
        except Exception:
            pass
    content["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "m.npz", **content)
    model = only_own_errors(load_model, tmp_path / "m.npz")
    if model is not None:
        out = model.predict_proba(np.zeros((2, *model.input_shape), np.float32))
        assert out.shape == (2, len(model.class_names)) and np.isfinite(out).all()


def _png(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


GOOD_IMAGE = _png((np.arange(24 * 24).reshape(24, 24) % 251).astype(np.uint8))


@SETTINGS
@given(data=st.data())
def test_load_image_on_random_and_damaged_bytes_raises_only_data_errors(tmp_path, data):
    how = data.draw(st.sampled_from(["random", "cut", "flip", "header"]))
    if how == "random":
        blob = data.draw(st.binary(max_size=300))
    elif how == "cut":
        blob = GOOD_IMAGE[: data.draw(st.integers(0, len(GOOD_IMAGE)))]
    elif how == "flip":
        b = bytearray(GOOD_IMAGE)
        for _ in range(data.draw(st.integers(1, 6))):
            b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
        blob = bytes(b)
    else:                                  # a PNG header with random size, depth and colour type
        w, h = data.draw(st.integers(0, 2 ** 31 - 1)), data.draw(st.integers(0, 2 ** 31 - 1))
        ihdr = struct.pack(">IIBBBBB", w, h, data.draw(st.sampled_from([1, 2, 4, 8, 16])),
                           data.draw(st.sampled_from([0, 2, 3, 4, 6])), 0, 0, 0)
        chunk = lambda k, d: struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d) & 0xFFFFFFFF)  # noqa: E731
        blob = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(data.draw(st.binary(max_size=64))))
    path = tmp_path / data.draw(st.sampled_from(["x.png", "x.gif", "x.jpg", "x.tif", "x"]))
    path.write_bytes(blob)
    gray = only_own_errors(load_image, path)
    if gray is not None:
        assert gray.dtype == np.float32 and gray.ndim == 2
        assert np.isfinite(gray).all() and gray.min() >= 0 and gray.max() <= 1


@SETTINGS
@given(array=hnp.arrays(st.sampled_from([np.float32, np.float64, np.uint8, np.int16, np.bool_]),
                        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=40)))
def test_preprocessing_on_random_arrays_raises_only_data_errors(array):
    for fn in (to_mnist, resize_plain):
        out = only_own_errors(fn, array)
        if out is not None:
            assert out.shape == (28, 28) and out.dtype == np.float32
            assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


@SETTINGS
@given(array=hnp.arrays(np.float32, st.tuples(st.integers(1, 12), st.integers(1, 12)),
                        elements=st.floats(width=32)))
def test_float_images_on_disk_raise_only_data_errors(tmp_path, array):
    """32-bit float TIFFs (mode F) may hold any value, NaN and infinities included."""
    path = tmp_path / "f.tif"
    Image.fromarray(array, mode="F").save(path)
    gray = only_own_errors(load_image, path)
    if gray is not None:
        assert np.isfinite(gray).all() and gray.min() >= 0 and gray.max() <= 1
        only_own_errors(to_mnist, gray)


def test_zip_member_names_that_are_not_arrays(tmp_path):
    """A zip holding no .npy members is not a model, said in one line."""
    with zipfile.ZipFile(tmp_path / "m.npz", "w") as z:
        z.writestr("meta.npy", b"\x93NUMPY\x01\x00garbage")
    assert only_own_errors(load_model, tmp_path / "m.npz") is None
