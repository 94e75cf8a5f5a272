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


def test_csv_wrong_columns_and_bad_rows_are_rows_of_their_own(tmp_path, digits):
    """A bad row is that row's error entry; the rows after it are still read."""
    (tmp_path / "narrow.csv").write_text("file,label\na.png,3\n")
    good = ",".join(str(v) for v in digits[0].ravel())
    other = ",".join(str(v) for v in digits[1].ravel())
    (tmp_path / "bad.csv").write_text(f"{good}\n{good}\n{good[:-4]},x\n{other}\n{good},1\n")
    names, images, errors = read_all([str(tmp_path / "narrow.csv"), str(tmp_path / "bad.csv")])
    assert names[0] == str(tmp_path / "narrow.csv") and "2 columns" in errors[0]
    assert names[1:] == [f"{tmp_path / 'bad.csv'}[{i}]" for i in range(5)]
    assert errors[1:3] == [None, None] and errors[4] is None
    assert "row 2 is not 784 numbers" in errors[3] and "row 4 is not 784 numbers" in errors[5]
    np.testing.assert_allclose(images[4], digits[1] / 255, atol=1e-6)     # read after the bad row
    assert not images[3].any()


def test_csv_values_out_of_range_are_row_errors(tmp_path, digits):
    rows = [",".join(str(v) for v in digits[i].ravel()) for i in range(3)]
    rows[1] = rows[1].replace("0", "-1", 1)
    rows[2] = "nan," + rows[2].split(",", 1)[1]
    (tmp_path / "v.csv").write_text("\n".join(rows) + "\n")
    names, _, errors = read_all([str(tmp_path / "v.csv")])
    assert errors[0] is None and "outside 0-255" in errors[1] and "NaN" in errors[2]


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


# ---------------------------------------------------------------------------------------------
# empty things: an error entry each, never silence (issue 13)

def test_empty_inputs_are_error_entries_and_the_next_input_is_read(tmp_path, digits):
    np.save(tmp_path / "none.npy", np.zeros((0, 28, 28), np.uint8))
    np.save(tmp_path / "none-flat.npy", np.zeros((0, 784), np.float32))
    (tmp_path / "header.csv").write_text(",".join(f"p{i}" for i in range(784)) + "\n\n")
    (tmp_path / "header.csv.gz").write_bytes(gzip.compress((",".join(f"p{i}" for i in range(785)) + "\n").encode()))
    write_idx(tmp_path / "none-idx3-ubyte", np.zeros((0, 28, 28), np.uint8))
    np.save(tmp_path / "ok.npy", digits[:2])
    files = ["none.npy", "none-flat.npy", "header.csv", "header.csv.gz", "none-idx3-ubyte", "ok.npy"]
    names, _, errors = read_all([str(tmp_path / f) for f in files])
    assert names == [str(tmp_path / f) for f in files[:-1]] + [f"{tmp_path / 'ok.npy'}[{i}]" for i in range(2)]
    assert "holds no images (0 rows)" in errors[0] and "holds no images" in errors[1]
    assert "no rows after the header" in errors[2] and "no rows after the header" in errors[3]
    assert "holds no images" in errors[4]
    assert errors[5:] == [None, None]


# ---------------------------------------------------------------------------------------------
# small inputs, unbounded memory (issue 13): bounded here, and one input's failure is its own

def _peak(fn) -> tuple[object, int]:
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("gz", [False, True])
def test_one_giant_csv_line_costs_a_line_cap_not_its_size(tmp_path, digits, gz):
    """A 40 MB line (a .csv.gz of one line, too) is refused as that row, read in pieces of the
    line cap; the rows after it are read. (Before: the whole line, then ~20× it in parsing.)"""
    good = ",".join(str(v) for v in digits[0].ravel())
    giant = b"1," * 20_000_000                                     # 40 MB, no newline until the end
    data = good.encode() + b"\n" + giant + b"\n" + good.encode() + b"\n"
    path = tmp_path / ("giant.csv.gz" if gz else "giant.csv")
    path.write_bytes(gzip.compress(data, 1) if gz else data)
    (names, _, errors), peak = _peak(lambda: read_all([str(path)]))
    assert names == [f"{path}[{i}]" for i in range(3)]
    assert errors[0] is None and errors[2] is None and "longer than" in errors[1]
    assert peak < 4 << 20, f"peak {peak / 1e6:.1f} MB for a 40 MB line"


def test_npy_header_claiming_gigabytes_is_refused_before_allocating(tmp_path):
    """A 200-byte .npy whose header says 10⁹ images: refused from the header and the file's
    size, with nothing mapped or allocated."""
    header = {"descr": "|u1", "fortran_order": False, "shape": (1_000_000_000, 28, 28)}
    with open(tmp_path / "liar.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(bytes(100))
    (names, _, errors), peak = _peak(lambda: read_all([str(tmp_path / "liar.npy")]))
    assert names == [str(tmp_path / "liar.npy")] and "shorter than its header says" in errors[0]
    assert "784,000,000,000 bytes" in errors[0]
    assert peak < 1 << 20


def test_npy_huge_header_and_fortran_order(tmp_path, digits):
    with open(tmp_path / "big-header.npy", "wb") as f:
        f.write(b"\x93NUMPY\x02\x00" + (10 ** 7).to_bytes(4, "little") + b"{" + b" " * 100)
    np.save(tmp_path / "f.npy", np.asfortranarray(digits[:5].reshape(5, 784)))
    np.save(tmp_path / "f3.npy", np.asfortranarray(digits[:5]))
    names, images, errors = read_all([str(tmp_path / f) for f in ("big-header.npy", "f.npy", "f3.npy")])
    assert "not a readable .npy array" in errors[0]
    assert errors[1:] == [None] * 10
    np.testing.assert_allclose(images[1:6], digits[:5] / 255, atol=1e-6)
    np.testing.assert_allclose(images[6:], digits[:5] / 255, atol=1e-6)


def test_an_unexpected_failure_is_that_inputs_error_and_the_run_goes_on(tmp_path, digits, monkeypatch):
    """Whatever a reader raises (here MemoryError from the .npy reader, a ValueError from the
    preprocessing of one image), that input is an error entry and the inputs after it are read."""
    import digitnet.inputs as inputs

    np.save(tmp_path / "a.npy", digits[:2])
    np.save(tmp_path / "b.npy", digits[2:4])
    _digit_png(tmp_path / "c.png", digits[4])
    _digit_png(tmp_path / "d.png", digits[5])
    real = inputs.ROW_READERS["npy"]

    def flaky(path, shape, chunk):
        if path.name == "a.npy":
            raise MemoryError
        return real(path, shape, chunk)

    def prep(gray):
        if gray.shape[0] == 84 and not hasattr(prep, "done"):
            prep.done = True
            raise ValueError("boom")
        return to_mnist(gray)

    monkeypatch.setitem(inputs.ROW_READERS, "npy", flaky)
    names, errors = [], []
    for b in iter_batches([str(tmp_path / f) for f in ("a.npy", "b.npy", "c.png", "d.png")], SHAPE, prep):
        names += b.names
        errors += b.errors
    assert names == [str(tmp_path / "a.npy"), f"{tmp_path / 'b.npy'}[0]", f"{tmp_path / 'b.npy'}[1]",
                     str(tmp_path / "c.png"), str(tmp_path / "d.png")]
    assert errors[0] == "out of memory reading it" and errors[1:3] == [None, None]
    assert "ValueError: boom" in errors[3] and errors[4] is None


def test_a_pipe_or_device_is_refused_without_blocking(tmp_path, digits):
    import os

    os.mkfifo(tmp_path / "fifo")               # opening it for reading would wait for a writer forever
    _digit_png(tmp_path / "ok.png", digits[0])
    names, _, errors = read_all([str(tmp_path / "fifo"), "/dev/zero", str(tmp_path / "ok.png")])
    assert "not a regular file" in errors[0] and "not a regular file" in errors[1] and errors[2] is None


# ---------------------------------------------------------------------------------------------
# stdin: paths as bytes, image bytes, one at a time

def test_stdin_paths_are_bytes_of_any_name_and_answered_one_by_one(tmp_path, digits):
    """Non-UTF-8 names round-trip; each path read from a pipe is answered while the writer
    has not sent the next one yet (a pipeline that waits for each answer never blocks)."""
    import os
    import threading

    name = os.fsdecode(b"caf\xe9-[red].png")
    _digit_png(tmp_path / name, digits[0])
    _digit_png(tmp_path / "two.png", digits[1])
    r, w = os.pipe()
    it = iter_batches(["-"], SHAPE, to_mnist, stdin=open(r, "rb"))
    got = []

    def take():
        got.append(next(it))

    os.write(w, os.fsencode(str(tmp_path / name)) + b"\n")      # the writer now waits for the answer
    t = threading.Thread(target=take, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "the first path was not answered before the second was sent"
    assert got[0].names == [str(tmp_path / name)] and got[0].errors == [None]
    os.write(w, str(tmp_path / "two.png").encode() + b"\n")
    os.close(w)
    rest = list(it)
    assert [b.names for b in rest] == [[str(tmp_path / "two.png")]] and rest[0].errors == [None]


def test_stdin_image_bytes_and_binary_junk(tmp_path, digits):
    _digit_png(tmp_path / "d.png", digits[3])
    names, images, errors = read_all(["-"], stdin=io.BytesIO((tmp_path / "d.png").read_bytes()))
    assert names == ["-"] and errors == [None]
    direct = read_all([str(tmp_path / "d.png")])[1]
    np.testing.assert_array_equal(images, direct)                  # the same loader and preprocessing
    names, _, errors = read_all(["-"], stdin=io.BytesIO(bytes(range(256)) * 4))
    assert names == ["-"] and "not an image" in errors[0]
    names, _, errors = read_all(["-"], stdin=io.BytesIO(b"x" * 100_000 + b"\n" + str(tmp_path / "d.png").encode()))
    assert "longer than" in errors[0] and errors[1] is None


def test_a_folder_of_folders_says_where_its_images_are_read(tmp_path, digits):
    """A folder per class given to predict: the error names the folders and both ways to
    read them (a glob of the folders, or evaluate for labelled data)."""
    for c in range(5):
        (tmp_path / str(c)).mkdir()
        _digit_png(tmp_path / str(c) / "x.png", digits[c])
    names, _, errors = read_all([str(tmp_path)])
    assert names == [str(tmp_path)]
    assert "only folders (0/, 1/, 2/, …)" in errors[0]
    assert f"give {tmp_path}/*/" in errors[0] and f"digitnet evaluate --data {tmp_path}" in errors[0]
    names, _, errors = read_all([str(tmp_path / str(c)) for c in range(5)])     # what the glob gives: read
    assert errors == [None] * 5
