"""The bad-input matrix, through the real console script: every kind of bad file for every
kind of file digitnet reads, models from strangers, and bad options.

Each row runs ``.venv/bin/digitnet`` in a subprocess and asserts the exit code, that stderr
is ONE line naming the file (or the option) and what was wrong, and that there is no
traceback. The rows run a few at a time before the first assertion (each is a separate
process of ~0.4 s); afterwards every file in the world directory must be byte-for-byte what
it was, and nothing new may exist (a failed ``train --force`` leaves its --out alone).
"""

from __future__ import annotations

import concurrent.futures
import gzip
import hashlib
import io
import json
import os
import struct
import subprocess
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DIGITNET = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "digitnet"
PREFIX = "digitnet: error: "


class _CreatesFile:
    """Unpickling this runs ``open(path, "w")``: the file appears only if someone unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


# --- building bad files -------------------------------------------------------------------

def idx_header(n, h=28, w=28, typ=0x08):
    return bytes([0, 0, typ, 3]) + struct.pack(">3I", n, h, w)


def idx_labels(values, typ=0x08):
    dt = {0x08: ">u1", 0x0C: ">i4"}[typ]
    return bytes([0, 0, typ, 1]) + struct.pack(">I", len(values)) + np.asarray(values, dt).tobytes()


def png_claiming(width, height):
    """A valid-looking PNG whose header says width×height: a few hundred bytes that would
    decode to width·height pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
            + chunk(b"IEND", b""))


def gif_claiming(width, height):
    """A GIF whose screen and first frame say width×height."""
    return (b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b","
            + struct.pack("<HHHH", 0, 0, width, height) + b"\x00\x02\x02\x44\x01\x00;")


def png_bytes(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def model_arrays(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def rewrite_model(good, out, meta=None, arrays=None):
    """Copy a model file with its metadata or arrays changed (np.savez: no validation)."""
    data = model_arrays(good)
    if meta is not None:
        m = json.loads(str(data["meta"]))
        m.update(meta)
        data["meta"] = np.array(json.dumps(m))
    data.update(arrays or {})
    np.savez(out, **data)


def npz_with_lying_header(out, arrays, liar, dtype=np.float32, shape=(200_000, 200_000)):
    """An .npz of ``arrays`` plus the member ``liar``, whose .npy header claims ``shape``
    (160 GB by default) but which holds 16 bytes (a member the reader needs, so it must look
    at it)."""
    hdr = np.lib.format.header_data_from_array_1_0(np.zeros((2, 2), dtype))
    hdr["shape"] = shape
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, hdr)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{liar}.npy", buf.getvalue() + bytes(16))
        for name, array in arrays.items():
            if name != liar:
                m = io.BytesIO()
                np.save(m, array)
                z.writestr(f"{name}.npy", m.getvalue())


def model_with_meta_text(good, out, edit):
    """Copy a model file with its metadata JSON text changed by ``edit(text) -> text``: for
    metadata json.dumps would never write (NaN, 1e400, deep nesting, giant integers)."""
    data = model_arrays(good)
    data["meta"] = np.array(edit(str(data["meta"])))
    np.savez(out, **data)


def idx_folder(d, name, **changes):
    """A folder of the four IDX files (3 train, 2 test images); ``changes`` maps a role to
    new bytes (None deletes it; a role ending in _gz is written gzipped instead)."""
    folder = d / name
    folder.mkdir()
    files = {"train-images-idx3-ubyte": idx_header(3) + bytes(3 * 784),
             "train-labels-idx1-ubyte": idx_labels([0, 1, 2]),
             "t10k-images-idx3-ubyte": idx_header(2) + bytes(2 * 784),
             "t10k-labels-idx1-ubyte": idx_labels([0, 1])}
    for role, data in changes.items():
        stem = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
                "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}[role.removesuffix("_gz")]
        files.pop(stem)
        if data is not None:
            files[stem + (".gz" if role.endswith("_gz") else "")] = data
    for fname, data in files.items():
        (folder / fname).write_bytes(data)
    return folder


def build_world(d: Path) -> None:
    """Every bad file of the matrix, in ``d``; plus a good model and a tiny good data set."""
    from digitnet.datasets import DIGIT_NAMES
    from digitnet.modelfile import Model, save_model
    from digitnet.nn.network import Network, dense_layers

    rng = np.random.default_rng(0)
    w = lambda name, data: (d / name).write_bytes(data)  # noqa: E731

    # a tiny data set and an untrained model that names it (evaluate needs no --data)
    np.savez(d / "tiny.npz", train_images=rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
             train_labels=rng.integers(0, 10, 40), test_images=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
             test_labels=rng.integers(0, 10, 10))
    net = Network.init(dense_layers((784, 8, 10), "relu", "softmax"), (1, 28, 28), "cross-entropy", seed=0)
    model = Model(net, DIGIT_NAMES, dataset={"name": "tiny", "spec": str(d / "tiny.npz")})
    save_model(model, d / "good.npz")
    save_model(model, d / "keep.npz")            # an --out the failing trainings must not touch
    good = d / "good.npz"
    good_bytes = good.read_bytes()

    # model files
    w("m-empty.npz", b"")
    w("m-random.npz", rng.bytes(600))
    w("m-half.npz", good_bytes[: len(good_bytes) // 2])
    w("m-tail.npz", good_bytes[:-30])
    mid = bytearray(good_bytes)
    mid[len(mid) // 2: len(mid) // 2 + 64] = rng.bytes(64)
    w("m-crc.npz", bytes(mid))
    w("m-png.npz", png_bytes(np.zeros((4, 4), np.uint8)))
    np.save(d / "m-npy.npy", np.zeros(3))
    (d / "m-npy.npy").rename(d / "m-npy.npz")
    (d / "m-dir.npz").mkdir()
    np.savez(d / "m-pickle.npz", W1=np.array([_CreatesFile(d / "PWNED-model")], dtype=object), meta=np.array("{}"))
    np.savez(d / "m-foreign.npz", x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.zeros(2, np.uint8))
    # version 2 (what digitnet writes): layers 1 flatten, 2 dense8, 3 relu, 4 dense10, 5 softmax
    layers = json.loads(str(model_arrays(good)["meta"]))["layers"]

    def with_layer(i, **settings):
        return {"layers": [dict(l, **settings) if j == i else l for j, l in enumerate(layers)]}

    rewrite_model(good, d / "m-activation.npz", meta=with_layer(2, function="swish"))
    rewrite_model(good, d / "m-type.npz", meta=with_layer(0, type="lstm"))
    rewrite_model(good, d / "m-setting.npz", meta=with_layer(1, dilation=2))
    rewrite_model(good, d / "m-settingtype.npz", meta=with_layer(1, units="8"))
    rewrite_model(good, d / "m-huge.npz", meta={"layers": [layers[0], {"type": "dense", "units": 65536},
                                                           {"type": "dense", "units": 65536}, *layers[3:]]})
    rewrite_model(good, d / "m-version.npz", meta={"format_version": 99})
    rewrite_model(good, d / "m-sizes.npz", meta=with_layer(1, units=9))
    rewrite_model(good, d / "m-layers.npz", meta={"layers": layers[:3] + [{"type": "dense", "units": 3}] + layers[3:]})
    rewrite_model(good, d / "m-classes.npz", meta={"class_names": ["a", "b"]})
    rewrite_model(good, d / "m-inshape.npz", meta={"input_shape": [20, 20]})
    rewrite_model(good, d / "m-history.npz", meta={"history": "lots"})
    rewrite_model(good, d / "m-dataset.npz", meta={"dataset": [1, 2]})
    rewrite_model(good, d / "m-nan.npz", arrays={"layer2.W": np.full((8, 784), np.nan, np.float32)})
    rewrite_model(good, d / "m-inf.npz", arrays={"layer4.b": np.full(10, np.inf, np.float32)})
    rewrite_model(good, d / "m-f64.npz", arrays={"layer4.W": np.zeros((10, 8))})
    rewrite_model(good, d / "m-json.npz", arrays={"meta": np.array("{not json")})
    data = model_arrays(good)
    data.pop("layer4.b")
    np.savez(d / "m-missing.npz", **data)
    # version 1 (digitnet 0.1): a real file, then changed
    v1 = Path(__file__).resolve().parent / "data" / "model-v1-3b1b.npz"
    w("m1-good.npz", v1.read_bytes())
    rewrite_model(v1, d / "m1-activation.npz", meta={"activation": "swish"})
    rewrite_model(v1, d / "m1-sizes.npz", meta={"sizes": [784, 9, 16, 10]})
    rewrite_model(v1, d / "m1-layers.npz", meta={"sizes": [784, 16, 16, 10, 3]})
    rewrite_model(v1, d / "m1-nan.npz", arrays={"W1": np.full((16, 784), np.nan, np.float32)})
    npz_with_lying_header(d / "m-liar.npz", model_arrays(good), "layer2.W")
    npz_with_lying_header(d / "m-short.npz", model_arrays(good), "layer2.W", shape=(8, 784))

    # models that pass the old checks but are not usable: crafted metadata, huge weights
    def add_key(text):      # a new top-level key: text -> edit adding "x": text before the final brace
        return lambda meta: meta[:-1] + ', "x": ' + text + "}"

    model_with_meta_text(good, d / "m-deep.npz", add_key("[" * 100_000 + "]" * 100_000))
    model_with_meta_text(good, d / "m-deep20.npz", add_key("[" * 20 + "]" * 20))
    model_with_meta_text(good, d / "m-nanhist.npz", lambda meta: meta.replace(
        '"history": []', '"history": [{"epoch": 1, "lr": 0.1, "loss": NaN, "accuracy": 0.5, "val_loss": null, '
                         '"val_accuracy": Infinity, "seconds": 1, "samples_per_second": 1}]'))
    model_with_meta_text(good, d / "m-1e400.npz", lambda meta: meta[:-1] + ', "test_accuracy": 1e400}')
    model_with_meta_text(good, d / "m-bigint.npz", lambda meta: meta[:-1] + ', "test_n": ' + "9" * 5000 + "}")
    record = {"epoch": 1.5, "lr": 0.1, "loss": 1.0, "accuracy": 0.5, "val_loss": None, "val_accuracy": 0.5,
              "seconds": 1.0, "samples_per_second": 1.0}
    rewrite_model(good, d / "m-floatepoch.npz", meta={"history": [record]})
    rewrite_model(good, d / "m-floatbest.npz", meta={"best_epoch": 1.5})
    rewrite_model(good, d / "m-floatcfg.npz", meta={"config": {"epochs": 2.5, "batch_size": 1.5}})
    rewrite_model(good, d / "m-strcfg.npz", meta={"config": {"lr": "fast"}})
    huge = model_arrays(good)["layer4.W"].copy()
    huge[:] = 3e38
    rewrite_model(good, d / "m-hugew.npz", arrays={"layer4.W": huge})
    rewrite_model(good, d / "m-wide.npz", meta={"input_shape": [1, 5000]})
    rewrite_model(good, d / "m-fashion.npz", meta={"class_names": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]})

    # IDX data set folders
    idx_folder(d, "i-good")
    idx_folder(d, "i-missing", test_labels=None)
    idx_folder(d, "i-empty", train_images=b"")
    idx_folder(d, "i-random", train_images=rng.bytes(1000))
    idx_folder(d, "i-png", train_images=png_bytes(np.zeros((28, 28), np.uint8)))
    idx_folder(d, "i-claims", train_images=idx_header(60000) + bytes(1234))
    idx_folder(d, "i-2d", train_images=bytes([0, 0, 8, 2]) + struct.pack(">2I", 3, 784) + bytes(3 * 784))
    idx_folder(d, "i-count", train_labels=idx_labels([0, 1, 2, 3, 4]))
    idx_folder(d, "i-nan", train_images=bytes([0, 0, 0x0D, 3]) + struct.pack(">3I", 3, 28, 28)
               + np.full(3 * 784, np.nan, ">f4").tobytes())
    idx_folder(d, "i-testsize", test_images=idx_header(2, 20, 20) + bytes(2 * 400))
    idx_folder(d, "i-label", train_labels=idx_labels([0, 1, 2 ** 30], typ=0x0C))
    idx_folder(d, "i-gz-cut", train_images_gz=gzip.compress(idx_header(3) + bytes(3 * 784))[:40])
    idx_folder(d, "i-gz-claims", train_images_gz=gzip.compress(idx_header(60000) + bytes(1234)))
    idx_folder(d, "i-gz-random", train_images_gz=b"\x1f\x8b" + rng.bytes(300))
    # single IDX files for predict
    w("p-claims.idx", idx_header(60000) + bytes(1234))
    w("p-cut.idx.gz", gzip.compress(idx_header(3) + bytes(3 * 784))[:40])
    w("p-labels.idx", idx_labels([0, 1, 2]))
    w("p-20x20.idx", idx_header(3, 20, 20) + bytes(1200))

    # image files
    digit = np.zeros((64, 64), np.uint8)
    digit[10:54, 28:36] = 255
    good_png = png_bytes(digit)
    w("img-empty.png", b"")
    w("img-random.png", rng.bytes(500))
    w("img-cut.png", good_png[: len(good_png) // 2])
    w("img-pdf.png", b"%PDF-1.4\n% not an image\n")
    w("img-npz.png", good_bytes)
    w("img-bomb.png", png_claiming(30000, 30000))
    w("img-bomb.gif", gif_claiming(30000, 30000))
    w("img-144mp.png", png_claiming(12000, 12000))
    Image.fromarray(np.full((8, 8), np.nan, np.float32), mode="F").save(d / "img-nan.tif")
    inf = np.zeros((30, 30), np.float32)
    inf[10:20, 12:15] = np.inf
    Image.fromarray(inf, mode="F").save(d / "img-inf.tif")
    Image.new("L", (40, 40), 255).save(d / "img-blank.png")
    (d / "no-images").mkdir()
    (d / "no-images" / "notes.txt").write_text("nothing to see")

    # .npy arrays
    w("a-empty.npy", b"")
    w("a-random.npy", rng.bytes(300))
    np.save(d / "a-good.npy", np.zeros((3, 28, 28), np.uint8))
    w("a-cut.npy", (d / "a-good.npy").read_bytes()[:200])
    np.save(d / "a-pickle.npy", np.array([_CreatesFile(d / "PWNED-npy")], dtype=object), allow_pickle=True)
    np.save(d / "a-27x28.npy", np.zeros((3, 27, 28), np.uint8))
    np.save(d / "a-nan.npy", np.full((1, 28, 28), np.nan, np.float32))
    np.save(d / "a-inf.npy", np.full((1, 784), -np.inf, np.float32))
    w("a-npz.npy", (d / "tiny.npz").read_bytes())

    # CSV
    row = lambda v: (",".join([v] * 784) + "\n").encode()  # noqa: E731
    w("c-empty.csv", b"")
    w("c-random.csv", rng.bytes(3000))
    w("c-cols.csv", b"1,2,3\n4,5,6\n")
    w("c-nan.csv", row("nan"))
    w("c-inf.csv", row("inf"))
    w("c-ragged.csv", row("0") + b"1,2\n")
    w("c-words.csv", row("0") + row("x"))
    w("c-bad.csv.gz", b"\x1f\x8b" + rng.bytes(100))

    # .npz data sets
    ds = (d / "tiny.npz").read_bytes()
    w("d-empty.npz", b"")
    w("d-random.npz", rng.bytes(400))
    w("d-cut.npz", ds[: len(ds) // 2])
    w("d-png.npz", good_png)
    z28 = np.zeros((5, 28, 28), np.uint8)
    np.savez(d / "d-count.npz", train_images=z28, train_labels=np.zeros(4, np.int64))
    np.savez(d / "d-inf.npz", train_images=np.full((5, 28, 28), np.inf, np.float32), train_labels=np.zeros(5, np.int64))
    np.savez(d / "d-nan.npz", x_train=np.full((5, 784), np.nan, np.float32), y_train=np.zeros(5, np.int64))
    np.savez(d / "d-dims.npz", train_images=np.zeros((5, 28), np.uint8), train_labels=np.zeros(5, np.int64))
    np.savez(d / "d-pickle.npz", train_images=np.array([_CreatesFile(d / "PWNED-data")], dtype=object),
             train_labels=np.zeros(1, np.int64))
    np.savez(d / "d-nosplit.npz", train_images=np.zeros((0, 28, 28), np.uint8), train_labels=np.zeros(0, np.int64))
    np.savez(d / "d-label.npz", train_images=z28[:2], train_labels=np.array([0, 5000]))
    np.savez(d / "d-floatlabel.npz", train_images=z28[:2], train_labels=np.array([0.5, 1.0]))
    np.savez(d / "d-testsize.npz", train_images=z28[:2], train_labels=np.array([0, 1]),
             test_images=np.zeros((2, 20, 20), np.uint8), test_labels=np.array([0, 1]))
    np.savez(d / "d-20x20.npz", images=np.zeros((4, 20, 20), np.uint8), labels=np.array([0, 1, 2, 3]))
    np.savez(d / "d-1x5000.npz", train_images=np.zeros((4, 1, 5000), np.uint8), train_labels=np.array([0, 1, 0, 1]))
    np.savez_compressed(d / "d-bignames.npz", train_images=z28[:2], train_labels=np.array([0, 1]),
                        class_names=np.array(["n" * 100] * 3000))
    npz_with_lying_header(d / "d-liar.npz", {"train_labels": np.zeros(3, np.int64)}, "train_images", np.uint8)

    # a folder to import with no class folders
    (d / "loose").mkdir()
    (d / "loose" / "a.png").write_bytes(good_png)


# --- the matrix ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """One bad input: the command line ({d} is the world directory), the exit code, the
    words the one stderr line must hold, and what it must name (a file or an option)."""

    id: str
    argv: str
    code: int
    says: tuple[str, ...]
    names: str


def R(id, argv, code, says, names=None):
    says = (says,) if isinstance(says, str) else tuple(says)
    return Row(id, argv, code, says, names if names is not None else _first_path(argv))


def _first_path(argv: str) -> str:
    """The last {d}/… word of the command line: the file the row is about."""
    return [a for a in argv.split() if a.startswith("{d}")][-1]


M = "-m {d}/good.npz"          # predict's model
TRAIN = "train --data {d}/tiny.npz --out {d}/keep.npz --force"   # a failing train must keep keep.npz

ROWS = [
    # model files, through evaluate (and predict / inspect summary / train --resume)
    R("model missing", "evaluate {d}/m-none.npz", 1, "no such file"),
    R("model empty", "evaluate {d}/m-empty.npz", 1, "the file is empty"),
    R("model random bytes", "evaluate {d}/m-random.npz", 1, "not an .npz"),
    R("model truncated half", "evaluate {d}/m-half.npz", 1, "damaged"),
    R("model truncated tail", "evaluate {d}/m-tail.npz", 1, "damaged"),
    R("model corrupt CRC", "evaluate {d}/m-crc.npz", 1, "damaged"),
    R("model PNG behind .npz", "evaluate {d}/m-png.npz", 1, "not an .npz"),
    R("model .npy behind .npz", "evaluate {d}/m-npy.npz", 1, "single .npy"),
    R("model is a directory", "evaluate {d}/m-dir.npz", 1, "is a directory"),
    R("model object array (evaluate)", "evaluate {d}/m-pickle.npz", 1, "never unpickles"),
    R("model object array (predict)", "predict -m {d}/m-pickle.npz {d}/a-good.npy", 1, "never unpickles", "{d}/m-pickle.npz"),
    R("model object array (inspect)", "inspect summary {d}/m-pickle.npz", 1, "never unpickles"),
    R("model object array (resume)", "train --resume {d}/m-pickle.npz --out {d}/keep.npz --force", 1, "never unpickles",
      "{d}/m-pickle.npz"),
    R("model foreign .npz", "evaluate {d}/m-foreign.npz", 1, "not a digitnet model"),
    R("model unknown activation", "evaluate {d}/m-activation.npz", 1, ("function must be", "sigmoid, relu, tanh",
                                                                       "'swish'")),
    R("model unknown layer type", "evaluate {d}/m-type.npz", 1, "unknown layer type 'lstm'"),
    R("model unknown layer type (predict)", "predict -m {d}/m-type.npz {d}/a-good.npy", 1, "unknown layer type 'lstm'",
      "{d}/m-type.npz"),
    R("model unknown setting", "evaluate {d}/m-setting.npz", 1, "dense layer: unknown setting 'dilation'"),
    R("model setting of the wrong type", "inspect summary {d}/m-settingtype.npz", 1, "units must be int"),
    R("model too many parameters", "evaluate {d}/m-huge.npz", 1, "parameters is more than digitnet handles"),
    R("model too many parameters (resume)", "train --resume {d}/m-huge.npz --out {d}/keep.npz --force", 1,
      "parameters is more than digitnet handles", "{d}/m-huge.npz"),
    R("model format version", "evaluate {d}/m-version.npz", 1, "format version 99 is not supported"),
    R("model layers vs W shape", "evaluate {d}/m-sizes.npz", 1, "layer2.W has shape (8, 784) but the layers need (9, 784)"),
    R("model layers vs arrays", "evaluate {d}/m-layers.npz", 1, "do not match the layers"),
    R("model missing array", "predict -m {d}/m-missing.npz {d}/a-good.npy", 1, "do not match the layers",
      "{d}/m-missing.npz"),
    R("model class names vs outputs", "predict -m {d}/m-classes.npz {d}/a-good.npy", 1, "class names",
      "{d}/m-classes.npz"),
    R("model input shape vs inputs", "inspect summary {d}/m-inshape.npz", 1, "need (8, 400)"),
    R("model history wrong type", "inspect summary {d}/m-history.npz", 1, "history must be a list"),
    R("model dataset wrong type", "evaluate {d}/m-dataset.npz", 1, "dataset must be a JSON object"),
    R("model NaN weights", "evaluate {d}/m-nan.npz", 1, "layer2.W holds NaN or infinite values"),
    R("model inf biases", "inspect summary {d}/m-inf.npz", 1, "layer4.b holds NaN or infinite values"),
    R("model float64 weights", "evaluate {d}/m-f64.npz", 1, "layer4.W is float64, expected float32"),
    R("model metadata not JSON", "evaluate {d}/m-json.npz", 1, "not valid JSON"),
    R("v1 model unknown activation", "evaluate {d}/m1-activation.npz", 1, ("unknown activation 'swish'",
                                                                          "sigmoid, relu, tanh")),
    R("v1 model sizes vs W shape", "evaluate {d}/m1-sizes.npz", 1, "W1 has shape (16, 784)"),
    R("v1 model sizes vs layer count", "evaluate {d}/m1-layers.npz", 1, "do not match 4 layers"),
    R("v1 model NaN weights", "predict -m {d}/m1-nan.npz {d}/a-good.npy", 1, "W1 holds NaN or infinite values",
      "{d}/m1-nan.npz"),
    R("model header claims 160 GB", "evaluate {d}/m-liar.npz", 1, "layer2.W has shape (200000, 200000)"),
    R("model header claims more than held", "evaluate {d}/m-short.npz", 1,
      "layer2.W claims shape 8×784 of float32, 25,088 bytes, but holds 16"),

    # models that passed validation but were not usable (one line, never "internal error")
    R("model metadata nested 100,000 deep", "evaluate {d}/m-deep.npz", 1, "nests lists or objects too deeply"),
    R("model metadata nested 20 deep", "inspect summary {d}/m-deep20.npz --json", 1, "more than 16 deep"),
    R("model NaN in the history", "inspect summary {d}/m-nanhist.npz --json", 1, "NaN is not a number JSON allows"),
    R("model 1e400 in the metadata", "inspect summary {d}/m-1e400.npz --json", 1, "1e400 is out of range"),
    R("model 5000-digit integer", "evaluate {d}/m-bigint.npz", 1, "4300 digits"),
    R("model float epoch in the history", "inspect summary {d}/m-floatepoch.npz", 1, "epoch a whole number"),
    R("model float best epoch", "inspect summary {d}/m-floatbest.npz", 1, "best_epoch must be a whole number, not 1.5"),
    R("model float config (resume)", "train --resume {d}/m-floatcfg.npz --out {d}/keep.npz --force", 1,
      "config epochs must be a whole number, not 2.5", "{d}/m-floatcfg.npz"),
    R("model text where a number belongs", "inspect summary {d}/m-strcfg.npz", 1, "config lr must be a number"),
    R("model huge finite weights (evaluate)", "evaluate {d}/m-hugew.npz --json", 1,
      ("not a usable model", "layer 4 (dense10)")),
    R("model huge finite weights (predict)", f"predict -m {{d}}/m-hugew.npz --format jsonl {{d}}/a-good.npy", 1,
      "not a usable model", "{d}/m-hugew.npz"),
    R("model input wider than 4096", "inspect summary {d}/m-wide.npz", 1, "two whole numbers from 1 to 4096"),
    R("train a model the loader would refuse", "train --data {d}/d-1x5000.npz --preset 3b1b --out {d}/keep.npz --force",
      2, ("digitnet cannot load", "from 1 to 4096", "nothing was trained"), "{d}/d-1x5000.npz"),
    R("resume a Fashion model on digits", "train --resume {d}/m-fashion.npz --data {d}/tiny.npz --out {d}/keep.npz --force",
      2, ("classes (0, 1, 2, …) are not the model's (T-shirt/top, Trouser, Pullover, …"), "{d}/tiny.npz"),
    R("--png over the model being inspected", "inspect weights {d}/good.npz --png {d}/good.npz --force", 2,
      "is the file being read", "{d}/good.npz"),

    # IDX data set folders, through data show (and train --data, evaluate --data)
    R("idx folder missing", "data show {d}/i-nowhere", 1, "no such data set"),
    R("idx folder lacks a file", "data show {d}/i-missing", 1, "missing t10k-labels-idx1-ubyte"),
    R("idx empty file", "data show {d}/i-empty", 1, "too short to be an IDX file (0 bytes)"),
    R("idx random bytes", "data show {d}/i-random", 1, "not an IDX file"),
    R("idx PNG behind IDX name", "data show {d}/i-png", 1, "not an IDX file"),
    R("idx header claims more", "data show {d}/i-claims", 1,
      "header says 60,000 images of 28×28 but the file holds 1,234 bytes"),
    R("idx wrong dimensions", "train --data {d}/i-2d --out {d}/keep.npz --force", 1, "expected images (3 dimensions)",
      "{d}/i-2d"),
    R("idx images/labels disagree", "data show {d}/i-count", 1, "3 images but 5 labels"),
    R("idx NaN pixels", "data show {d}/i-nan", 1, "NaN or infinite"),
    R("idx train/test sizes disagree", "evaluate {d}/good.npz --data {d}/i-testsize", 1,
      "train images are 28×28 but test images are 20×20", "{d}/i-testsize"),
    R("idx label out of range", "data show {d}/i-label", 1, "labels must lie in"),
    R("idx .gz cut short", "data show {d}/i-gz-cut", 1, "cut short"),
    R("idx .gz header claims more", "data show {d}/i-gz-claims", 1, "cannot hold that"),
    R("idx .gz random bytes", "data show {d}/i-gz-random", 1, "corrupt gzip"),
    # single IDX files, through predict
    R("idx file header claims more", f"predict {M} {{d}}/p-claims.idx", 1, "header says 60,000 images of 28×28"),
    R("idx file .gz cut short", f"predict {M} {{d}}/p-cut.idx.gz", 1, "cut short"),
    R("idx label file as images", f"predict {M} {{d}}/p-labels.idx", 1, "label file, not images"),
    R("idx file wrong size", f"predict {M} {{d}}/p-20x20.idx", 1, "wrong shape 3×20×20"),

    # image files, through predict (and inspect activations)
    R("image missing", f"predict {M} {{d}}/img-none.png", 1, "no such file"),
    R("image empty", f"predict {M} {{d}}/img-empty.png", 1, "not an image"),
    R("image random bytes", f"predict {M} {{d}}/img-random.png", 1, "not an image"),
    R("image truncated", f"predict {M} {{d}}/img-cut.png", 1, "truncated"),
    R("image PDF behind .png", f"predict {M} {{d}}/img-pdf.png", 1, "not an image"),
    R("image .npz behind .png", f"predict {M} {{d}}/img-npz.png", 1, "not an image"),
    R("image 30000×30000 PNG", f"predict {M} {{d}}/img-bomb.png", 1, "decompression bomb"),
    R("image 30000×30000 GIF", f"predict {M} {{d}}/img-bomb.gif", 1, "decompression bomb"),
    R("image 12000×12000 PNG", f"predict {M} {{d}}/img-144mp.png", 1, "12000×12000 image is too large"),
    R("image bomb (inspect)", "inspect activations {d}/good.npz {d}/img-bomb.png", 1, "decompression bomb"),
    R("image NaN pixels", f"predict {M} {{d}}/img-nan.tif", 1, "NaN or infinite"),
    R("image inf pixels", f"predict {M} {{d}}/img-inf.tif", 1, "NaN or infinite"),
    R("image blank", f"predict {M} {{d}}/img-blank.png", 1, "blank"),
    R("image folder without images", f"predict {M} {{d}}/no-images", 1, "no image files"),

    # .npy arrays, through predict
    R("npy empty", f"predict {M} {{d}}/a-empty.npy", 1, "the file is empty"),
    R("npy random bytes", f"predict {M} {{d}}/a-random.npy", 1, "not a .npy array"),
    R("npy truncated", f"predict {M} {{d}}/a-cut.npy", 1, "shorter than its header says"),
    R("npy object array", f"predict {M} {{d}}/a-pickle.npy", 1, "never unpickles"),
    R("npy wrong dimensions", f"predict {M} {{d}}/a-27x28.npy", 1, "wrong shape 3×27×28"),
    R("npy NaN", f"predict {M} {{d}}/a-nan.npy", 1, "NaN or infinite", "{d}/a-nan.npy[0]"),
    R("npy -inf", f"predict {M} {{d}}/a-inf.npy", 1, "NaN or infinite", "{d}/a-inf.npy[0]"),
    R("npy is an .npz", f"predict {M} {{d}}/a-npz.npy", 1, "give a single .npy array"),
    R("npz data set given to predict", f"predict {M} {{d}}/tiny.npz", 1, "give a single .npy array"),

    # CSV, through predict
    R("csv empty", f"predict {M} {{d}}/c-empty.csv", 1, "empty CSV file"),
    R("csv random bytes", f"predict {M} {{d}}/c-random.csv", 1, "not a text CSV file"),
    R("csv wrong columns", f"predict {M} {{d}}/c-cols.csv", 1, "rows have 3 columns; expected 784"),
    R("csv NaN", f"predict {M} {{d}}/c-nan.csv", 1, "NaN or infinite", "{d}/c-nan.csv[0]"),
    R("csv inf", f"predict {M} {{d}}/c-inf.csv", 1, "NaN or infinite", "{d}/c-inf.csv[0]"),
    R("csv ragged row", f"predict {M} {{d}}/c-ragged.csv", 1, "row 1 is not 784 numbers"),
    R("csv words", f"predict {M} {{d}}/c-words.csv", 1, "row 1 is not 784 numbers"),
    R("csv.gz corrupt", f"predict {M} {{d}}/c-bad.csv.gz", 1, "not a text CSV file"),

    # .npz data sets, through data show, train --data and evaluate --data
    R("data empty", "data show {d}/d-empty.npz", 1, "the file is empty"),
    R("data random bytes", f"{TRAIN.replace('tiny.npz', 'd-random.npz')}", 1, "not an .npz", "{d}/d-random.npz"),
    R("data truncated", "data show {d}/d-cut.npz", 1, "damaged"),
    R("data PNG behind .npz", "evaluate {d}/good.npz --data {d}/d-png.npz", 1, "not an .npz"),
    R("data images/labels disagree", f"{TRAIN.replace('tiny.npz', 'd-count.npz')}", 1, "5 images but 4 labels",
      "{d}/d-count.npz"),
    R("data inf pixels", "data show {d}/d-inf.npz", 1, "NaN or infinite"),
    R("data NaN pixels (keras layout)", "data show {d}/d-nan.npz", 1, "NaN or infinite"),
    R("data wrong dimensions", "data show {d}/d-dims.npz", 1, "must have shape (N, H, W)"),
    R("data object array", "data show {d}/d-pickle.npz", 1, "never unpickles"),
    R("data empty train split", "data show {d}/d-nosplit.npz", 1, "train split is empty"),
    R("data label out of range", "data show {d}/d-label.npz", 1, "labels must lie in"),
    R("data float labels", "data show {d}/d-floatlabel.npz", 1, "1-D integer array"),
    R("data train/test sizes disagree", "data show {d}/d-testsize.npz", 1, "28×28 but test images are 20×20"),
    R("data is a model file", "data show {d}/good.npz", 1, "no image/label arrays"),
    R("data header claims more", "data show {d}/d-liar.npz", 1, "claims shape 200000×200000"),
    R("data class names of 1.2 MB", "data show {d}/d-bignames.npz", 1, "class_names is 1,200,000 bytes, more than"),
    R("data does not fit the model", "evaluate {d}/good.npz --data {d}/d-20x20.npz", 2,
      "20×20 images in 10 classes, but the model takes 28×28"),
    R("import folder missing", "data import {d}/nowhere --out {d}/imp.npz", 1, "no such folder", "{d}/nowhere"),
    R("import folder without classes", "data import {d}/loose --out {d}/imp.npz", 1, "no class folders", "{d}/loose"),

    # options: exit 2, naming the option and what it accepts
    R("--epochs 0", f"{TRAIN} --epochs 0", 2, "at least 1", "--epochs"),
    R("--epochs -3", f"{TRAIN} --epochs -3", 2, "at least 1", "--epochs"),
    R("--batch-size 0", f"{TRAIN} --batch-size 0", 2, "at least 1", "--batch-size"),
    R("--lr 0", f"{TRAIN} --lr 0", 2, "a positive number", "--lr"),
    R("--lr -0.1", f"{TRAIN} --lr -0.1", 2, "a positive number", "--lr"),
    R("--lr nan", f"{TRAIN} --lr nan", 2, "a positive number", "--lr"),
    R("--lr inf", f"{TRAIN} --lr inf", 2, "a positive number", "--lr"),
    R("--hidden 0", f"{TRAIN} --hidden 0", 2, "at least 1 neuron", "--hidden"),
    R("--hidden 16,0", f"{TRAIN} --hidden 16,0", 2, "at least 1 neuron", "--hidden"),
    R("--hidden abc", f"{TRAIN} --hidden abc", 2, "whole numbers", "--hidden"),
    R("--hidden 16,,8", f"{TRAIN} --hidden 16,,8", 2, "whole numbers", "--hidden"),
    R("--hidden 1.5", f"{TRAIN} --hidden 1.5", 2, "whole numbers", "--hidden"),
    R("--hidden ''", f"{TRAIN} --hidden=", 2, "whole numbers", "--hidden"),
    R("--hidden 99999999999", f"{TRAIN} --hidden 99999999999", 2, "at most 65,536", "--hidden"),
    R("--activation swish", f"{TRAIN} --activation swish", 2, ("'swish'", "sigmoid, relu, tanh"), "--activation"),
    R("--cost hinge", f"{TRAIN} --cost hinge", 2, ("'hinge'", "quadratic, cross-entropy"), "--cost"),
    R("--preset huge", f"{TRAIN} --preset huge", 2, ("'huge'", "choose one of: 3b1b, nielsen, lenet, cnn, cnn3, vgg, mlp", "default"), "--preset"),
    R("--layers unknown token", f"{TRAIN} --layers conv8x5,lstm8", 2, "'lstm8' is not a layer", "--layers"),
    R("--layers conv after dense", f"{TRAIN} --layers dense16,conv8x3", 2, ("'conv8x3'", "after a dense layer"),
      "--layers"),
    R("--layers bad activation", f"{TRAIN} --layers dense16:swish", 2, ("'dense16:swish'", "unknown activation"),
      "--layers"),
    R("--layers kernel too large", f"{TRAIN} --layers conv8x40", 2, "a 40×40 kernel does not fit 28×28 maps",
      "--layers"),
    R("--layers empty token", f"{TRAIN} --layers dense16,,dense8", 2, "empty token", "--layers"),
    R("--optimizer rmsprop", f"{TRAIN} --optimizer rmsprop", 2, ("'rmsprop'", "sgd, adam"), "--optimizer"),
    R("--schedule x", f"{TRAIN} --schedule x", 2, ("'x'", "constant, step, cosine"), "--schedule"),
    R("--momentum 1", f"{TRAIN} --momentum 1", 2, "in [0, 1)", "--momentum"),
    R("--val-split 1", f"{TRAIN} --val-split 1", 2, "in [0, 1)", "--val-split"),
    R("--seed -1", f"{TRAIN} --seed -1", 2, "0 or more", "--seed"),
    R("--out is a directory", "train --data {d}/tiny.npz --out {d}/no-images", 2, "is a directory", "--out"),
    R("--out under a file", "train --data {d}/tiny.npz --out {d}/keep.npz/sub/m.npz", 2,
      "is a file, not a directory", "{d}/keep.npz"),
    R("--out exists, no --force", "train --data {d}/tiny.npz --out {d}/keep.npz", 2, "pass --force", "{d}/keep.npz"),
    R("--resume with --hidden", "train --resume {d}/good.npz --hidden 16 --out {d}/keep.npz --force", 2,
      "--resume keeps the model's network (dense8:relu, cross-entropy)", "--hidden"),
    R("--resume with --layers", "train --resume {d}/good.npz --layers conv4x5,dense8 --out {d}/keep.npz --force", 2,
      "--resume keeps the model's network", "--layers"),
    R("--resume with --cost", "train --resume {d}/m1-good.npz --cost cross-entropy --out {d}/keep.npz --force", 2,
      "--resume keeps the model's network (dense16:sigmoid,dense16:sigmoid, quadratic)", "--cost"),
    R("predict --format xml", f"predict {M} --format xml {{d}}/a-good.npy", 2, ("'xml'", "table, csv, tsv, jsonl"),
      "--format"),
    R("predict --top-k 0", f"predict {M} --top-k 0 {{d}}/a-good.npy", 2, "between 1 and 10", "--top-k"),
    R("predict --show --format csv", f"predict {M} --show --format csv {{d}}/a-good.npy", 2, "--show", "--format csv"),
    R("evaluate --split dev", "evaluate {d}/good.npz --split dev", 2, ("'dev'", "test", "train"), "--split"),
    R("data show --count 0", "data show {d}/tiny.npz --count 0", 2, "at least 1", "--count"),
    R("data show --index 99", "data show {d}/tiny.npz --index 99", 2, "out of range", "--index 99"),
    R("data show --label x", "data show {d}/tiny.npz --label x", 2, "not a class", "--label"),
    R("data show --split dev", "data show {d}/tiny.npz --split dev", 2, "train or test", "--split"),
    R("data download unknown", "data download nosuchset --dir {d}/dl", 1, ("nosuchset", "mnist, fashion-mnist, kmnist"),
      "nosuchset"),
]

# Click parses these types itself: its usage error is exit 2 with an "Error:" line naming the
# option (plus its usual "Usage:"/"Try --help" lines; see the report: one line would need a
# change in digitnet/cli/__init__.py).
CLICK_ROWS = [
    ("--epochs ten", f"{TRAIN} --epochs ten", "'--epochs'"),
    ("--batch-size 1.5", f"{TRAIN} --batch-size 1.5", "'--batch-size'"),
    ("--lr fast", f"{TRAIN} --lr fast", "'--lr'"),
    ("--threads 0", f"{TRAIN} --threads 0", "--threads must be auto or a whole number"),
]


def _snapshot(d: Path) -> dict[str, str]:
    """Every file and directory under d: path -> sha256 of its bytes ('dir' for directories)."""
    out = {}
    for p in sorted(d.rglob("*")):
        out[str(p.relative_to(d))] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "100", "XDG_DATA_HOME": str(cwd / "xdg-data")}
    env.pop("DIGITNET_MODEL", None)
    return subprocess.run([str(DIGITNET), *argv], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """Build the world, run every row (three processes at a time), snapshot before and after."""
    d = tmp_path_factory.mktemp("bad-input")
    world = d / "world"
    world.mkdir()
    build_world(world)
    before = _snapshot(world)
    rows = [(r.id, r.argv.format(d=world).split()) for r in ROWS] + \
           [(i, argv.format(d=world).split()) for i, argv, _ in CLICK_ROWS]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = dict(zip([i for i, _ in rows], pool.map(lambda r: _run(r[1], d), rows)))
    return world, results, before, _snapshot(world)


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    return lines[0]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_is_one_line_and_an_exit_code(matrix, row):
    world, results, _, _ = matrix
    r = results[row.id]
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    line = _one_line(r.stderr)
    assert r.returncode == row.code, f"exit {r.returncode}, expected {row.code}: {line}"
    assert line.startswith(PREFIX), line
    assert row.names.format(d=world) in line, f"the message does not name {row.names}: {line}"
    for words in row.says:
        assert words in line, f"{words!r} not in: {line}"


@pytest.mark.parametrize("case", CLICK_ROWS, ids=[c[0] for c in CLICK_ROWS])
def test_options_click_parses_are_usage_errors(matrix, case):
    _, results, _, _ = matrix
    r = results[case[0]]
    assert r.returncode == 2 and "Traceback" not in r.stderr
    line = _one_line(r.stderr)       # the parser's own errors are one line too (cli.main)
    assert line.startswith(PREFIX) and case[2] in line, r.stderr


def test_nothing_the_user_had_changed_and_nothing_ran(matrix):
    world, _, before, after = matrix
    assert after == before, f"changed or created: {sorted(set(after.items()) ^ set(before.items()))}"
    assert not list(world.glob("PWNED*")), "an object array was unpickled"


def test_the_good_files_of_the_world_work(matrix):
    """The rows fail for what the row changed, not because the world itself is broken."""
    world, _, _, _ = matrix
    r = _run(["evaluate", str(world / "good.npz"), "--json"], world.parent)
    assert r.returncode == 0 and json.loads(r.stdout)["n"] == 10, r.stderr
    for model in ("good.npz", "m1-good.npz"):
        r = _run(["predict", "-m", str(world / model), str(world / "a-good.npy"), "--format", "csv"], world.parent)
        assert r.returncode == 0 and len(r.stdout.splitlines()) == 4, r.stderr
    for spec in ("tiny.npz", "i-good"):
        r = _run(["data", "show", str(world / spec), "-n", "1"], world.parent)
        assert r.returncode == 0, r.stderr
