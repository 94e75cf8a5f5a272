"""The IDX reader: real Fashion-MNIST files, round trips, and crafted bad headers."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from digitnet.errors import DataError
from digitnet.idx import iter_idx_chunks, read_idx, read_idx_header, write_idx


def test_reads_real_fashion_mnist(fashion_mnist):
    images = read_idx(fashion_mnist / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(fashion_mnist / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and np.bincount(labels).tolist() == [1000] * 10
    assert read_idx_header(fashion_mnist / "train-images-idx3-ubyte.gz")[1] == (60000, 28, 28)


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64])
def test_round_trip(tmp_path, name, dtype):
    arr = (np.random.default_rng(0).random((5, 3, 4)) * 100).astype(dtype)
    write_idx(tmp_path / name, arr)
    back = read_idx(tmp_path / name)
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, arr)


def test_chunks_cover_the_file(tmp_path):
    arr = (np.arange(103 * 4 * 4) % 251).astype(np.uint8).reshape(103, 4, 4)
    write_idx(tmp_path / "x.gz", arr)
    chunks = list(iter_idx_chunks(tmp_path / "x.gz", chunk=10))
    assert [len(c) for c in chunks] == [10] * 10 + [3]
    assert np.array_equal(np.concatenate(chunks), arr)


def header(n, h=28, w=28, typ=0x08):
    return bytes([0, 0, typ, 3]) + struct.pack(">3I", n, h, w)


@pytest.mark.parametrize("blob, message", [
    (b"", "too short"),
    (b"\x00\x00", "too short"),
    (b"PK\x03\x04garbage!", "not an IDX file"),
    (bytes([0, 0, 0x07, 3]) + b"\x00" * 12, "not an IDX file"),     # unknown type code
    (bytes([0, 0, 0x08, 9]) + b"\x00" * 12, "not an IDX file"),     # 9 dimensions
    (bytes([0, 0, 0x08, 3, 0, 0]), "header is truncated"),
    (header(60000) + b"\x00" * 1234, "header says 60,000 images of 28×28 but the file holds 1,234 bytes"),
    (header(4_000_000_000, 4096, 4096), "header says"),               # absurd claim: no allocation happens
])
def test_bad_headers_raise_data_error(tmp_path, blob, message):
    for name, data in (("raw", blob), ("zipped.gz", gzip.compress(blob))):
        p = tmp_path / name
        p.write_bytes(data)
        if name.endswith(".gz") and len(blob) < 4:
            message_here = "too short"
        else:
            message_here = message
        with pytest.raises(DataError, match=message_here.split(" but")[0]):
            read_idx(p)


def test_corrupt_gzip_and_missing_file(tmp_path):
    p = tmp_path / "bad.gz"
    p.write_bytes(gzip.compress(header(2) + bytes(2 * 784))[:30])
    with pytest.raises(DataError, match="bad.gz"):
        read_idx(p)
    with pytest.raises(DataError, match="no such file"):
        read_idx(tmp_path / "nope")
    with pytest.raises(DataError, match="directory"):
        read_idx(tmp_path)


def test_truncated_stream_in_chunks(tmp_path):
    p = tmp_path / "t"
    p.write_bytes(header(5, 2, 2) + bytes(9))
    with pytest.raises(DataError, match="data ends after item 2"):
        list(iter_idx_chunks(p, chunk=2))


def test_zero_sized_items_are_refused_not_streamed_forever(tmp_path):
    """4,000,000,000 items of 0×0 need no bytes: the header check must refuse them, or the
    chunked reader walks through billions of empty items (seen as an OOM kill)."""
    p = tmp_path / "empty-items"
    p.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 4_000_000_000, 0, 0))
    with pytest.raises(DataError, match="empty items"):
        read_idx(p)
    with pytest.raises(DataError, match="empty items"):
        next(iter_idx_chunks(p, chunk=2))
    write_idx(tmp_path / "none", np.zeros((0, 28, 28), np.uint8))     # no items at all is still fine
    assert read_idx(tmp_path / "none").shape == (0, 28, 28)
