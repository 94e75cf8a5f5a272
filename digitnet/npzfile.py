"""Reading ``.npz`` files that may come from strangers: never unpickle, never inflate what is
not needed, never allocate what a header merely claims, and say plainly what is wrong.

An ``.npz`` is a zip of ``.npy`` members. ``NpzArchive`` lists the members from the zip's
directory alone, reads a member's ``.npy`` header without its data (shape and dtype), and
reads one member at a time, after checking that its header does not claim more bytes than
the member holds and that it fits the caller's budget. So a 2 MB file with a gigabyte of
zeros in a member nobody asked for costs nothing, and one that claims terabytes in a
40-byte member is refused before anything is allocated. Opening an archive looks at every
member's header (a few hundred bytes each) and refuses object arrays outright.
"""

from __future__ import annotations

import os
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

ZIP_MAGIC = b"PK\x03\x04"
NPY_MAGIC = b"\x93NUMPY"
MAX_MEMBERS = 10_000          # zip entries; each costs a ZipInfo before anything is read
_NPY_HEADERS = {(1, 0): "read_array_header_1_0", (2, 0): "read_array_header_2_0"}
# What reading a damaged member may raise: zlib for bad deflate data, NotImplementedError for
# an unsupported compression method, RuntimeError for an encrypted member, ValueError (a
# member name that is not the UTF-8 it claims, a negative offset) and OverflowError for
# nonsense in the zip's own headers.
_ZIP_ERRORS = (OSError, zipfile.BadZipFile, EOFError, KeyError, zipfile.LargeZipFile, zlib.error,
               NotImplementedError, RuntimeError, ValueError, OverflowError)


def _size(n: float) -> str:
    return f"{n:,.0f} bytes"


class NpzArchive:
    """An opened ``.npz``: ``names`` (members, ``.npy`` dropped), ``header(name)`` and
    ``read(name)``. Every problem raises ``error`` (a DigitnetError type) with one line that
    names the file and says it was expected to be ``what``."""

    def __init__(self, path: str | os.PathLike, error: type[Exception], what: str):
        self.path, self.error, self.what = Path(path), error, what
        path = self.path
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
            self.zf = zipfile.ZipFile(path)
            infos = self.zf.infolist()
        except _ZIP_ERRORS as e:
            raise self._damaged(e) from None
        if len(infos) > MAX_MEMBERS:
            self.zf.close()
            raise error(f"{path}: not {what} (a zip of {len(infos):,} members)")
        self.members = {(i.filename[:-4] if i.filename.endswith(".npy") else i.filename): i for i in infos}
        try:
            for name, info in self.members.items():   # headers only: a few hundred bytes each
                if info.filename.endswith(".npy") and self.header(name)[1].hasobject:
                    raise error(f"{path}: holds object arrays (pickled Python objects); digitnet never unpickles, refused")
        except BaseException:
            self.zf.close()
            raise

    def _damaged(self, e: Exception) -> Exception:
        return self.error(f"{self.path}: damaged {self.what} ({type(e).__name__}: {e})")

    def __enter__(self) -> NpzArchive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.zf.close()

    @property
    def names(self) -> list[str]:
        return list(self.members)

    def __contains__(self, name: str) -> bool:
        return name in self.members

    def __iter__(self):
        return iter(self.members)

    def _open_header(self, name: str):
        """(open member stream positioned at the data, shape, fortran_order, dtype, data bytes held)."""
        from numpy.lib import format as npy

        info = self.members[name]
        if not info.filename.endswith(".npy"):
            raise self.error(f"{self.path}: damaged {self.what} (member {info.filename!r} is not an .npy array)")
        try:
            f = self.zf.open(info)
        except _ZIP_ERRORS as e:
            raise self._damaged(e) from None
        try:
            version = npy.read_magic(f)
            reader = _NPY_HEADERS.get(version)
            if reader is None:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran, dtype = getattr(npy, reader)(f)
        # a header is a Python literal: nonsense in it can fail to tokenize, parse, or nest
        except (ValueError, SyntaxError, TypeError, tokenize.TokenError, RecursionError, MemoryError) as e:
            f.close()
            why = str(e).splitlines()[0][:120] if isinstance(e, ValueError) and str(e) else type(e).__name__
            raise self.error(f"{self.path}: damaged {self.what} ({name}: the .npy header is not valid: {why})") from None
        except _ZIP_ERRORS as e:
            f.close()
            raise self._damaged(e) from None
        return f, shape, fortran, dtype, info.file_size - f.tell()

    def header(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """A member's declared (shape, dtype), from its .npy header alone."""
        f, shape, _, dtype, _ = self._open_header(name)
        f.close()
        return shape, dtype

    def read(self, name: str, max_bytes: int | None = None, what: str | None = None) -> np.ndarray:
        """One member as an array. Refused, before allocating: object arrays (digitnet never
        unpickles), a header that claims more bytes than the member holds, and more than
        ``max_bytes`` (``what`` names the array in that message)."""
        f, shape, fortran, dtype, have = self._open_header(name)
        with f:
            if dtype.hasobject:
                raise self.error(f"{self.path}: holds object arrays (pickled Python objects); "
                                 "digitnet never unpickles, refused")
            need = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
            if need > have:
                raise self.error(f"{self.path}: damaged {self.what} ({name} claims shape "
                                 f"{'×'.join(map(str, shape))} of {dtype}, {_size(need)}, but holds {have:,})")
            if max_bytes is not None and need > max_bytes:
                raise self.error(f"{self.path}: {what or name} is {_size(need)}, more than the "
                                 f"{_size(max_bytes)} {self.what} may hold there")
            count = int(np.prod(shape, dtype=np.int64))
            # np.ndarray, not np.empty: zero-width string dtypes (as numpy's own reader does)
            array = np.ndarray(count, dtype=dtype)
            if need:
                try:
                    got = _read_into(f, array.view(np.uint8))
                except _ZIP_ERRORS as e:
                    raise self._damaged(e) from None
                if got < need:
                    raise self.error(f"{self.path}: damaged {self.what} ({name} ends after {got:,} of {need:,} bytes)")
        return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)


def _read_into(f, buf: np.ndarray) -> int:
    """Fill the uint8 array ``buf`` from the stream in blocks; return the bytes read."""
    view = memoryview(buf)
    got, n = 0, len(buf)
    while got < n:
        k = f.readinto(view[got:got + (1 << 20)])
        if not k:
            break
        got += k
    return got


def open_npz(path: str | os.PathLike, error: type[Exception], what: str) -> NpzArchive:
    """Open an ``.npz`` from a stranger for reading member by member (see NpzArchive)."""
    return NpzArchive(path, error, what)


def read_npz(path: str | os.PathLike, error: type[Exception], what: str, names=None,
             max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` named in ``names`` (those present; every one when None), each
    read as ``NpzArchive.read`` does. Members not named are never inflated."""
    with open_npz(path, error, what) as z:
        wanted = z.names if names is None else [n for n in names if n in z]
        return {name: z.read(name, max_bytes) for name in wanted}
