"""Reading ``.npz`` files that may come from strangers: never unpickle, say plainly what is wrong."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

ZIP_MAGIC = b"PK\x03\x04"
NPY_MAGIC = b"\x93NUMPY"


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
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name] for name in z.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise error(f"{path}: holds object arrays (pickled Python objects); digitnet never unpickles, refused") from None
        raise error(f"{path}: damaged {what} ({e})") from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError, zipfile.LargeZipFile) as e:
        raise error(f"{path}: damaged {what} ({type(e).__name__}: {e})") from None
