"""What ``digitnet predict`` and ``digitnet evaluate`` read: every kind of input, streamed in
bounded-memory batches.

An input is an image file, a directory (its image files, sorted by name), ``-`` (stdin: paths,
one per line, or the bytes of one image), a ``.npy`` array (H×W, N×H×W or N×(H·W); uint8 0-255
or float 0-1), an IDX image file (raw or gzipped, recognised by its content), or a CSV of pixel
rows (H·W columns, optionally a leading label column; header optional; 0-255 or 0-1 per row).

``iter_batches`` turns a list of inputs into ``Batch``es of at most a few thousand images, in
input order, each image already the network's size. A bad input never stops the others: it
becomes an entry with an error message (a whole file that cannot be read is one entry without
an index; a bad row of an array is one entry with its index). Images are preprocessed as they
are read; arrays, IDX and CSV rows are taken as they are (they are already in the network's
format) and only scaled to [0, 1].

Memory is bounded by the chunk sizes whatever the inputs claim: a ``.npy`` header is checked
against the file's size before anything is mapped, CSV lines are read with a length cap
(gzip too), IDX files are streamed. Paths read from stdin are answered one at a time, so a
pipeline gets each answer before it sends the next path.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import stat
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitnet.errors import DataError
from digitnet.idx import GZIP_MAGIC, IDX_TYPES, iter_idx_chunks, read_idx_header

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"})
IMAGE_CHUNK = 256     # image files decoded per batch
ARRAY_CHUNK = 4096    # rows of an array, IDX or CSV file per batch
NPY_MAGIC = b"\x93NUMPY"
NPY_MAX_HEADER = 1 << 16          # a real header is ~128 bytes; numpy itself refuses > 10,000 by default
CSV_CHARS_PER_VALUE = 32          # "0.123456789012345678" and then some: a cap, not a format
CSV_BLOCK_BYTES = 8 << 20         # text parsed at once (fewer rows than the chunk when lines are long)
STDIN_PATH_MAX = 1 << 16          # a line of stdin longer than this is not a path
STDIN_IMAGE_MAX = 64 << 20        # image bytes read from stdin
# The first bytes of the image formats Pillow reads, for image bytes piped into `-`.
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def entry_name(source: str, index: int | None) -> str:
    """How an entry is named in messages and tables: ``file`` or ``file[i]`` for row i."""
    return source if index is None else f"{source}[{index}]"


@dataclass
class Batch:
    """Consecutive entries in input order: ``sources`` (k,) the input each came from,
    ``indices`` (k,) its row in an array/IDX/CSV file (None for an image file or a whole
    file that failed), ``images`` float32 (k, H, W) in [0, 1] (zeros where the entry failed),
    ``errors`` (k,): None, or why the entry failed; ``labels`` (k,) int64 for a CSV's label
    column when the reader was asked for labels (-1 where there is none)."""

    sources: list[str]
    indices: list[int | None]
    images: np.ndarray
    errors: list[str | None]
    labels: np.ndarray | None = field(default=None)

    @property
    def names(self) -> list[str]:
        """``file`` or ``file[i]`` per entry."""
        return [entry_name(s, i) for s, i in zip(self.sources, self.indices)]


def input_kind(path: Path) -> str:
    """"dir", "npy", "csv", "idx", "image" or "special" (a pipe, device or socket): by the name
    first, then by the first bytes (an IDX file starts with two zero bytes, gzip with 1f 8b,
    .npy with \\x93NUMPY)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return "image"  # let the image reader say why it cannot be read
    if stat.S_ISDIR(mode):
        return "dir"
    if not stat.S_ISREG(mode):
        return "special"
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
        return "image"
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


def _no_images_why(path: Path) -> str:
    """Why a folder gave predict nothing: no image files, and, when it holds folders instead
    (a folder per class, say), where their images are read."""
    looked = f"looked for {', '.join(sorted(IMAGE_SUFFIXES))}"
    try:
        folders = sorted(e.name for e in os.scandir(path) if not e.name.startswith(".") and e.is_dir())
    except OSError:
        folders = []
    if not folders:
        return f"no image files in the directory ({looked})"
    shown = ", ".join(f"{f}/" for f in folders[:3]) + (", …" if len(folders) > 3 else "")
    where = os.path.join(str(path), "*", "")
    return (f"no image files in the directory, only folders ({shown}): predict reads no subfolders; "
            f"give {where}, or for a folder per class: digitnet evaluate --data {path}")


# ---------------------------------------------------------------------------------------------
# stdin: paths (one per line, any bytes a file name may hold) or one image's bytes

def _binary(stream):
    """The byte stream under a text stream (sys.stdin.buffer), or the stream itself."""
    return getattr(stream, "buffer", stream)


def is_image_bytes(head: bytes) -> bool:
    """True when ``head`` (the first bytes of stdin) starts like an image file rather than a
    line of text: an image format's signature, or a control character other than a line
    end or a tab (never in a list of paths: binary data, to be refused as not an image)."""
    return head.startswith(IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP") \
        or (head[:2] == b"BM" and head[6:10] == b"\0\0\0\0") \
        or (len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3] in b" \t\r\n") \
        or any(b < 0x20 and b not in b"\t\r\n" or b == 0x7F for b in head)


def _stdin_items(stream) -> Iterator[tuple[str, object]]:
    """("path", str) for each non-blank line of ``stream``, read one at a time (so a writer
    that waits for each answer is never blocked), or one ("image", bytes) when the stream
    holds an image file's bytes. Paths are decoded as the system decodes file names
    (undecodable bytes kept as surrogates), so any file name round-trips. A line longer
    than STDIN_PATH_MAX becomes ("error", why)."""
    raw = _binary(stream)
    if isinstance(raw, io.TextIOBase):            # a text stream without bytes under it (tests)
        for line in raw:
            if line.strip():
                yield "path", line.strip()
        return
    if not hasattr(raw, "peek"):
        raw = io.BufferedReader(raw)
    if is_image_bytes(raw.peek(64)[:64]):       # peek: nothing is consumed, and it waits for one read only
        data = bytearray()
        while len(data) <= STDIN_IMAGE_MAX:
            block = raw.read(min(1 << 20, STDIN_IMAGE_MAX + 1 - len(data)))
            if not block:
                break
            data += block
        if len(data) > STDIN_IMAGE_MAX:
            yield "error", f"more than {STDIN_IMAGE_MAX >> 20} MB of image bytes on stdin"
        else:
            yield "image", bytes(data)
        return
    while line := raw.readline(STDIN_PATH_MAX + 1):
        if len(line) > STDIN_PATH_MAX and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):            # skip the rest of it, in bounded pieces
                line = raw.readline(STDIN_PATH_MAX)
            yield "error", f"a line of stdin longer than {STDIN_PATH_MAX:,} bytes is not a path"
            continue
        text = line.strip(b"\r\n").strip()
        if text:
            yield "path", os.fsdecode(text)


def load_image_bytes(data: bytes) -> np.ndarray:
    """Greyscale (H, W) in [0, 1] from an image file's bytes, through the one image loader
    (``preprocess.load_image``, which reads a path): the bytes get a name in memory (memfd)
    where the system has it, else in a temporary folder. DataError without that name."""
    import tempfile

    from digitnet.preprocess import load_image

    def load(name: str) -> np.ndarray:
        try:
            return load_image(name)
        except DataError as e:
            raise DataError(str(e).removeprefix(f"{name}: ")) from None

    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("digitnet-stdin", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            return load(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
    with tempfile.TemporaryDirectory(prefix="digitnet-stdin-") as tmp:
        name = os.path.join(tmp, "stdin")
        with open(name, "wb") as f:
            f.write(data)
        return load(name)


# ---------------------------------------------------------------------------------------------
# arrays: .npy, IDX, CSV

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
    """Number of images in an array of ``shape`` that holds ``want``-sized images, or DataError
    (also when it holds none: an empty file is an error, not silence)."""
    h, w = want
    if shape == (h, w):
        n = 1
    elif len(shape) == 3 and shape[1:] == (h, w):
        n = shape[0]
    elif len(shape) == 2 and shape[1] == h * w:
        n = shape[0]
    else:
        raise DataError(f"{label}: wrong shape {'×'.join(map(str, shape)) or 'scalar'}; expected {h}×{w}, "
                        f"N×{h}×{w} or N×{h * w}")
    if n == 0:
        raise DataError(f"{label}: holds no images (0 rows)")
    return n


def _npy_header(f, path: Path) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """(dtype, shape, fortran_order, data offset) of an open .npy file, read and checked
    without np.load (which would trust the header's size, or offer to unpickle)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f, max_header_size=NPY_MAX_HEADER)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(f, max_header_size=NPY_MAX_HEADER)
        else:
            raise ValueError(f"unknown .npy format version {version}")
    except (ValueError, EOFError, SyntaxError, TypeError, OverflowError) as e:
        raise DataError(f"{path}: not a readable .npy array ({e})") from None
    if dtype.hasobject:
        raise DataError(f"{path}: not a readable .npy array (it holds Python objects; digitnet never unpickles)")
    return dtype, tuple(int(s) for s in shape), bool(fortran), f.tell()


def _npy_rows(path: Path, shape: tuple[int, int], chunk: int) -> Iterator[np.ndarray]:
    """Chunks (k, H·W) of a .npy file's rows, memory-mapped so a large file is never read
    whole; the header's claims are checked against the file's size first."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(NPY_MAGIC))
            if head.startswith(b"PK\x03\x04"):
                raise DataError(f"{path}: an .npz archive of several arrays; give a single .npy array")
            if head != NPY_MAGIC:
                # np.load would take anything else for a pickle and say so: name the real problem
                raise DataError(f"{path}: not a .npy array ({'the file is empty' if not head else 'no .npy header'})")
            f.seek(0)
            dtype, dims, fortran, offset = _npy_header(f, path)
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    n = _check_shape(dims, shape, str(path))
    need = math.prod(dims) * dtype.itemsize            # Python ints: a header may claim anything
    if size - offset < need:
        raise DataError(f"{path}: not a readable .npy array (the file is shorter than its header says: cut short? "
                        f"{'×'.join(map(str, dims))} {dtype} needs {need:,} bytes, the file holds {size - offset:,})")
    if dtype.kind not in "uifb":
        raise DataError(f"{path}: arrays of {dtype} are not images (need uint8 or float)")
    a = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=dims, order="F" if fortran else "C")
    rows = a.reshape(1, *dims) if dims == shape else a
    for i in range(0, n, chunk):
        yield np.array(rows[i:i + chunk]).reshape(-1, shape[0] * shape[1])   # a copy of this chunk only


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


class _CsvLines:
    """The lines of a CSV file (raw or gzip, by content), as bytes, each read with a length
    cap so one giant line (or a gzip of one) costs at most ``cap`` bytes. Yields (line, ok):
    ok False for a line longer than the cap (its bytes skipped in pieces)."""

    def __init__(self, path: Path, cap: int):
        self.path, self.cap = path, cap

    def __iter__(self) -> Iterator[tuple[bytes, bool]]:
        try:
            f = open(self.path, "rb")
        except OSError as e:
            raise DataError(f"{self.path}: cannot read ({e.strerror})") from None
        with f:
            stream = gzip.GzipFile(fileobj=f, mode="rb") if f.read(2) == GZIP_MAGIC else f
            f.seek(0)
            with stream:
                while True:
                    line = self._read(stream)
                    if not line:
                        return
                    if len(line) > self.cap and not line.endswith(b"\n"):
                        while line and not line.endswith(b"\n"):
                            line = self._read(stream, self.cap)
                        yield b"", False
                    else:
                        yield line, True

    def _read(self, stream, cap: int | None = None) -> bytes:
        try:
            return stream.readline((cap or self.cap) + 1)
        except EOFError:
            raise DataError(f"{self.path}: not a text CSV file (the gzip data is cut short)") from None
        except (OSError, zlib.error) as e:
            raise DataError(f"{self.path}: not a text CSV file ({e})") from None


def _parse_row(line: str, n_fields: int) -> np.ndarray | None:
    """The numbers of one CSV line (n_fields,), or None when it is not n_fields numbers."""
    parts = line.split(",")
    if len(parts) != n_fields:
        return None
    try:
        return np.array([float(p) for p in parts], np.float64)
    except ValueError:
        return None


def csv_rows(path: Path, shape: tuple[int, int], chunk: int, labels: bool = False
             ) -> Iterator[tuple[np.ndarray, list[str | None], np.ndarray]]:
    """Chunks of a CSV of pixel rows: (images float32 (k, H·W) in [0, 1], errors (k,), labels
    (k,) int64). Each row is scaled by itself (a row whose largest value is above 1 is read
    as 0-255). A header line and a leading label column are recognised; the labels are -1
    when there is no label column (``labels=True`` makes that a DataError) or a row's label
    is not a whole number ≥ 0. A bad row is an error entry, and the rows after it are still
    read; a line longer than H·W values could be is refused without being held in memory."""
    n_pix = shape[0] * shape[1]
    cap = (n_pix + 1) * CSV_CHARS_PER_VALUE + 1024
    lines = iter(_CsvLines(path, cap))
    first, n_fields, header = None, 0, False
    for raw, ok in lines:
        if not ok:
            raise DataError(f"{path}: the first line is longer than {cap:,} bytes: not a CSV of {n_pix} pixels per row")
        text = _decode(raw, path, 0)
        if text.strip():
            first = text
            break
    if first is None:
        raise DataError(f"{path}: empty CSV file")
    n_fields = len(first.split(","))
    if n_fields not in (n_pix, n_pix + 1):
        raise DataError(f"{path}: rows have {n_fields} columns; expected {n_pix} pixels, optionally after a label column")
    has_label = n_fields == n_pix + 1
    if labels and not has_label:
        raise DataError(f"{path}: no label column (rows have {n_pix} values: the pixels only); evaluate needs the "
                        "true label first in each row")
    header = _parse_row(first, n_fields) is None              # words, not numbers: a header line
    pending = [] if header else [(first, True)]
    row = 0

    def block_of(items):
        nonlocal row
        k = len(items)
        images = np.zeros((k, n_pix), np.float32)
        errors: list[str | None] = [None] * k
        labs = np.full(k, -1, np.int64)
        try:
            values = np.loadtxt([t for t, _ in items], delimiter=",", dtype=np.float64, ndmin=2) \
                if all(ok for _, ok in items) else None
            if values is not None and values.shape != (k, n_fields):
                values = None
        except ValueError:
            values = None
        for i, (text, ok) in enumerate(items):
            v = values[i] if values is not None else (_parse_row(text, n_fields) if ok else None)
            if v is None:
                errors[i] = (f"row {row + i} is not {n_fields} numbers separated by commas" if ok else
                             f"row {row + i} is longer than {cap:,} characters: not {n_fields} numbers")
                continue
            if has_label:
                lab, v = v[0], v[1:]
                if math.isfinite(lab) and lab >= 0 and lab == int(lab):
                    labs[i] = int(lab)
            if not np.isfinite(v).all():
                errors[i] = "holds NaN or infinite values"
            elif v.min() < 0 or v.max() > 255:
                errors[i] = "values outside 0-255"
            else:
                images[i] = v / 255 if v.max() > 1 else v
        row += k
        return images, errors, labs

    done = False
    while not done:
        items = pending
        pending = []
        size = sum(len(t) for t, _ in items)
        for raw, ok in lines:
            if ok:
                text = _decode(raw, path, row + len(items))
                if not text.strip():
                    continue
                items.append((text, True))
                size += len(text)
            else:
                items.append(("", False))
            if len(items) >= chunk or size >= CSV_BLOCK_BYTES:
                break
        else:
            done = True
        if items:
            yield block_of(items)
        elif row == 0:
            raise DataError(f"{path}: no rows after the header line" if header else f"{path}: empty CSV file")


def _decode(raw: bytes, path: Path, row: int) -> str:
    """A CSV line as text: ASCII digits, commas and a few letters (a header); a UTF-8 BOM is dropped."""
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text CSV file (row {row:,} is not UTF-8 text)") from None


def _csv_as_rows(path: Path, shape: tuple[int, int], chunk: int):
    """csv_rows for the array readers' protocol: (images, errors) pairs."""
    for images, errors, _ in csv_rows(path, shape, chunk):
        yield images, errors


ROW_READERS: dict[str, Callable[[Path, tuple[int, int], int], Iterator]] = {
    "npy": _npy_rows,
    "idx": _idx_rows,
    "csv": _csv_as_rows,
}


def _strip(name: str, msg: str) -> str:
    """A message without the ``name: `` it starts with (the entry is already named)."""
    return msg[len(name) + 2:] if msg.startswith(f"{name}: ") else msg


def _failure(e: BaseException) -> str:
    """One line for an unexpected failure reading one input (it never stops the others)."""
    if isinstance(e, MemoryError):
        return "out of memory reading it"
    if isinstance(e, OSError) and e.strerror:
        return f"cannot read ({e.strerror})"
    return f"could not be read ({type(e).__name__}: {e})"


def _file_batches(path: Path, shape: tuple[int, int], chunk: int, kind: str) -> Iterator[Batch]:
    """Batches of one array/IDX/CSV file, entries ``(file, i)``; an error part-way becomes
    one error entry for the file (no index) after the rows already yielded."""
    label = str(path)
    start = 0
    try:
        for chunk_rows in ROW_READERS[kind](path, shape, chunk):
            if isinstance(chunk_rows, tuple):                      # CSV: already scaled, per-row errors
                images, errors = chunk_rows
            else:
                images, errors = _unit_rows(chunk_rows, label)
            k = len(images)
            yield Batch([label] * k, list(range(start, start + k)), images.reshape(k, *shape), errors)
            start += k
    except DataError as e:
        yield Batch([label], [None], np.zeros((1, *shape), np.float32), [_strip(label, str(e))])
    except Exception as e:  # noqa: BLE001 — one input's failure is that input's error row
        yield Batch([label], [None], np.zeros((1, *shape), np.float32), [_failure(e)])


def iter_batches(inputs: Iterable[str], shape: tuple[int, int], preprocess: Callable[[np.ndarray], np.ndarray],
                 stdin=None, image_chunk: int = IMAGE_CHUNK, array_chunk: int = ARRAY_CHUNK) -> Iterator[Batch]:
    """Read every input in order and yield Batches of at most ``image_chunk`` images or
    ``array_chunk`` array rows, each image (H, W) = ``shape``.

    ``preprocess(gray) -> (H, W)`` turns a decoded image file into the network's input (for
    example ``preprocess.to_mnist``); it may raise DataError, which becomes that entry's error.
    ``stdin`` is the stream read for ``-`` (default: sys.stdin): each path read from it is
    yielded (as a batch of its own) before the next line is read. Memory stays bounded by the
    chunk sizes, whatever the number or size of the inputs.
    """
    from digitnet.preprocess import load_image

    sources: list[str] = []
    indices: list[int | None] = []
    images: list[np.ndarray] = []
    errors: list[str | None] = []
    blank = np.zeros(shape, np.float32)

    def flush() -> Iterator[Batch]:
        if sources:
            yield Batch(sources.copy(), indices.copy(), np.stack(images), errors.copy())
            sources.clear(), indices.clear(), images.clear(), errors.clear()

    def add(name: str, image: np.ndarray | None, error: str | None) -> Iterator[Batch]:
        sources.append(name)
        indices.append(None)
        images.append(blank if image is None else image)
        errors.append(error)
        if len(sources) >= image_chunk:
            yield from flush()

    def one(arg: str, from_stdin: bool) -> Iterator[Batch]:
        if arg == "-":
            if from_stdin:
                yield from add(arg, None, "'-' inside the list read from stdin")
                return
            for what, item in _stdin_items(stdin if stdin is not None else sys.stdin):
                if what == "path":
                    yield from one(item, True)
                elif what == "image":
                    yield from decoded("-", lambda: load_image_bytes(item))
                else:
                    yield from add("-", None, item)
                yield from flush()            # answered before the next line is read
            return
        path = Path(arg)
        try:
            kind = input_kind(path) if os.path.lexists(path) else None
        except Exception as e:  # noqa: BLE001 — a name the system cannot even look at
            yield from add(arg, None, _failure(e))
            return
        if kind is None or not path.exists():
            yield from add(arg, None, "no such file or directory")
            return
        if kind == "special":
            yield from add(arg, None, "not a regular file (a pipe or a device); pipe image bytes or paths into '-'")
        elif kind == "dir":
            try:
                files = _directory_images(path)
            except DataError as e:
                yield from add(arg, None, _strip(arg, str(e)))
                return
            if not files:
                yield from add(arg, None, _no_images_why(path))
            for f in files:
                yield from decoded(str(f), lambda f=f: load_image(f))
        elif kind == "image":
            yield from decoded(arg, lambda: load_image(arg))
        else:
            yield from flush()
            yield from _file_batches(path, shape, array_chunk, kind)

    def decoded(name: str, load: Callable[[], np.ndarray]) -> Iterator[Batch]:
        try:
            x = preprocess(load())
        except DataError as e:
            yield from add(name, None, _strip(name, str(e)))
            return
        except Exception as e:  # noqa: BLE001 — one image's failure is its error row, never the run's
            yield from add(name, None, _failure(e))
            return
        yield from add(name, x, None)

    for arg in inputs:
        yield from one(str(arg), False)
    yield from flush()
