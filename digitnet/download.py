"""Fetching the official IDX files of MNIST, Fashion-MNIST and KMNIST, safely.

Each file is downloaded to ``NAME.part`` beside its final name, resumed with an HTTP
``Range`` request when a ``.part`` is already there (a dropped connection costs only what was
not yet received), checked against its published hash, and only then renamed into place
with ``os.replace``: a file under its final name is always complete and verified. Mirrors are
tried in order; a 404, a network error or a checksum mismatch moves on to the next one.

Mirrors are not trusted: a file may not grow beyond its published size (plus a margin), a
mirror slower than a minimum rate is given up, and each file has an overall deadline, all
enforced while bytes arrive (a watch thread shuts a stalled socket). Two downloads of one
file into one folder take turns under a lock, so a ``.part`` only ever has one writer.

Scope: plain HTTP(S) GETs through ``urllib`` (honours ``$https_proxy``); no parallel
downloads; no cleverness with servers that change a file between two requests (the hash
check catches them). Library code: nothing prints; progress goes to a ``Reporter``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from digitnet import __version__
from digitnet.atomic import locked
from digitnet.errors import DataError, DownloadError

CHUNK = 1 << 16
TIMEOUT = 30.0          # seconds without a byte before a connection counts as dropped
RETRIES = 2             # extra attempts on the same mirror after a dropped connection
HASHES = ("md5", "sha256")
DEADLINE = 3600.0       # seconds for one file, all mirrors and retries included
MIN_RATE = 10_000.0     # bytes/s a mirror must keep up, measured over RATE_WINDOW seconds
RATE_WINDOW = 60.0
SIZE_MARGIN = 1 << 16   # bytes accepted beyond a file's published size
MAX_UNKNOWN_SIZE = 1 << 30   # bytes accepted for a file whose size is not published


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set: its name on the mirrors and its published hash ``algo:hex``."""

    name: str
    hash: str
    raw_md5: str = ""   # md5 of the decompressed content, when published (see verify_local)
    size: int = 0       # bytes of the file as served, when published (0: unknown)

    @property
    def algorithm(self) -> str:
        return self.hash.split(":", 1)[0]

    @property
    def digest(self) -> str:
        return self.hash.split(":", 1)[1].lower()


@dataclass(frozen=True)
class Source:
    """Where a data set's files come from: mirrors (base URLs, tried in order) and the files."""

    name: str
    mirrors: tuple[str, ...]
    files: tuple[RemoteFile, ...]
    reference: str = ""   # where the hashes were published


def _files(hashes: dict[str, str], sizes: tuple[int, ...], raw: dict[str, str] | None = None) -> tuple[RemoteFile, ...]:
    raw = raw or {}
    return tuple(RemoteFile(name, "md5:" + md5, raw.get(name, ""), size)
                 for (name, md5), size in zip(hashes.items(), sizes, strict=True))


# Published md5 of each .gz as served. Sources, per set:
#  mnist: torchvision torchvision/datasets/mnist.py (MNIST.mirrors/resources); the CVDF mirror is
#    the one TensorFlow's tutorials used (DEFAULT_SOURCE_URL). Raw (decompressed) md5s as
#    commonly published alongside, e.g. in dataset-preparation scripts that check them.
#  fashion-mnist: the "Get the Data" table of github.com/zalandoresearch/fashion-mnist README.md
#    (same values in torchvision FashionMNIST.resources); the repository's data/fashion/ holds
#    the same files (fashion-mnist issue #77). Raw md5s: published in torchvision-based
#    loaders' raw_data lists; they match /usr/share/datasets/fashion-mnist, whose .gz files were
#    re-compressed (gzip mtime 2020-06-05) and so do NOT match the .gz md5s.
#  kmnist: torchvision KMNIST.resources; mirrors from github.com/rois-codh/kmnist README.md
#    (Google Storage) and torchvision (codh.rois.ac.jp).
# Sizes in bytes, as served (train images, train labels, test images, test labels): MNIST's
#   from its own page (yann.lecun.com/exdb/mnist); Fashion-MNIST's are the local copies' plus
#   the gzip header's file name the re-compression dropped (24/23 bytes); KMNIST's as
#   torchvision's download progress reports them. A download may exceed them by a margin.
SOURCES: dict[str, Source] = {
    "mnist": Source(
        "mnist",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",
         "https://storage.googleapis.com/cvdf-datasets/mnist/",
         "http://yann.lecun.com/exdb/mnist/"),
        _files({"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
                "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
               (9912422, 28881, 1648877, 4542),
               {"train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
                "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
                "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
                "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637"}),
        "torchvision/datasets/mnist.py"),
    "fashion-mnist": Source(
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
         "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        _files({"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
               (26421880, 29515, 4422102, 5148),
               {"train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
                "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
                "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965"}),
        "zalandoresearch/fashion-mnist README.md"),
    "kmnist": Source(
        "kmnist",
        ("https://storage.googleapis.com/kuzushiji-mnist/",
         "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"),
        _files({"train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
                "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
                "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
                "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134"},
               (18165135, 29497, 3041136, 5120)),
        "torchvision/datasets/mnist.py (KMNIST)"),
}


class Reporter:
    """Receives download progress; the default does nothing (the CLI draws a bar)."""

    def start(self, name: str, url: str, total: int | None, done: int) -> None:
        """A transfer of ``name`` begins (``done`` > 0 when resuming a ``.part``)."""

    def advance(self, name: str, nbytes: int) -> None:
        """``nbytes`` more bytes of ``name`` arrived."""

    def finish(self, name: str, status: str) -> None:
        """``name`` is settled: ``downloaded``, ``present`` (already there and verified)."""

    def warn(self, message: str) -> None:
        """Something went wrong but another attempt or mirror follows."""


@dataclass
class FileResult:
    """What happened to one file: its final path, status and the mirror that served it."""

    name: str
    path: Path
    status: str
    url: str = ""
    size: int = 0


def file_hash(path: Path, algorithm: str) -> str:
    """Hex digest of a file's bytes, read in blocks (``md5`` or ``sha256``)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_local(path: Path, entry: RemoteFile) -> str:
    """Check a local copy of ``entry``: ``'file'`` when its bytes match the published hash,
    ``'content'`` when only its decompressed content matches the published raw md5 (a
    re-compressed copy), ``''`` when neither does."""
    if file_hash(path, entry.algorithm) == entry.digest:
        return "file"
    if entry.raw_md5:
        import gzip
        import zlib

        h = hashlib.md5()
        try:
            with gzip.open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except (OSError, EOFError, zlib.error):
            return ""
        if h.hexdigest() == entry.raw_md5:
            return "content"
    return ""


class _Dropped(Exception):
    """The connection ended before the whole file arrived; the ``.part`` keeps what came."""


class _Refused(Exception):
    """The mirror misbehaved (too much data, too slow): give up on it; ``keep_part`` says
    whether what arrived may be resumed from."""

    def __init__(self, message: str, keep_part: bool):
        super().__init__(message)
        self.keep_part = keep_part


class _OutOfTime(Exception):
    """The file's overall deadline passed: no mirror is tried after this."""


def _rate(n: float) -> str:
    return f"{n / 1000:,.1f} kB/s" if n >= 1000 else f"{n:,.0f} bytes/s"


class _Watch:
    """Enforces a transfer's deadline and minimum rate from a side thread: when either is
    broken it shuts down the connection's sockets, which ends a read blocked on a server
    that drips a byte every few seconds (a socket timeout alone never fires then)."""

    def __init__(self, deadline: float, min_rate: float, window: float):
        self.deadline, self.min_rate, self.window = deadline, min_rate, window
        self.socks, self.got, self.reason = [], 0, None
        self._samples = [(time.monotonic(), 0)]
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def register(self, sock) -> None:
        self.socks.append(sock)
        if self.reason:
            self._kill()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join(timeout=5)

    def _kill(self) -> None:
        for sock in self.socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _run(self) -> None:
        tick = max(0.02, min(0.5, self.window / 20))
        while not self._done.wait(tick):
            now = time.monotonic()
            self._samples.append((now, self.got))
            if now >= self.deadline:
                self.reason = "deadline"
            else:
                # bytes over the last window: once a whole window has passed
                while len(self._samples) > 2 and self._samples[1][0] <= now - self.window:
                    self._samples.pop(0)
                t0, g0 = self._samples[0]
                if self.min_rate > 0 and now - t0 >= self.window and self.got - g0 < self.min_rate * (now - t0):
                    self.reason = f"too slow: {self.got - g0:,} bytes in the last {now - t0:.0f} s " \
                                  f"(the minimum is {_rate(self.min_rate)})"
            if self.reason:
                self._kill()
                return


def _opener(watch: _Watch) -> urllib.request.OpenerDirector:
    """urllib's opener (proxies from the environment, redirects) whose connections register
    their sockets with ``watch``."""

    class Watched:
        def do_open(self, http_class, req, **kw):
            class Conn(http_class):
                def connect(self):
                    super().connect()
                    watch.register(self.sock)
            return super().do_open(Conn, req, **kw)

    class HTTP(Watched, urllib.request.HTTPHandler):
        pass

    class HTTPS(Watched, urllib.request.HTTPSHandler):
        pass

    return urllib.request.build_opener(HTTP(), HTTPS())


def cap_for(entry: RemoteFile) -> int:
    """The most bytes accepted for ``entry``: its published size plus a margin (a mirror's
    copy may differ; the hash decides), or MAX_UNKNOWN_SIZE when no size is published."""
    return entry.size + max(SIZE_MARGIN, entry.size // 64) if entry.size else MAX_UNKNOWN_SIZE


def _fetch(url: str, part: Path, entry: RemoteFile, reporter: Reporter, timeout: float, watch: _Watch) -> None:
    """Append ``url`` to ``part``, resuming from its current size with a Range request.
    Raises _Dropped (resumable), _Refused (this mirror misbehaves), urllib/OS errors (try
    another mirror). ``watch`` stops a transfer past its deadline or below its minimum rate."""
    name, cap = entry.name, cap_for(entry)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": f"digitnet/{__version__}"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    left = watch.deadline - time.monotonic()
    try:
        response = _opener(watch).open(request, timeout=max(0.1, min(timeout, left)))
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:   # nothing left to send: the .part is already whole
            return
        raise
    except (OSError, http.client.HTTPException):
        if watch.reason:              # the watch cut a server that drips its headers
            raise _watch_error(watch) from None
        raise
    with response:
        if have and response.status != 206:
            have = 0                     # the server ignored Range: start over
        elif have:
            start = response.headers.get("Content-Range", "").removeprefix("bytes ").split("-", 1)[0]
            if start != str(have):       # not the range asked for: drop the .part, retry whole
                part.unlink()
                raise _Dropped(f"the server answered Range bytes={have}- with {start or 'no'} Content-Range")
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        if total is not None and total > cap:
            raise _Refused(f"announces {total:,} bytes, more than the {cap:,} this file can have", keep_part=True)
        reporter.start(name, url, total, have)
        got = 0
        with open(part, "ab" if have else "wb") as out:
            try:
                while True:
                    block = response.read1(CHUNK)
                    if not block:
                        break
                    if have + got + len(block) > cap:
                        out.close()
                        part.unlink()
                        raise _Refused(f"sent more than the {cap:,} bytes this file can have", keep_part=False)
                    out.write(block)
                    got += len(block)
                    watch.got += len(block)
                    reporter.advance(name, len(block))
            except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError, OSError, ValueError) as e:
                if watch.reason:
                    raise _watch_error(watch) from None
                if isinstance(e, (ValueError, OSError)) and not isinstance(e, (ConnectionError, TimeoutError)):
                    raise
                raise _Dropped(f"connection dropped after {have + got:,} bytes ({type(e).__name__})") from None
            if watch.reason:              # the watch shut the socket: the read saw an end that is not one
                raise _watch_error(watch)
            out.flush()
            os.fsync(out.fileno())
        if total is not None and have + got < total:
            raise _Dropped(f"connection closed after {have + got:,} of {total:,} bytes")


def _watch_error(watch: _Watch) -> Exception:
    if watch.reason == "deadline":
        return _OutOfTime()
    return _Refused(watch.reason, keep_part=True)


def download_file(entry: RemoteFile, mirrors: list[str] | tuple[str, ...], directory: Path,
                  reporter: Reporter | None = None, retries: int = RETRIES, timeout: float = TIMEOUT,
                  deadline: float = DEADLINE, min_rate: float = MIN_RATE, rate_window: float = RATE_WINDOW) -> FileResult:
    """Fetch one file into ``directory``: resume its ``.part``, verify, rename into place.

    A file already under its final name with the right hash is kept as it is. Raises
    DownloadError naming the file when every mirror failed; on a checksum mismatch the error
    gives both hashes and nothing is left under the final name (nor a ``.part``). A mirror
    that sends more than the file's size (``cap_for``) or less than ``min_rate`` bytes/s over
    ``rate_window`` seconds is given up; after ``deadline`` seconds in all (waiting for another
    download of the same file included) the file is. Two downloads of the same file into one
    folder take turns (a lock beside it), so neither ever sees the other's ``.part``.
    """
    reporter = reporter or Reporter()
    if entry.algorithm not in HASHES or not entry.digest:
        raise DataError(f"{entry.name}: unsupported hash {entry.hash!r} (use md5:HEX or sha256:HEX)")
    until = time.monotonic() + deadline
    lock = directory / f".{entry.name}.lock"
    try:
        with locked(lock, until, on_wait=lambda: reporter.warn(f"{entry.name}: waiting for another download of it "
                                                                f"into {directory}"), remove=True):
            return _download_locked(entry, mirrors, directory, reporter, retries, timeout, until, deadline,
                                    min_rate, rate_window)
    except TimeoutError:
        raise DownloadError(f"{entry.name}: another download of it into {directory} is still running after "
                            f"{deadline:g} s; try again when it is done") from None
    except OSError as e:
        if e.filename == str(lock):
            raise DataError(f"{directory}: cannot lock {lock.name} ({e.strerror})") from None
        raise


def _keep_part(part: Path) -> bool:
    """True when ``part`` holds bytes worth resuming from; an empty one is removed."""
    try:
        if part.stat().st_size:
            return True
        part.unlink()
    except OSError:
        pass
    return False


def _download_locked(entry, mirrors, directory, reporter, retries, timeout, until, deadline, min_rate, rate_window):
    final, part = directory / entry.name, directory / (entry.name + ".part")
    if final.is_file():
        how = verify_local(final, entry)
        if how:
            status = "present" if how == "file" else "present (re-compressed copy, content verified)"
            reporter.finish(entry.name, status)
            return FileResult(entry.name, final, status, size=final.stat().st_size)
    if not mirrors:
        raise DownloadError(f"{entry.name}: no mirror to download from")
    failures = []
    for i, base in enumerate(mirrors):
        url = base if base.endswith("/" + entry.name) else base.rstrip("/") + "/" + entry.name
        drops, resumed, fresh_retry = 0, False, True
        while True:
            resumed = resumed or (part.is_file() and part.stat().st_size > 0)
            try:
                with _Watch(until, min_rate, rate_window) as watch:
                    _fetch(url, part, entry, reporter, timeout, watch)
            except _OutOfTime:
                kept = " (the .part is kept: run again to resume)" if _keep_part(part) else ""
                raise DownloadError(f"{entry.name}: {url}: not done after the {deadline:g} s deadline{kept}") from None
            except _Refused as e:
                kept = " (the .part is kept: run again to resume)" if e.keep_part and _keep_part(part) else ""
                failures.append(f"{url}: {e}{kept}")
                break
            except _Dropped as e:
                drops += 1
                if drops <= retries:
                    reporter.warn(f"{entry.name}: {e}; resuming from {url}")
                    continue
                failures.append(f"{url}: {e} (the .part is kept: run again to resume)")
                break
            except urllib.error.HTTPError as e:
                failures.append(f"{url}: HTTP {e.code} {e.reason}")
                break
            except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
                failures.append(f"{url}: {getattr(e, 'reason', None) or e}")
                break
            got = file_hash(part, entry.algorithm)
            if got == entry.digest:
                os.replace(part, final)
                reporter.finish(entry.name, "downloaded")
                return FileResult(entry.name, final, "downloaded", url, final.stat().st_size)
            part.unlink()
            mismatch = f"checksum mismatch: expected {entry.algorithm} {entry.digest}, got {got}"
            if resumed and fresh_retry:   # the kept .part may hold another version's bytes: once afresh
                fresh_retry, resumed, drops = False, False, 0
                reporter.warn(f"{entry.name} from {url}: {mismatch}; downloading it again from the start")
                continue
            failures.append(f"{url}: {mismatch}")
            break
        if i + 1 < len(mirrors):
            reporter.warn(f"{entry.name}: {failures[-1]}; trying the next mirror")
    if len(failures) == 1:
        raise DownloadError(f"{entry.name}: {failures[0]}")
    raise DownloadError(f"{entry.name}: failed on every mirror: " + "; ".join(failures))


def download(source: Source, directory: Path, mirrors: list[str] | None = None, reporter: Reporter | None = None,
             retries: int = RETRIES, timeout: float = TIMEOUT, deadline: float = DEADLINE, min_rate: float = MIN_RATE,
             rate_window: float = RATE_WINDOW) -> list[FileResult]:
    """Download every file of ``source`` into ``directory`` (created if needed), each
    verified and placed atomically. ``mirrors`` replaces the source's own list when given;
    ``deadline`` (seconds) and ``min_rate`` (bytes/s over ``rate_window`` s) apply per file."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{directory}: cannot create the data directory ({e.strerror})") from None
    if not os.access(directory, os.W_OK):
        raise DataError(f"{directory}: not writable")
    use = tuple(mirrors) if mirrors else source.mirrors
    return [download_file(entry, use, directory, reporter, retries, timeout, deadline, min_rate, rate_window)
            for entry in source.files]


def _size_field(f: dict) -> int:
    size = f.get("size", 0)
    if type(size) is not int or size < 0:
        raise ValueError(f"size of {f.get('name')!r} must be a whole number of bytes, not {size!r}")
    return size


def load_manifest(path: Path) -> Source:
    """Read a JSON manifest ``{"name", "mirrors": [URL...], "files": [{"name", "hash",
    "size"}...]}`` (``hash`` as ``md5:HEX`` or ``sha256:HEX``; ``size`` in bytes, optional but
    it caps what a mirror may send): for private mirrors and for tests."""
    try:
        doc = json.loads(Path(path).read_text())
        files = tuple(RemoteFile(str(f["name"]), str(f["hash"]), str(f.get("raw_md5", "")), _size_field(f))
                      for f in doc["files"])
        source = Source(str(doc.get("name") or Path(path).stem), tuple(str(m) for m in doc.get("mirrors", ())), files,
                        str(path))
    except FileNotFoundError:
        raise DataError(f"{path}: no such manifest") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a download manifest ({type(e).__name__}: {e})") from None
    for entry in files:
        if entry.algorithm not in HASHES or ":" not in entry.hash or "/" in entry.name or entry.name in ("", ".", ".."):
            raise DataError(f"{path}: bad entry {entry.name!r} (a plain file name and a hash md5:HEX or sha256:HEX)")
    return source


def source_for(name: str) -> Source:
    """The built-in source of a known data set; DataError listing the downloadable names."""
    from digitnet.datasets import SHIPPED

    if name not in SOURCES:
        known = ", ".join(SOURCES)
        hint = " (it ships inside digitnet: nothing to download)" if name in SHIPPED else ""
        raise DataError(f"cannot download {name!r}{hint}; downloadable: {known}")
    return SOURCES[name]


def local_status(name: str) -> dict:
    """Where a known data set is on this machine: ``present``, ``path``, ``size`` (bytes on
    disk), ``train``/``test`` counts (from the IDX headers, or the shipped file's label
    arrays; not the images), ``downloadable``. A set shipped inside the package is always here."""
    from digitnet.datasets import KNOWN, SHIPPED, find_idx_files, known_locations, shipped_file
    from digitnet.idx import read_idx_header

    status = {"name": name, "description": KNOWN[name].description, "classes": len(KNOWN[name].class_names),
              "present": False, "path": None, "size": 0, "train": None, "test": None, "downloadable": name in SOURCES}
    if name in SHIPPED:
        from importlib import resources

        import numpy as np

        with resources.as_file(shipped_file(name)) as p:
            with np.load(p, allow_pickle=False) as z:
                status.update(present=True, path=str(p), size=p.stat().st_size,
                              train=len(z["train_labels"]), test=len(z["test_labels"]))
        return status
    for directory in known_locations(name):
        files = find_idx_files(directory) if directory.is_dir() else None
        if files:
            try:
                train, test = (read_idx_header(files[r])[1][0] for r in ("train_labels", "test_labels"))
            except DataError:
                train = test = None
            status.update(present=True, path=str(directory), size=sum(f.stat().st_size for f in files.values()),
                          train=train, test=test)
            break
    return status
