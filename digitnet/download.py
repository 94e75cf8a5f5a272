"""Fetching the official IDX files of MNIST, Fashion-MNIST and KMNIST, safely.

Each file is downloaded to ``NAME.part`` beside its final name, resumed with an HTTP
``Range`` request when a ``.part`` is already there (a dropped connection costs only what was
not yet received), checked against its published hash, and only then renamed into place
with ``os.replace``: a file under its final name is always complete and verified. Mirrors are
tried in order; a 404, a network error or a checksum mismatch moves on to the next one.

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
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from digitnet import __version__
from digitnet.errors import DataError, DownloadError

CHUNK = 1 << 16
TIMEOUT = 30.0          # seconds without a byte before a connection counts as dropped
RETRIES = 2             # extra attempts on the same mirror after a dropped connection
HASHES = ("md5", "sha256")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set: its name on the mirrors and its published hash ``algo:hex``."""

    name: str
    hash: str
    raw_md5: str = ""   # md5 of the decompressed content, when published (see verify_local)

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


def _files(hashes: dict[str, str], raw: dict[str, str] | None = None) -> tuple[RemoteFile, ...]:
    raw = raw or {}
    return tuple(RemoteFile(name, "md5:" + md5, raw.get(name, "")) for name, md5 in hashes.items())


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
                "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134"}),
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


def _fetch(url: str, part: Path, name: str, reporter: Reporter, timeout: float) -> None:
    """Append ``url`` to ``part``, resuming from its current size with a Range request.
    Raises _Dropped (resumable), urllib/OS errors (try another mirror)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": f"digitnet/{__version__}"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:   # nothing left to send: the .part is already whole
            return
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
        reporter.start(name, url, total, have)
        got = 0
        with open(part, "ab" if have else "wb") as out:
            try:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    out.write(block)
                    got += len(block)
                    reporter.advance(name, len(block))
            except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError) as e:
                raise _Dropped(f"connection dropped after {have + got:,} bytes ({type(e).__name__})") from None
            out.flush()
            os.fsync(out.fileno())
        if total is not None and have + got < total:
            raise _Dropped(f"connection closed after {have + got:,} of {total:,} bytes")


def download_file(entry: RemoteFile, mirrors: list[str] | tuple[str, ...], directory: Path,
                  reporter: Reporter | None = None, retries: int = RETRIES, timeout: float = TIMEOUT) -> FileResult:
    """Fetch one file into ``directory``: resume its ``.part``, verify, rename into place.

    A file already under its final name with the right hash is kept as it is. Raises
    DownloadError naming the file when every mirror failed; on a checksum mismatch the error
    gives both hashes and nothing is left under the final name (nor a ``.part``).
    """
    reporter = reporter or Reporter()
    if entry.algorithm not in HASHES or not entry.digest:
        raise DataError(f"{entry.name}: unsupported hash {entry.hash!r} (use md5:HEX or sha256:HEX)")
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
                _fetch(url, part, entry.name, reporter, timeout)
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
             retries: int = RETRIES, timeout: float = TIMEOUT) -> list[FileResult]:
    """Download every file of ``source`` into ``directory`` (created if needed), each
    verified and placed atomically. ``mirrors`` replaces the source's own list when given."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{directory}: cannot create the data directory ({e.strerror})") from None
    if not os.access(directory, os.W_OK):
        raise DataError(f"{directory}: not writable")
    use = tuple(mirrors) if mirrors else source.mirrors
    return [download_file(entry, use, directory, reporter, retries, timeout) for entry in source.files]


def load_manifest(path: Path) -> Source:
    """Read a JSON manifest ``{"name", "mirrors": [URL...], "files": [{"name", "hash"}...]}``
    (``hash`` as ``md5:HEX`` or ``sha256:HEX``): for private mirrors and for tests."""
    try:
        doc = json.loads(Path(path).read_text())
        files = tuple(RemoteFile(str(f["name"]), str(f["hash"]), str(f.get("raw_md5", ""))) for f in doc["files"])
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
    if name not in SOURCES:
        known = ", ".join(SOURCES)
        hint = " (it ships inside digitnet: nothing to download)" if name == "embedded" else ""
        raise DataError(f"cannot download {name!r}{hint}; downloadable: {known}")
    return SOURCES[name]


def local_status(name: str) -> dict:
    """Where a known data set is on this machine: ``present``, ``path``, ``size`` (bytes on
    disk), ``train``/``test`` counts (from the IDX headers, not the data), ``downloadable``."""
    from digitnet.datasets import KNOWN, find_idx_files, known_locations
    from digitnet.idx import read_idx_header

    status = {"name": name, "description": KNOWN[name].description, "classes": len(KNOWN[name].class_names),
              "present": False, "path": None, "size": 0, "train": None, "test": None, "downloadable": name in SOURCES}
    if name == "embedded":
        from importlib import resources

        import numpy as np

        with resources.as_file(resources.files("digitnet") / "resources" / "mnist-embedded.npz") as p:
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
