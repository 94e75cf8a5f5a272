"""The model file: round trip (dense and conv, bit for bit), version 1 files still load and
compute what the old code computed, validation of everything a file claims, atomic writes,
no pickles."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from digitnet.errors import ModelError
from digitnet.modelfile import FORMAT_VERSION, Model, default_model_path, load_model, save_model
from digitnet.nn.functions import to_unit_float
from digitnet.nn.network import Network, dense_layers
from digitnet.nn.spec import architecture, parse_layers

DATA = Path(__file__).resolve().parent / "data"
V1 = DATA / "model-v1-3b1b.npz"


def make_model(sizes=(784, 8, 10), seed=1):
    net = Network.init(dense_layers(sizes, "relu", "softmax"), (1, 28, 28), "cross-entropy", seed=seed)
    return Model(net, tuple("0123456789"), config={"seed": 1}, history=[{"epoch": 1, "loss": 0.5}],
                 dataset={"name": "embedded"})


def make_conv_model(spec="conv4x3p1,pool2,conv6x3s2:tanh,dense12,dropout0.25", seed=2):
    layers = architecture(parse_layers(spec, "relu"), (1, 28, 28), 10, "softmax")
    net = Network.init(layers, (1, 28, 28), "cross-entropy", seed=seed)
    net.params += np.random.default_rng(seed).normal(0, 0.01, net.n_params).astype(np.float32)   # biases too
    return Model(net, tuple("0123456789"), config={"layers": spec}, dataset={"name": "embedded"})


def test_round_trip(tmp_path):
    m = make_model()
    path = save_model(m, tmp_path / "m.npz")
    back = load_model(path)
    assert np.array_equal(back.network.params, m.network.params)
    assert back.network.mlp() == ((784, 8, 10), "relu", "softmax") and back.class_names == m.class_names
    assert back.meta["format_version"] == FORMAT_VERSION == 2 and back.meta["created"]
    assert back.history == m.history and back.dataset["name"] == "embedded"
    with np.load(path, allow_pickle=False) as z:
        assert z["meta"].dtype.kind == "U" and z["meta"].shape == ()
        assert {z[k].dtype for k in z.files if k != "meta"} == {np.dtype(np.float32)}
        assert sorted(z.files) == ["layer2.W", "layer2.b", "layer4.W", "layer4.b", "meta"]


def test_conv_round_trip_is_bit_identical(tmp_path, embedded):
    m = make_conv_model()
    path = save_model(m, tmp_path / "conv.npz")
    back = load_model(path)
    assert [l.config() for l in back.network.layers] == [l.config() for l in m.network.layers]
    assert back.network.cost == "cross-entropy" and back.network.input_shape == (1, 28, 28)
    assert back.network.params.dtype == np.float32
    assert np.array_equal(back.network.params, m.network.params)
    for mine, theirs in zip(m.network.views, back.network.views):
        assert mine.keys() == theirs.keys()
        for name in mine:
            assert np.array_equal(mine[name], theirs[name]) and theirs[name].dtype == np.float32
    x = to_unit_float(embedded.test_images[:50])
    assert np.array_equal(back.scores(x), m.scores(x))
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        # layer i's arrays are layer{i}.W/.b, counting every layer from 1
        assert z["layer1.W"].shape == (4, 1, 3, 3) and z["layer4.W"].shape == (6, 4, 3, 3)
        assert meta["layers"][0] == {"type": "conv", "filters": 4, "kernel": 3, "stride": 1, "padding": 1}
        assert "sizes" not in meta and "activation" not in meta


def test_save_creates_directories_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "a" / "b" / "m.npz"
    save_model(make_model(), target)
    save_model(make_model((784, 4, 10)), target)         # overwrite in place
    assert load_model(target).network.mlp()[0] == (784, 4, 10)
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.npz"]


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "m.npz"
    save_model(make_model(), target)
    before = target.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(RuntimeError):
        save_model(make_model((784, 4, 10)), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


# --- version 1 -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def expected_v1():
    """What digitnet 0.1 computed for the v1 model on 64 embedded test digits."""
    with np.load(DATA / "model-v1-expected.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_version_1_file_loads_as_the_same_dense_layers():
    m = load_model(V1)
    assert m.meta["format_version"] == 1
    assert m.network.mlp() == ((784, 16, 16, 10), "sigmoid", "sigmoid") and m.network.cost == "quadratic"
    with np.load(V1, allow_pickle=False) as z:
        dense = [v for v in m.network.views if v]
        for l, views in enumerate(dense, start=1):
            assert np.array_equal(views["W"], z[f"W{l}"]) and np.array_equal(views["b"], z[f"b{l}"])


def test_version_1_file_computes_what_the_old_code_computed(expected_v1, embedded):
    m = load_model(V1)
    images = expected_v1["images"]
    assert np.array_equal(images, embedded.split("test")[0][:64])
    x = to_unit_float(images)
    np.testing.assert_allclose(m.predict_proba(x), expected_v1["proba"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(m.scores(x), expected_v1["scores"], rtol=1e-6, atol=1e-7)
    targets = embedded.split("test")[1][:64]
    _, grad = m.network.astype(np.float64).input_gradient(x.astype(np.float64).reshape(64, -1), targets)
    assert grad.dtype == np.float64 and np.abs(grad).max() > 0.1
    np.testing.assert_allclose(grad, expected_v1["input_gradient"], rtol=1e-10, atol=1e-12)


def test_version_1_file_saved_again_is_version_2_and_computes_the_same(tmp_path, expected_v1):
    m = load_model(V1)
    back = load_model(save_model(m, tmp_path / "v2.npz"))
    assert back.meta["format_version"] == 2 and "sizes" not in back.meta
    assert np.array_equal(back.network.params, m.network.params)
    assert np.array_equal(back.scores(to_unit_float(expected_v1["images"])),
                          m.scores(to_unit_float(expected_v1["images"])))


def rewrite(path, out, *, meta=None, drop=(), arrays=None):
    """Copy a model file with its metadata or arrays changed."""
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files if k not in drop}
    if meta is not None:
        m = json.loads(str(data["meta"]))
        m.update(meta(m) if callable(meta) else meta)
        data["meta"] = np.array(json.dumps(m))
    data.update(arrays or {})
    np.savez(out, **data)
    return out


@pytest.mark.parametrize("change, message", [
    (dict(meta={"activation": "swish"}), "unknown activation 'swish'"),
    (dict(meta={"cost": "hinge"}), "unknown cost"),
    (dict(meta={"sizes": [784, 9, 16, 10]}), r"W1 has shape \(16, 784\)"),
    (dict(meta={"sizes": [784, 16, 16, 10, 3]}), "do not match 4 layers"),
    (dict(meta={"sizes": [784, -16, 16, 10]}), "layer sizes"),
    (dict(meta={"input_shape": [20, 20]}), "input shape"),
    (dict(drop=("b2",)), "do not match"),
    (dict(arrays={"W1": np.full((16, 784), np.nan, np.float32)}), "W1 holds NaN or infinite"),
    (dict(arrays={"W3": np.zeros((10, 16), np.float64)}), "W3 is float64, expected float32"),
])
def test_inconsistent_version_1_models_are_refused(tmp_path, change, message):
    bad = rewrite(V1, tmp_path / "bad.npz", **change)
    with pytest.raises(ModelError, match=message):
        load_model(bad)


def _layers(edit):
    """A metadata change that edits a copy of the layer list."""
    def change(meta):
        layers = json.loads(json.dumps(meta["layers"]))
        edit(layers)
        return {"layers": layers}
    return change


def _set(i, **settings):
    return _layers(lambda layers: layers[i].update(settings))


# the conv model's layers: 0 conv4x3p1, 1 relu, 2 pool2, 3 conv6x3s2, 4 tanh, 5 flatten, 6 dense12,
# 7 relu, 8 dropout, 9 dense10, 10 softmax; arrays layer1.W/b, layer4.W/b, layer7.W/b, layer10.W/b
CRAFTED_V2 = [
    ("unknown layer type", dict(meta=_set(2, type="lstm")), "unknown layer type 'lstm'"),
    ("unknown setting", dict(meta=_set(0, dilation=2)), "conv layer: unknown setting 'dilation'"),
    ("bad setting type", dict(meta=_set(0, filters="4")), "conv layer: filters must be int from 1 to 1024, got '4'"),
    ("bad setting value", dict(meta=_set(8, rate=2.0)), "rate must be float from 0.0 to 0.95, got 2.0"),
    ("unknown activation", dict(meta=_set(4, function="swish")), "function must be sigmoid, relu, tanh, softmax, got 'swish'"),
    ("wrong array shape", dict(meta=_set(6, units=13)), r"layer7.W has shape \(12, 216\) but the layers need \(13, 216\)"),
    ("wrong stored shape", dict(arrays={"layer4.W": np.zeros((6, 4, 3, 2), np.float32)}), r"layer4.W has shape \(6, 4, 3, 2\)"),
    ("missing array", dict(drop=("layer4.b",)), "do not match the layers"),
    ("extra array", dict(arrays={"layer3.W": np.zeros(3, np.float32)}), "do not match the layers"),
    ("too many parameters", dict(meta={"layers": [{"type": "flatten"}, {"type": "dense", "units": 65536},
                                                  {"type": "dense", "units": 65536}, {"type": "dense", "units": 10},
                                                  {"type": "activation", "function": "softmax"}]}),
     "parameters is more than digitnet handles"),
    ("layer that does not fit", dict(meta=_set(3, kernel=40)), "a 40×40 kernel does not fit 14×14 maps"),
    ("no output activation", dict(meta=_layers(lambda layers: layers.pop())), "must end in an output activation"),
    ("layers not a list", dict(meta={"layers": {"type": "dense"}}), "layers must be a list"),
    ("empty layers", dict(meta={"layers": []}), "layers must be a list of 1 to 256"),
    ("layer not an object", dict(meta=_layers(lambda layers: layers.__setitem__(1, "relu"))), "must be an object"),
    ("class names", dict(meta={"class_names": ["a", "b"]}), "class names"),
    ("input shape", dict(meta={"input_shape": [0, 28]}), "input shape"),
    ("NaN weights", dict(arrays={"layer1.W": np.full((4, 1, 3, 3), np.nan, np.float32)}), "layer1.W holds NaN"),
    ("float64 weights", dict(arrays={"layer10.b": np.zeros(10)}), "layer10.b is float64, expected float32"),
    ("format version", dict(meta={"format_version": 99}), "format version 99 is not supported"),
    ("foreign format", dict(meta={"format": "something-else"}), "not a digitnet model"),
    ("no meta", dict(drop=("meta",)), "no 'meta' entry"),
    ("meta not JSON", dict(arrays={"meta": np.array("{not json")}), "not valid JSON"),
    ("meta not a string", dict(arrays={"meta": np.array([1, 2])}), "must be a JSON string"),
    ("history", dict(meta={"history": "lots"}), "history must be a list"),
]


@pytest.fixture(scope="module")
def conv_file(tmp_path_factory):
    return save_model(make_conv_model(), tmp_path_factory.mktemp("conv") / "good.npz")


@pytest.mark.parametrize("change, message", [c[1:] for c in CRAFTED_V2], ids=[c[0] for c in CRAFTED_V2])
def test_crafted_version_2_models_are_refused(tmp_path, conv_file, change, message):
    load_model(conv_file)                                  # the untouched file is fine
    bad = rewrite(conv_file, tmp_path / "bad.npz", **change)
    with pytest.raises(ModelError, match=message) as e:
        load_model(bad)
    assert str(e.value).startswith(str(bad)) and "\n" not in str(e.value)


@pytest.mark.parametrize("index, name", [(1, "function"), (0, "kernel"), (6, "units")])
def test_a_layer_without_a_required_setting_is_refused(tmp_path, conv_file, index, name):
    bad = rewrite(conv_file, tmp_path / "bad.npz", meta=_layers(lambda layers: layers[index].pop(name)))
    with pytest.raises(ModelError, match=name):
        load_model(bad)


@pytest.mark.parametrize("case", ["unknown layer type", "unknown setting", "wrong array shape", "missing array",
                                  "bad setting type", "too many parameters"])
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_crafted_version_2_models_through_the_cli(tmp_path, conv_file, embedded, case, command):
    """One line on stderr naming the file and the fault, exit 1, no traceback."""
    from digitnet.cli import app

    change, message = next(c[1:] for c in CRAFTED_V2 if c[0] == case)
    bad = rewrite(conv_file, tmp_path / "bad.npz", **change)
    np.save(tmp_path / "x.npy", embedded.test_images[:2])
    args = ["evaluate", str(bad)] if command == "evaluate" else ["predict", "-m", str(bad), str(tmp_path / "x.npy")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"digitnet: error: {bad}: "), r.stderr
    assert re.search(message, lines[0]), lines[0]


def test_object_array_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.npz"
    np.savez(path, W1=np.array([Evil()], dtype=object), meta=np.array("{}"))
    with pytest.raises(ModelError, match="never unpickles"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("content, message", [
    (b"", "empty"), (b"\x93NUMPY\x01\x00", "single .npy"), (b"hello world", "not an .npz"),
])
def test_not_npz_files(tmp_path, content, message):
    p = tmp_path / "m.npz"
    p.write_bytes(content)
    with pytest.raises(ModelError, match=message):
        load_model(p)


def test_truncated_and_foreign_files(tmp_path):
    good = save_model(make_model(), tmp_path / "good.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelError, match="damaged"):
        load_model(tmp_path / "cut.npz")
    np.savez(tmp_path / "foreign.npz", x_train=np.zeros(3))
    with pytest.raises(ModelError, match="not a digitnet model"):
        load_model(tmp_path / "foreign.npz")
    with zipfile.ZipFile(tmp_path / "plain.npz", "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(ModelError):
        load_model(tmp_path / "plain.npz")
    with pytest.raises(ModelError, match="no such file"):
        load_model(tmp_path / "nope.npz")


def test_default_model_path_is_the_one_rule(monkeypatch, tmp_path):
    """The older name follows the one rule (tests/test_modelpath.py): $DIGITNET_MODEL, else
    ./models/digitnet.npz where train writes, else the shipped model."""
    monkeypatch.setenv("DIGITNET_MODEL", str(tmp_path / "x.npz"))
    assert default_model_path() == tmp_path / "x.npz"
    monkeypatch.delenv("DIGITNET_MODEL")
    monkeypatch.chdir(tmp_path)
    assert default_model_path().is_file() and default_model_path().is_absolute()       # the shipped one
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "digitnet.npz").write_bytes(default_model_path().read_bytes())
    assert default_model_path() == Path("models") / "digitnet.npz"


# --- issue 13: metadata every command can print, one limit for train and load, members read lazily

@pytest.mark.parametrize("text, message", [
    ('{"format": "digitnet-model", "x": NaN}', "NaN is not a number JSON allows"),
    ('{"format": "digitnet-model", "x": -Infinity}', "-Infinity is not a number JSON allows"),
    ('{"format": "digitnet-model", "x": 1e999}', "1e999 is out of range"),
    ('{"format": "digitnet-model", "x": ' + "7" * 4400 + "}", "4300 digits"),
    ('{"format": "digitnet-model", "x": ' + "[" * 50_000 + "]" * 50_000 + "}", "too deeply"),
    ('{"format": "digitnet-model", "x": ' + "[" * 17 + "]" * 17 + "}", "more than 16 deep"),
])
def test_metadata_is_strict_json(text, message):
    from digitnet.modelfile import parse_meta

    with pytest.raises(ModelError, match=re.escape(message)):
        parse_meta(text, Path("m.npz"))
    assert parse_meta('{"a": [[[1.5, null, "x"]]]}', Path("m.npz")) == {"a": [[[1.5, None, "x"]]]}


@pytest.mark.parametrize("meta, message", [
    ({"best_epoch": 2.0}, "best_epoch must be a whole number, not 2.0"),
    ({"test_accuracy": "high"}, "test_accuracy must be a number"),
    ({"stopped": 1}, "stopped must be a string"),
    ({"config": {"batch_size": True}}, "config batch_size must be a whole number, not True"),
    ({"config": {"augment": 1}}, "config augment must be true or false"),
    ({"config": {"hidden": [16, 1.5]}}, "config hidden must be a list of whole numbers"),
    ({"config": {"extra": {"nested": 1}}}, "config extra must be a string, number or true/false"),
    ({"history": [{"epoch": 1.0}]}, "epoch a whole number"),
    ({"dataset": {"name": "x", "more": [1]}}, "dataset must be a JSON object"),
])
def test_metadata_types_the_commands_read_are_checked(tmp_path, meta, message):
    bad = rewrite(save_model(make_model(), tmp_path / "m.npz"), tmp_path / "bad.npz", meta=meta)
    with pytest.raises(ModelError, match=re.escape(message)):
        load_model(bad)


def test_what_training_would_save_is_checked_by_the_loaders_own_rules():
    from digitnet.errors import UsageError
    from digitnet.modelfile import check_savable

    check_savable(make_model())
    wide = Network.init(dense_layers((5000, 4, 10), "relu", "softmax"), (1, 1, 5000), "cross-entropy")
    with pytest.raises(UsageError, match=r"wide.npz: .*input shape \[1, 5000\] is not two whole numbers from 1 to 4096"):
        check_savable(Model(wide, tuple("0123456789"), input_shape=(1, 5000)), "wide.npz")


def test_only_the_members_the_network_needs_are_read(tmp_path):
    """An extra member is refused by its name alone (its data, which claims a gigabyte it does
    not hold, is never read); a needed member is checked against the layer's shape from its
    header before it is read."""
    import io

    path = save_model(make_model(), tmp_path / "m.npz")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (10 ** 9,)})
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("junk.npy", header.getvalue() + bytes(10))
    with pytest.raises(ModelError, match=re.escape("arrays ['junk', 'layer2.W'")):
        load_model(path)
    path = save_model(make_model(), tmp_path / "m2.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["layer2.W"] = np.zeros((8, 785), np.float32)
    np.savez(tmp_path / "m3.npz", **arrays)
    with pytest.raises(ModelError, match=re.escape("layer2.W has shape (8, 785) but the layers need (8, 784)")):
        load_model(tmp_path / "m3.npz")


@pytest.mark.parametrize("header", [b"{'descr': '<f4', 'fortran_order': False, 'shape': (8, ", b"((((" * 2000,
                                    b"{'descr': '<f4', 'fortran_order': False, 'shape': (8, 784), }" + b"\xff"])
def test_a_member_header_that_is_not_a_python_literal_is_damage(tmp_path, header):
    """numpy parses .npy headers as Python literals: unbalanced brackets (a tokenizer error,
    not a ValueError), deep nesting, or bytes that are not text must all be one line."""
    path = save_model(make_model(), tmp_path / "m.npz")
    text = header + b" " * (-(len(header) + 11) % 64) + b"\n"
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("layer9.W.npy", b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text)
    with pytest.raises(ModelError, match=r"damaged a digitnet model \(layer9.W: the .npy header is not valid"):
        load_model(path)
