"""What ``digitnet predict`` reads: every kind of input, streamed in bounded-memory batches.

An input is an image file, a directory (its image files, sorted by name), ``-`` (paths read
from stdin, one per line), a ``.npy`` array (H×W, N×H×W or N×(H·W); uint8 0-255 or float
0-1), an IDX image file (raw or gzipped, recognised by its content), or a CSV of pixel rows
(H·W columns, optionally a leading label column; header optional; 0-255 or 0-1 per row).

``iter_batches`` turns a list of inputs into ``Batch``es of at most a few thousand images,
in input order, each image already the network's size. A bad input never stops the others:
it becomes an entry with an error message (a whole file that cannot be read is one entry
named after the file; a bad row of an array is one entry ``file[i]``). Images are
preprocessed as they are read; arrays, IDX and CSV rows are taken as they are (they are
already in the network's format) and only scaled to [0, 1].
"""

from __future__ import annotations

import gzip
import io
import itertools
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitnet.errors import DataError
from digitnet.idx import GZIP_MAGIC, IDX_TYPES, iter_idx_chunks, read_idx_header

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"})
IMAGE_CHUNK = 256     # image files decoded per batch
ARRAY_CHUNK = 4096    # rows of an array, IDX or CSV file per batch
NPY_MAGIC = b"\x93NUMPY"


@dataclass
class Batch:
    """Consecutive inputs in input order: ``names`` (k,), ``images`` float32 (k, H, W) in
    [0, 1] (zeros where the entry failed) and ``errors`` (k,): None, or why the entry failed."""

    names: list[str]
    images: np.ndarray
    errors: list[str | None]


def input_kind(path: Path) -> str:
    """"dir", "npy", "csv", "idx" or "image": by the name first, then by the first bytes
    (an IDX file starts with two zero bytes, gzip with 1f 8b, .npy with \\x93NUMPY)."""
    if path.is_dir():
        return "dir"
    name = path.name.lower()
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):   # an .npz is refused by the .npy reader, saying why
        return "npy"
    if suffix == ".csv" or name.endswith(".csv.gz"):
        return "csv"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        return "image"  # let the image reader say why it cannot be read
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head[:2] == GZIP_MAGIC or (len(head) >= 4 and head[:2] == b"\0\0" and head[2] in IDX_TYPES):
        return "idx"
    return "image"


def _directory_images(path: Path) -> list[Path]:
    """The image files directly inside ``path`` (by suffix, hidden files skipped), sorted by name."""
    try:
        entries = [e for e in os.scandir(path) if not e.name.startswith(".")
                   and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file()]
    except OSError as e:
        raise DataError(f"{path}: cannot list the directory ({e.strerror})") from None
    return [path / e.name for e in sorted(entries, key=lambda e: e.name)]


def _stdin_paths(stream) -> Iterator[str]:
    """Non-blank lines of ``stream``, stripped: one path each."""
    for line in stream:
        line = line.strip()
        if line:
            yield line


def _unit_rows(chunk: np.ndarray, label: str) -> tuple[np.ndarray, list[str | None]]:
    """Scale a chunk of rows (k, ...) to float32 [0, 1]: integers are 0-255, floats 0-1.
    Rows with NaN, infinities or values out of range are zeroed and get an error message."""
    k = len(chunk)
    flat = chunk.reshape(k, -1)
    if chunk.dtype.kind in "ui":
        bad_range = (flat.min(axis=1) < 0) | (flat.max(axis=1) > 255)
        images = flat.astype(np.float32) * np.float32(1 / 255)
        bad_nan = np.zeros(k, bool)
        why = "values outside 0-255"
    elif chunk.dtype.kind == "f":
        images = flat.astype(np.float32)
        bad_nan = ~np.isfinite(images).all(axis=1)
        with np.errstate(invalid="ignore"):
            bad_range = ~bad_nan & ((images.min(axis=1) < 0) | (images.max(axis=1) > 1))
        why = "values outside 0-1 (float arrays must be scaled to 0-1)"
    elif chunk.dtype.kind == "b":
        return flat.astype(np.float32), [None] * k
    else:
        raise DataError(f"{label}: arrays of {chunk.dtype} are not images (need uint8 or float)")
    errors: list[str | None] = [None] * k
    for i in np.flatnonzero(bad_nan | bad_range):  # only the bad rows, usually none
        errors[i] = "holds NaN or infinite values" if bad_nan[i] else why
        images[i] = 0
    return images, errors


def _check_shape(shape: tuple[int, ...], want: tuple[int, int], label: str) -> int:
    """Number of images in an array of ``shape`` that holds ``want``-sized images, or DataError."""
    h, w = want
    if shape == (h, w):
        return 1
    if len(shape) == 3 and shape[1:] == (h, w):
        return shape[0]
    if len(shape) == 2 and shape[1] == h * w:
        return shape[0]
    raise DataError(f"{label}: wrong shape {'×'.join(map(str, shape)) or 'scalar'}; expected {h}×{w}, "
                    f"N×{h}×{w} or N×{h * w}")


def _array_batches(rows: Iterable[np.ndarray], label: str, shape: tuple[int, int]) -> Iterator[Batch]:
    """Batches from chunks of raw rows, named ``label[i]`` in order."""
    start = 0
    for chunk in rows:
        images, errors = _unit_rows(chunk, label)
        k = len(images)
        yield Batch([f"{label}[{i}]" for i in range(start, start + k)], images.reshape(k, *shape), errors)
        start += k


def _npy_rows(path: Path, shape: tuple[int, int], chunk: int) -> Iterator[np.ndarray]:
    """Chunks of a .npy file's rows, memory-mapped so a large file is never read whole."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(NPY_MAGIC))
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if head.startswith(b"PK\x03\x04"):
        raise DataError(f"{path}: an .npz archive of several arrays; give a single .npy array")
    if head != NPY_MAGIC:
        # np.load would take anything else for a pickle and say so: name the real problem
        raise DataError(f"{path}: not a .npy array ({'the file is empty' if not head else 'no .npy header'})")
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, SyntaxError) as e:
        why = str(e)
        if "mmap length" in why:
            why = "the file is shorter than its header says: cut short?"
        elif "Python objects" in why or "pickle" in why:
            why = "it holds Python objects; digitnet never unpickles"
        raise DataError(f"{path}: not a readable .npy array ({why})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    n = _check_shape(a.shape, shape, str(path))
    a = a.reshape(n, -1)
    for i in range(0, n, chunk):
        yield np.asarray(a[i:i + chunk])


def _idx_rows(path: Path, shape: tuple[int, int], chunk: int) -> Iterator[np.ndarray]:
    """Chunks of an IDX image file, streamed (gzip too)."""
    _, declared = read_idx_header(path)
    if len(declared) == 1:
        raise DataError(f"{path}: an IDX label file, not images")
    _check_shape(declared, shape, str(path))
    if len(declared) == 2 and declared == shape:  # one image stored as H×W
        yield from (c.reshape(1, -1) for c in iter_idx_chunks(path, chunk=shape[0]))
        return
    yield from iter_idx_chunks(path, chunk)


def _csv_rows(path: Path, shape: tuple[int, int], chunk: int) -> Iterator[np.ndarray]:
    """Chunks of a CSV of pixel rows as float32 rows (k, H·W), each row scaled to [0, 1]
    (a row whose largest value is above 1 is read as 0-255). A leading label column and a
    header line are recognised and skipped. A malformed row raises DataError naming it."""
    n_pix = shape[0] * shape[1]
    try:
        raw = gzip.open(path, "rt", newline="") if path.name.lower().endswith(".gz") else open(path, newline="")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    with raw as f:
        lines = (line for line in f if line.strip())
        try:
            first = next(lines, None)
        except (UnicodeDecodeError, OSError, EOFError) as e:
            raise DataError(f"{path}: not a text CSV file ({e})") from None
        if first is None:
            raise DataError(f"{path}: empty CSV file")
        fields = first.split(",")
        if len(fields) not in (n_pix, n_pix + 1):
            raise DataError(f"{path}: rows have {len(fields)} columns; expected {n_pix} pixels, "
                            f"optionally after a label column")
        skip_label = len(fields) == n_pix + 1
        try:
            [float(v) for v in fields]
            pending = [first]
        except ValueError:
            pending = []  # a header line
        done = 0
        while True:
            try:
                block = pending + list(itertools.islice(lines, chunk - len(pending)))
            except (UnicodeDecodeError, OSError, EOFError) as e:
                raise DataError(f"{path}: unreadable after row {done:,} ({e})") from None
            pending = []
            if not block:
                return
            try:
                values = np.loadtxt(io.StringIO("".join(block)), delimiter=",", dtype=np.float32, ndmin=2)
                if values.shape[1] != len(fields):
                    raise ValueError(f"{values.shape[1]} columns")
            except ValueError:
                raise DataError(f"{path}: row {done + _first_bad_row(block, len(fields)):,} is not "
                                f"{len(fields)} numbers separated by commas") from None
            if skip_label:
                values = values[:, 1:]
            scale = np.where(values.max(axis=1, keepdims=True) > 1, np.float32(1 / 255), np.float32(1))
            yield values * scale
            done += len(block)


def _first_bad_row(block: list[str], n_fields: int) -> int:
    """Index of the first line in ``block`` that is not ``n_fields`` numbers (rare path)."""
    for i, line in enumerate(block):
        parts = line.split(",")
        try:
            if len(parts) != n_fields:
                raise ValueError
            [float(v) for v in parts]
        except ValueError:
            return i
    return 0


ROW_READERS: dict[str, Callable[[Path, tuple[int, int], int], Iterator[np.ndarray]]] = {
    "npy": _npy_rows,
    "idx": _idx_rows,
    "csv": _csv_rows,
}


def _file_batches(path: Path, shape: tuple[int, int], chunk: int, kind: str) -> Iterator[Batch]:
    """Batches of one array/IDX/CSV file; an error part-way becomes one error entry for the
    file after the rows already yielded."""
    label = str(path)
    try:
        yield from _array_batches(ROW_READERS[kind](path, shape, chunk), label, shape)
    except DataError as e:
        msg = str(e)
        prefix = f"{label}: "
        yield Batch([label], np.zeros((1, *shape), np.float32), [msg[len(prefix):] if msg.startswith(prefix) else msg])


def iter_batches(inputs: Iterable[str], shape: tuple[int, int], preprocess: Callable[[np.ndarray], np.ndarray],
                 stdin=None, image_chunk: int = IMAGE_CHUNK, array_chunk: int = ARRAY_CHUNK) -> Iterator[Batch]:
    """Read every input in order and yield Batches of at most ``image_chunk`` images or
    ``array_chunk`` array rows, each image (H, W) = ``shape``.

    ``preprocess(gray) -> (H, W)`` turns a decoded image file into the network's input (for
    example ``preprocess.to_mnist``); it may raise DataError, which becomes that entry's error.
    ``stdin`` is the stream read for ``-`` (default: sys.stdin). Memory stays bounded by the
    chunk sizes, whatever the number or size of the inputs.
    """
    from digitnet.preprocess import load_image

    names: list[str] = []
    images: list[np.ndarray] = []
    errors: list[str | None] = []
    blank = np.zeros(shape, np.float32)

    def flush() -> Iterator[Batch]:
        if names:
            yield Batch(names.copy(), np.stack(images), errors.copy())
            names.clear(), images.clear(), errors.clear()

    def add(name: str, image: np.ndarray | None, error: str | None) -> Iterator[Batch]:
        names.append(name)
        images.append(blank if image is None else image)
        errors.append(error)
        if len(names) >= image_chunk:
            yield from flush()

    def strip(name: str, msg: str) -> str:
        return msg[len(name) + 2:] if msg.startswith(f"{name}: ") else msg

    def one(arg: str, from_stdin: bool) -> Iterator[Batch]:
        if arg == "-":
            if from_stdin:
                yield from add(arg, None, "'-' inside the list read from stdin")
                return
            for line in _stdin_paths(stdin if stdin is not None else sys.stdin):
                yield from one(line, True)
            return
        path = Path(arg)
        if not path.exists():
            yield from add(arg, None, "no such file or directory")
            return
        kind = input_kind(path)
        if kind == "dir":
            try:
                files = _directory_images(path)
            except DataError as e:
                yield from add(arg, None, strip(arg, str(e)))
                return
            if not files:
                yield from add(arg, None, f"no image files in the directory (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
            for f in files:
                yield from image(str(f))
        elif kind == "image":
            yield from image(arg)
        else:
            yield from flush()
            yield from _file_batches(path, shape, array_chunk, kind)

    def image(name: str) -> Iterator[Batch]:
        try:
            x = preprocess(load_image(name))
        except DataError as e:
            yield from add(name, None, strip(name, str(e)))
            return
        yield from add(name, x, None)

    for arg in inputs:
        yield from one(str(arg), False)
    yield from flush()
