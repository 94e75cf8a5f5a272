"""digitnet.importer: a folder per class -> an .npz data set, preprocessed as predict does."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from digitnet.datasets import load_dataset
from digitnet.errors import DataError, UsageError
from digitnet.importer import import_folder, imported_sets, scan_classes, stratified_split


@pytest.fixture(autouse=True)
def _data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def _write_digits(root, embedded, per_class: dict[str, int], start=0):
    """Save real MNIST digits as the user would have them: dark ink on light paper, scaled up
    to odd sizes, PNG and JPEG. Returns {path: label}."""
    images, labels = embedded.split("train")
    truth = {}
    for folder, n in per_class.items():
        digit = int(folder) if folder.isdigit() else len(folder) % 10
        (root / folder).mkdir(parents=True, exist_ok=True)
        picks = np.flatnonzero(labels == digit)[start:start + n]
        for k, i in enumerate(picks):
            img = Image.fromarray(255 - images[i]).resize((28 + 7 * k, 40 + 3 * k))
            path = root / folder / f"{k:03d}.{'jpg' if k % 3 == 2 else 'png'}"
            img.save(path)
            truth[path] = digit
    return truth


def test_import_matches_predict_preprocessing_and_loads(tmp_path, embedded):
    from digitnet.preprocess import load_image, to_mnist

    src = tmp_path / "mine"
    _write_digits(src, embedded, {"0": 4, "1": 4, "7": 5})
    (src / "7" / "notes.txt").write_text("not an image")
    out = tmp_path / "set.npz"
    result = import_folder(src, out)
    ds = load_dataset(out)
    assert ds.class_names == tuple(str(i) for i in range(8))       # numeric folders keep their number
    assert ds.train_images.dtype == np.uint8 and ds.train_images.shape == (13, 28, 28)
    assert sorted(np.unique(ds.train_labels)) == [0, 1, 7]
    assert result.train_counts[7] == 5 and result.test_counts == [0] * 8
    with np.load(out) as z:
        files = list(z["train_files"])
    for row, name in enumerate(files):
        expect = np.rint(to_mnist(load_image(src / name)) * 255).astype(np.uint8)
        np.testing.assert_array_equal(ds.train_images[row], expect)
        assert ds.train_labels[row] == int(name.split("/")[0])


def test_named_classes_are_sorted_and_numbered(tmp_path, embedded):
    src = tmp_path / "named"
    for name in ("zeta", "alpha", "mid"):
        _write_digits(src, embedded, {name: 2})
    names, pairs = scan_classes(src)
    assert names == ("alpha", "mid", "zeta")
    assert [label for _, label in pairs] == [0, 0, 1, 1, 2, 2]
    ds = load_dataset(import_folder(src, tmp_path / "n.npz").out)
    assert ds.class_names == ("alpha", "mid", "zeta")


def test_stratified_seeded_split(tmp_path, embedded):
    labels = np.repeat(np.arange(4), [10, 20, 5, 1])
    a = stratified_split(labels, 0.2, seed=1)
    assert [int(a[labels == c].sum()) for c in range(4)] == [2, 4, 1, 0]   # a single sample stays in train
    np.testing.assert_array_equal(a, stratified_split(labels, 0.2, seed=1))
    assert not np.array_equal(a, stratified_split(labels, 0.2, seed=2))
    src = tmp_path / "s"
    _write_digits(src, embedded, {"2": 6, "3": 4})
    result = import_folder(src, tmp_path / "s.npz", test_split=0.5, seed=3)
    assert result.test_counts[2:4] == [3, 2] and result.train_counts[2:4] == [3, 2]
    with np.load(result.out) as z:
        assert sorted(list(z["train_files"]) + list(z["test_files"])) == sorted(
            f"{c}/{p.name}" for c in "23" for p in (src / c).iterdir())
        assert z["class_names"].dtype.kind == "U"


def test_bad_image_stops_and_writes_nothing_unless_skip_bad(tmp_path, embedded):
    src = tmp_path / "b"
    _write_digits(src, embedded, {"0": 2, "1": 2})
    (src / "1" / "broken.png").write_bytes(b"\x89PNG not really")
    Image.new("L", (30, 30), 255).save(src / "0" / "blank.png")
    out = tmp_path / "b.npz"
    with pytest.raises(DataError, match="broken.png|blank.png"):
        import_folder(src, out)
    assert list(tmp_path.glob("*.npz")) == [] and list(tmp_path.glob(".*tmp")) == []
    result = import_folder(src, out, skip_bad=True)
    assert sorted(name for name, _ in result.skipped) == ["0/blank.png", "1/broken.png"]
    assert load_dataset(out).train_images.shape[0] == 4


def test_existing_output_is_kept_without_force(tmp_path, embedded):
    src = tmp_path / "e"
    _write_digits(src, embedded, {"4": 2, "5": 2})
    out = tmp_path / "e.npz"
    out.write_bytes(b"precious")
    with pytest.raises(UsageError, match="--force"):
        import_folder(src, out)
    assert out.read_bytes() == b"precious"
    import_folder(src, out, force=True)
    assert load_dataset(out).train_images.shape[0] == 4


def test_folder_problems_are_clear(tmp_path, embedded):
    with pytest.raises(DataError, match="no such folder"):
        import_folder(tmp_path / "nope", tmp_path / "x.npz")
    loose = tmp_path / "loose"
    loose.mkdir()
    Image.new("L", (5, 5)).save(loose / "a.png")
    with pytest.raises(DataError, match="loose in it"):
        import_folder(loose, tmp_path / "x.npz")
    one = tmp_path / "one"
    _write_digits(one, embedded, {"3": 2})
    with pytest.raises(DataError, match="at least two"):
        import_folder(one, tmp_path / "x.npz")
    with pytest.raises(UsageError, match="test-split"):
        import_folder(one, tmp_path / "x.npz", test_split=1.0)


def test_default_location_and_index(tmp_path, embedded):
    from digitnet.importer import imported_dir

    src = tmp_path / "my-digits"
    _write_digits(src, embedded, {"8": 2, "9": 2})
    result = import_folder(src, test_split=0.5)
    assert result.out == imported_dir() / "my-digits.npz" and result.out.is_file()
    elsewhere = import_folder(src, tmp_path / "other.npz")
    listed = {e["name"]: e for e in imported_sets()}
    assert set(listed) == {"my-digits", "other"}
    assert listed["other"]["present"] and listed["other"]["train"] == 4 and listed["my-digits"]["test"] == 2
    elsewhere.out.unlink()
    assert not {e["name"]: e for e in imported_sets()}["other"]["present"]


def test_import_never_loads_numba(tmp_path, embedded):
    src = tmp_path / "n"
    _write_digits(src, embedded, {"0": 1, "1": 1})
    code = ("import sys; from digitnet.importer import import_folder; import digitnet.cli.data; "
            f"import_folder({str(src)!r}, {str(tmp_path / 'n.npz')!r}); "
            "assert 'numba' not in sys.modules, 'numba was imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"XDG_DATA_HOME": str(tmp_path / "xdg"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
