"""Reading ``.npz`` files that may come from strangers: never unpickle, say plainly what is wrong."""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

ZIP_MAGIC = b"PK\x03\x04"
NPY_MAGIC = b"\x93NUMPY"


def _check_member_sizes(path: Path, error: type[Exception], what: str) -> None:
    """Refuse a member whose .npy header claims more data than the member holds, before
    NumPy allocates the claimed shape (a 40-byte member can claim terabytes)."""
    from numpy.lib import format as npy

    readers = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with zf.open(info) as f:
                try:
                    reader = readers.get(npy.read_magic(f))
                    if reader is None:
                        continue      # a newer header version: np.load checks it
                    shape, _, dtype = reader(f)
                except ValueError:
                    continue          # np.load says what is wrong with the header
                if dtype.hasobject:
                    continue          # refused by np.load(allow_pickle=False) below
                need = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                have = info.file_size - f.tell()
                if need > have:
                    raise error(f"{path}: damaged {what} ({info.filename[:-4]} claims shape "
                                f"{'×'.join(map(str, shape))} of {dtype}, {need:,.0f} bytes, but holds {have:,})")


def read_npz(path: str | os.PathLike, error: type[Exception], what: str) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` as a dict, loaded with ``allow_pickle=False``.

    Any problem (missing, a directory, not a zip, a plain .npy, an object array, a damaged
    member) raises ``error`` with one line naming the file and ``what`` was expected.
    """
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: no such file")
    if path.is_dir():
        raise error(f"{path}: is a directory, not {what}")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror})") from None
    if magic.startswith(NPY_MAGIC):
        raise error(f"{path}: is a single .npy array, not {what} (.npz)")
    if not magic.startswith(ZIP_MAGIC):
        raise error(f"{path}: not {what} ({'the file is empty' if not magic else 'not an .npz (zip) file'})")
    try:
        _check_member_sizes(path, error, what)
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name] for name in z.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise error(f"{path}: holds object arrays (pickled Python objects); digitnet never unpickles, refused") from None
        raise error(f"{path}: damaged {what} ({e})") from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError, zipfile.LargeZipFile, zlib.error,
            NotImplementedError, RuntimeError) as e:   # zlib: bad deflate data; the last two: an
        # unsupported compression method, an encrypted member
        raise error(f"{path}: damaged {what} ({type(e).__name__}: {e})") from None
