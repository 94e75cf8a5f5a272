"""The IDX file format of MNIST and its relatives (Fashion-MNIST, KMNIST), raw or gzipped.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the data in C order. Every reader
here checks the header against the bytes actually present *before* allocating, so a file
that claims more than it holds is refused with a message that says both numbers.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from digitnet.errors import DataError

# IDX type code -> big-endian NumPy dtype.
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"
# deflate cannot expand data by more than ~1032:1, so a gzip file of c bytes holds at most this much.
MAX_DEFLATE_RATIO = 1032
MAX_DIMS = 4
_BLOCK = 1 << 24


def _fmt_shape(shape: tuple[int, ...]) -> str:
    if len(shape) == 3:
        return f"{shape[0]:,} images of {shape[1]}×{shape[2]}"
    if len(shape) == 1:
        return f"{shape[0]:,} labels"
    return "an array of shape " + "×".join(str(s) for s in shape)


def _open(path: Path):
    """Open raw or gzipped by content (not by name); return (stream, is_gzip)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not an IDX file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if f.read(2) == GZIP_MAGIC:
        f.close()
        return gzip.open(path, "rb"), True      # owns its file, so closing it closes both
    f.seek(0)
    return f, False


def _read_exact(stream, n: int, path: Path) -> bytes:
    try:
        return stream.read(n)
    except EOFError:
        raise DataError(f"{path}: the gzip file is cut short (it ends before its end-of-stream marker; "
                        "an unfinished download?)") from None
    except (OSError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip data ({e})") from None


def _read_blocks(stream, n: int, path: Path) -> bytes:
    """Up to ``n`` bytes, read in blocks so memory grows with the data really there, never
    with what a header claims (``read(n)`` would allocate n bytes up front)."""
    parts, got = [], 0
    while got < n:
        block = _read_exact(stream, min(_BLOCK, n - got), path)
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)


def _check_gzip_end(stream, path: Path) -> None:
    """After the declared data: reach the end of a gzip stream so its CRC and length are
    checked. A download cut short can hold every data byte yet lack the trailer; that file
    is damaged, not good. (Data beyond the declared size is allowed, as in raw files.)"""
    _read_exact(stream, 1, path)


def _read_header(stream, path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """Parse magic and dims; return (dtype, shape, header_bytes)."""
    magic = _read_exact(stream, 4, path)
    if len(magic) < 4:
        raise DataError(f"{path}: too short to be an IDX file ({len(magic)} bytes)")
    if magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_TYPES or not 1 <= magic[3] <= MAX_DIMS:
        raise DataError(f"{path}: not an IDX file (magic number {magic.hex()})")
    ndim = magic[3]
    raw = _read_exact(stream, 4 * ndim, path)
    if len(raw) < 4 * ndim:
        raise DataError(f"{path}: IDX header is truncated")
    shape = tuple(int(s) for s in struct.unpack(f">{ndim}I", raw))
    dtype = IDX_TYPES[magic[2]]
    if math.prod(max(s, 1) for s in shape) * dtype.itemsize >= 2 ** 63:   # NumPy cannot even describe it
        raise DataError(f"{path}: not a usable IDX file (header declares an array of {'×'.join(map(str, shape))})")
    if 0 in shape[1:]:
        # items of zero bytes: nothing to read, and a reader stepping through billions of
        # them would never finish
        raise DataError(f"{path}: not a usable IDX file (header declares empty items: {'×'.join(map(str, shape))})")
    return dtype, shape, 4 + 4 * ndim


def read_idx_header(path: str | os.PathLike) -> tuple[np.dtype, tuple[int, ...]]:
    """Return (dtype, shape) declared by an IDX file's header, without reading its data."""
    path = Path(path)
    stream, _ = _open(path)
    with stream:
        dtype, shape, _ = _read_header(stream, path)
    return dtype, shape


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a whole IDX file (raw or gzip) into a native-endian array of its declared shape.

    Raises DataError when the header is malformed or declares more data than the file holds.
    """
    path = Path(path)
    stream, is_gzip = _open(path)
    with stream:
        dtype, shape, header = _read_header(stream, path)
        need = math.prod(shape) * dtype.itemsize          # Python ints: no overflow
        size = path.stat().st_size
        what = _fmt_shape(shape)
        if not is_gzip and size - header < need:
            raise DataError(f"{path}: header says {what} but the file holds {size - header:,} bytes of data")
        if is_gzip and need > size * MAX_DEFLATE_RATIO + 1024:
            raise DataError(f"{path}: header says {what} ({need:,} bytes) but a {size:,}-byte gzip file cannot hold that")
        data = _read_blocks(stream, need, path)
        got = len(data)
        if got < need:
            raise DataError(f"{path}: header says {what} but the file holds {got:,} bytes of data")
        if is_gzip:
            _check_gzip_end(stream, path)
    # frombuffer is read-only and big-endian: one copy makes it native and writable.
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def iter_idx_chunks(path: str | os.PathLike, chunk: int = 4096) -> Iterator[np.ndarray]:
    """Yield an IDX file's first axis in chunks of at most ``chunk`` items, with bounded memory.

    Each yielded array has shape (k, *shape[1:]). A file shorter than its header claims
    raises DataError at the point the data runs out.
    """
    path = Path(path)
    stream, is_gzip = _open(path)
    with stream:
        dtype, shape, _ = _read_header(stream, path)
        item = math.prod(shape[1:]) * dtype.itemsize
        done = 0
        while done < shape[0]:
            k = min(chunk, shape[0] - done)
            raw = _read_blocks(stream, k * item, path)
            if len(raw) < k * item:
                raise DataError(f"{path}: header says {_fmt_shape(shape)} but the data ends after item {done + len(raw) // max(item, 1):,}")
            if is_gzip and done + k == shape[0]:
                _check_gzip_end(stream, path)
            yield np.frombuffer(raw, dtype=dtype).reshape((k, *shape[1:])).astype(dtype.newbyteorder("="))
            done += k


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip when the name ends in .gz); used by tests and data import."""
    path = Path(path)
    codes = {v.newbyteorder("="): k for k, v in IDX_TYPES.items()}
    dt = array.dtype.newbyteorder("=")
    if dt not in codes:
        raise DataError(f"{path}: dtype {array.dtype} cannot be stored in IDX")
    header = bytes([0, 0, codes[dt], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    body = header + np.ascontiguousarray(array).astype(IDX_TYPES[codes[dt]]).tobytes()
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(body)
