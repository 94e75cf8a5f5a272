"""Every input kind of predict, read in order, streamed in chunks; bad inputs become error entries."""

from __future__ import annotations

import gzip
import io
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from digitnet.idx import write_idx
from digitnet.inputs import input_kind, iter_batches
from digitnet.preprocess import to_mnist

SHAPE = (28, 28)


def read_all(inputs, **kw):
    """(names, images (n, 28, 28), errors) over every batch."""
    names, images, errors = [], [], []
    for b in iter_batches(inputs, SHAPE, to_mnist, **kw):
        assert len(b.names) == len(b.images) == len(b.errors)
        names += b.names
        images.append(b.images)
        errors += b.errors
    return names, np.concatenate(images) if images else np.zeros((0, *SHAPE)), errors


@pytest.fixture(scope="module")
def digits(embedded):
    """20 real MNIST test digits, uint8 (20, 28, 28)."""
    return embedded.test_images[:20]


def _digit_png(path, digit: np.ndarray):
    """Save an MNIST digit as a person would: dark on light, larger."""
    Image.fromarray(255 - digit).resize((84, 84)).save(path)


def test_directory_sorted_by_name_skipping_other_files(tmp_path, digits):
    for name, d in (("b.png", digits[0]), ("a.jpg", digits[1]), ("c.bmp", digits[2])):
        _digit_png(tmp_path / name, d) if name.endswith("png") else Image.fromarray(255 - d).save(tmp_path / name)
    (tmp_path / "labels.csv").write_text("file,label\n")
    (tmp_path / ".hidden.png").write_bytes(b"junk")
    names, images, errors = read_all([str(tmp_path)])
    assert [n.rsplit("/", 1)[1] for n in names] == ["a.jpg", "b.png", "c.bmp"]
    assert errors == [None] * 3 and images.shape == (3, 28, 28)


def test_empty_directory_is_an_error_entry(tmp_path):
    names, _, errors = read_all([str(tmp_path)])
    assert names == [str(tmp_path)] and "no image files" in errors[0]


@pytest.mark.parametrize("layout", ["single", "stack", "flat"])
@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
def test_npy_layouts_and_dtypes(tmp_path, digits, layout, dtype):
    a = digits[:5] if dtype == "uint8" else (digits[:5] / 255).astype(dtype)
    a = {"single": a[0], "stack": a, "flat": a.reshape(5, 784)}[layout]
    np.save(tmp_path / "x.npy", a)
    names, images, errors = read_all([str(tmp_path / "x.npy")])
    n = 1 if layout == "single" else 5
    assert names == [f"{tmp_path / 'x.npy'}[{i}]" for i in range(n)] and errors == [None] * n
    np.testing.assert_allclose(images, digits[:n] / 255, atol=1e-6)


def test_npy_bad_rows_and_bad_shapes(tmp_path, digits):
    a = (digits[:4] / 255).astype(np.float32)
    a[1, 0, 0] = np.nan
    a[2, 5, 5] = 7.0
    np.save(tmp_path / "x.npy", a)
    np.save(tmp_path / "wrong.npy", np.zeros((3, 27, 28), np.uint8))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    names, images, errors = read_all([str(tmp_path / f) for f in ("x.npy", "wrong.npy", "obj.npy")])
    assert errors[0] is None and errors[3] is None
    assert "NaN" in errors[1] and "outside 0-1" in errors[2]
    assert names[4] == str(tmp_path / "wrong.npy") and "wrong shape" in errors[4]
    assert names[5] == str(tmp_path / "obj.npy") and errors[5]
    assert not images[1].any() and np.isfinite(images).all()


@pytest.mark.parametrize("name", ["t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz", "digits.bin"])
def test_idx_raw_and_gzip_recognised_by_content(tmp_path, digits, name):
    write_idx(tmp_path / name, digits)
    assert input_kind(tmp_path / name) == "idx"
    names, images, errors = read_all([str(tmp_path / name)], array_chunk=7)
    assert len(names) == 20 and names[19] == f"{tmp_path / name}[19]" and errors == [None] * 20
    np.testing.assert_allclose(images, digits / 255, atol=1e-6)


def test_idx_label_file_and_truncated_file(tmp_path, digits):
    write_idx(tmp_path / "labels-idx1-ubyte", np.arange(10, dtype=np.uint8))
    write_idx(tmp_path / "images-idx3-ubyte", digits)
    data = (tmp_path / "images-idx3-ubyte").read_bytes()
    (tmp_path / "cut-idx3-ubyte").write_bytes(data[: 16 + 784 * 12 + 100])
    names, _, errors = read_all([str(tmp_path / "labels-idx1-ubyte"), str(tmp_path / "cut-idx3-ubyte")], array_chunk=5)
    assert "label file" in errors[0]
    # the 10 complete images of the first two chunks, then one error for the rest
    assert errors[1:11] == [None] * 10 and names[11] == str(tmp_path / "cut-idx3-ubyte") and "ends after" in errors[11]


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("label_column", [True, False])
@pytest.mark.parametrize("scale", [255, 1])
def test_csv_rows(tmp_path, digits, header, label_column, scale):
    rows = digits[:6].reshape(6, 784) / (255 / scale)
    lines = [",".join(["label"] * label_column + [f"p{i}" for i in range(784)])] if header else []
    fmt = "{:.0f}" if scale == 255 else "{:.6f}"
    lines += [",".join(["3"] * label_column + [fmt.format(v) for v in r]) for r in rows]
    path = tmp_path / ("x.csv.gz" if header else "x.csv")
    text = "\n".join(lines) + "\n"
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    names, images, errors = read_all([str(path)], array_chunk=4)
    assert names == [f"{path}[{i}]" for i in range(6)] and errors == [None] * 6
    np.testing.assert_allclose(images, digits[:6] / 255, atol=1e-5)


def test_csv_wrong_columns_and_bad_row(tmp_path, digits):
    (tmp_path / "narrow.csv").write_text("file,label\na.png,3\n")
    good = ",".join(str(v) for v in digits[0].ravel())
    (tmp_path / "bad.csv").write_text(f"{good}\n{good}\n{good[:-4]},x\n")
    names, _, errors = read_all([str(tmp_path / "narrow.csv"), str(tmp_path / "bad.csv")])
    assert "2 columns" in errors[0]
    assert names[1] == str(tmp_path / "bad.csv") and "row 2" in errors[1]


def test_stdin_paths_missing_files_and_order(tmp_path, digits):
    _digit_png(tmp_path / "one.png", digits[0])
    np.save(tmp_path / "two.npy", digits[1:3])
    _digit_png(tmp_path / "three.png", digits[3])
    stdin = io.StringIO(f"{tmp_path / 'two.npy'}\n\n{tmp_path / 'three.png'}\n{tmp_path / 'nope.png'}\n")
    names, images, errors = read_all([str(tmp_path / "one.png"), "-", str(tmp_path / "gone.jpg")], stdin=stdin)
    assert names == [str(tmp_path / "one.png"), f"{tmp_path / 'two.npy'}[0]", f"{tmp_path / 'two.npy'}[1]",
                     str(tmp_path / "three.png"), str(tmp_path / "nope.png"), str(tmp_path / "gone.jpg")]
    assert errors[:4] == [None] * 4 and "no such file" in errors[4] and "no such file" in errors[5]
    np.testing.assert_allclose(images[1:3], digits[1:3] / 255, atol=1e-6)


def test_bad_images_do_not_stop_the_others(tmp_path, digits):
    (tmp_path / "a.png").write_bytes(b"garbage")
    Image.new("L", (30, 30), 255).save(tmp_path / "b.png")      # blank paper
    _digit_png(tmp_path / "c.png", digits[0])
    names, _, errors = read_all([str(tmp_path)], image_chunk=2)
    assert "not an image" in errors[0] and "blank" in errors[1] and errors[2] is None
    assert not errors[0].startswith(str(tmp_path))                 # the name is not repeated


def test_large_idx_streams_with_bounded_memory(tmp_path):
    n = 40_000                                                    # 31 MB of pixels, 125 MB as float32
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "big-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    tracemalloc.start()
    count = 0
    for b in iter_batches([str(tmp_path / "big-idx3-ubyte")], SHAPE, to_mnist, array_chunk=1000):
        count += len(b.names)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == n
    assert peak < 8 * 1000 * 784 * 4          # a few chunks' worth, not the file (n·784 bytes)
