"""The model file: round trip, validation of everything it claims, atomic writes, no pickles."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from digitnet.errors import ModelError
from digitnet.modelfile import FORMAT_VERSION, Model, default_model_path, load_model, save_model
from digitnet.network import Network


def make_model(sizes=(784, 8, 10)):
    return Model(Network.init(sizes, "relu", "cross-entropy", seed=1), tuple("0123456789"),
                 config={"seed": 1}, history=[{"epoch": 1, "loss": 0.5}], dataset={"name": "embedded"})


def test_round_trip(tmp_path):
    m = make_model()
    path = save_model(m, tmp_path / "m.npz")
    back = load_model(path)
    assert np.array_equal(back.network.params, m.network.params)
    assert back.network.sizes == (784, 8, 10) and back.class_names == m.class_names
    assert back.meta["format_version"] == FORMAT_VERSION and back.meta["created"]
    assert back.history == m.history and back.dataset["name"] == "embedded"
    with np.load(path, allow_pickle=False) as z:
        assert z["meta"].dtype.kind == "U" and z["meta"].shape == ()
        assert {z[k].dtype for k in z.files if k != "meta"} == {np.dtype(np.float32)}


def test_save_creates_directories_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "a" / "b" / "m.npz"
    save_model(make_model(), target)
    save_model(make_model((784, 4, 10)), target)         # overwrite in place
    assert load_model(target).network.sizes == (784, 4, 10)
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


def rewrite(path, out, *, meta=None, drop=(), arrays=None):
    """Copy a model file with its metadata or arrays changed."""
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files if k not in drop}
    if meta is not None:
        m = json.loads(str(data["meta"]))
        m.update(meta)
        data["meta"] = np.array(json.dumps(m))
    data.update(arrays or {})
    np.savez(out, **data)
    return out


@pytest.mark.parametrize("change, message", [
    (dict(meta={"activation": "swish"}), "unknown activation 'swish'"),
    (dict(meta={"cost": "hinge"}), "unknown cost"),
    (dict(meta={"format_version": 99}), "format version 99 is not supported"),
    (dict(meta={"format": "something-else"}), "not a digitnet model"),
    (dict(meta={"sizes": [784, 9, 10]}), "W1 has shape"),
    (dict(meta={"sizes": [784, 8, 10, 3]}), "do not match 3 layers"),
    (dict(meta={"sizes": [784, -8, 10]}), "layer sizes"),
    (dict(meta={"class_names": ["a", "b"]}), "class names"),
    (dict(meta={"input_shape": [20, 20]}), "input shape"),
    (dict(drop=("meta",)), "no 'meta' entry"),
    (dict(drop=("b2",)), "do not match"),
    (dict(arrays={"W1": np.full((8, 784), np.nan, np.float32)}), "NaN or infinite"),
    (dict(arrays={"W1": np.zeros((8, 784), np.float64)}), "expected float32"),
    (dict(arrays={"meta": np.array("{not json")}), "not valid JSON"),
    (dict(arrays={"meta": np.array([1, 2])}), "must be a JSON string"),
])
def test_inconsistent_models_are_refused(tmp_path, change, message):
    good = save_model(make_model(), tmp_path / "good.npz")
    bad = rewrite(good, tmp_path / "bad.npz", **change)
    with pytest.raises(ModelError, match=message):
        load_model(bad)


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


def test_default_model_path_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DIGITNET_MODEL", str(tmp_path / "x.npz"))
    assert default_model_path() == tmp_path / "x.npz"
    monkeypatch.delenv("DIGITNET_MODEL")
    assert default_model_path().name == "digitnet.npz"
