"""digitnet.download end to end against an HTTP server on 127.0.0.1 started by the test.

The server serves files from a dict, honours ``Range``, answers 404 for anything under
``/missing/``, can cut a connection mid-file (once per file), and can corrupt a file. It runs
in a daemon thread, is shut down by the fixture, and stops itself after a minute in any case.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from digitnet.download import (SOURCES, RemoteFile, Reporter, Source, download, download_file, load_manifest,
                               verify_local)
from digitnet.errors import DataError, DownloadError
from digitnet.idx import write_idx

LIFETIME = 60.0   # seconds: the server shuts itself down after this, whatever happens


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):   # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        name = self.path.rsplit("/", 1)[-1]
        if self.path.startswith("/missing/") or name not in srv.files:
            self.send_error(404, "Not Found")
            return
        body = srv.files[name]
        if self.path.startswith("/corrupt/"):
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and not self.path.startswith("/norange/"):
            start = int(rng[6:].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:]
        self.send_header("Content-Length", str(len(rest)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.path.startswith("/drop/") and name not in srv.dropped:
            srv.dropped.add(name)          # first time only: half the bytes, then hang up
            self.wfile.write(rest[: len(rest) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(rest)


@pytest.fixture
def server():
    """A local HTTP server; yields (base_url, server) and always shuts it down."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.files, srv.requests, srv.dropped = {}, [], set()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(LIFETIME, srv.shutdown)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", srv
    finally:
        watchdog.cancel()
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def _idx_set(rng, n_train=50, n_test=20) -> dict[str, bytes]:
    """A small, valid IDX data set as gzipped bytes, keyed by the standard file names."""
    out = {}
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train, dtype=np.uint8),
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test, dtype=np.uint8)}
    tmp = Path(__import__("tempfile").mkdtemp())
    for name, array in arrays.items():
        write_idx(tmp / name, array)
        out[name] = (tmp / name).read_bytes()
    return out


def _manifest(files: dict[str, bytes], mirrors, algo="sha256") -> Source:
    return Source("testset", tuple(mirrors),
                  tuple(RemoteFile(n, f"{algo}:" + hashlib.new(algo, b).hexdigest()) for n, b in files.items()))


class _Log(Reporter):
    def __init__(self):
        self.events = []

    def start(self, name, url, total, done):
        self.events.append(("start", name, url, total, done))

    def advance(self, name, nbytes):
        self.events.append(("advance", name, nbytes))

    def finish(self, name, status):
        self.events.append(("finish", name, status))

    def warn(self, message):
        self.events.append(("warn", message))


def test_good_files_download_verify_and_load(server, tmp_path):
    base, srv = server
    srv.files = _idx_set(np.random.default_rng(0))
    log = _Log()
    results = download(_manifest(srv.files, [base + "/good/"]), tmp_path / "set", reporter=log)
    assert [r.status for r in results] == ["downloaded"] * 4
    for name, body in srv.files.items():
        assert (tmp_path / "set" / name).read_bytes() == body
        assert not (tmp_path / "set" / (name + ".part")).exists()
    got = sum(e[2] for e in log.events if e[0] == "advance")
    assert got == sum(len(b) for b in srv.files.values())
    from digitnet.datasets import load_dataset

    ds = load_dataset(tmp_path / "set")
    assert ds.train_images.shape == (50, 28, 28) and ds.test_labels.shape == (20,)
    # a second run finds every file present and verified, and fetches nothing
    n = len(srv.requests)
    again = download(_manifest(srv.files, [base + "/good/"]), tmp_path / "set")
    assert [r.status for r in again] == ["present"] * 4 and len(srv.requests) == n


def test_corrupt_file_leaves_nothing_and_names_both_hashes(server, tmp_path):
    base, srv = server
    srv.files = {"t10k-labels-idx1-ubyte.gz": gzip.compress(bytes(range(200)))}
    entry = _manifest(srv.files, [], algo="md5").files[0]
    bad = hashlib.md5(bytes([srv.files[entry.name][0] ^ 0xFF]) + srv.files[entry.name][1:]).hexdigest()
    with pytest.raises(DownloadError) as e:
        download_file(entry, [base + "/corrupt/"], tmp_path)
    message = str(e.value)
    assert entry.name in message and entry.digest in message and bad in message
    assert list(tmp_path.iterdir()) == []


def test_dropped_connection_is_resumed_with_range(server, tmp_path):
    base, srv = server
    body = np.random.default_rng(1).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    srv.files = {"train-images-idx3-ubyte.gz": body}
    log = _Log()
    result = download_file(_manifest(srv.files, []).files[0], [base + "/drop/"], tmp_path, reporter=log)
    assert result.status == "downloaded" and (tmp_path / result.name).read_bytes() == body
    ranges = [r for _, r in srv.requests]
    assert ranges[0] is None and ranges[1] == f"bytes={len(body) // 2}-"
    assert any(e[0] == "warn" and "resuming" in e[1] for e in log.events)
    starts = [e for e in log.events if e[0] == "start"]
    assert starts[1][4] == len(body) // 2    # the second transfer began where the first stopped


def test_dropped_connection_without_retries_keeps_part_and_next_run_resumes(server, tmp_path):
    base, srv = server
    body = np.random.default_rng(2).integers(0, 256, 100_000, dtype=np.uint8).tobytes()
    srv.files = {"f.gz": body}
    entry = _manifest(srv.files, []).files[0]
    with pytest.raises(DownloadError, match="run again to resume"):
        download_file(entry, [base + "/drop/"], tmp_path, retries=0)
    part = tmp_path / "f.gz.part"
    assert part.stat().st_size == len(body) // 2 and not (tmp_path / "f.gz").exists()
    download_file(entry, [base + "/drop/"], tmp_path, retries=0)
    assert (tmp_path / "f.gz").read_bytes() == body and not part.exists()
    assert srv.requests[-1][1] == f"bytes={len(body) // 2}-"


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    base, srv = server
    body = bytes(range(256)) * 100
    srv.files = {"f.gz": body}
    (tmp_path / "f.gz.part").write_bytes(body[:1000])
    download_file(_manifest(srv.files, []).files[0], [base + "/norange/"], tmp_path)
    assert (tmp_path / "f.gz").read_bytes() == body


def test_stale_part_from_another_version_is_refetched_whole(server, tmp_path):
    base, srv = server
    body = bytes(range(256)) * 100
    srv.files = {"f.gz": body}
    (tmp_path / "f.gz.part").write_bytes(b"\0" * 1000)   # not a prefix of the real file
    log = _Log()
    download_file(_manifest(srv.files, []).files[0], [base + "/good/"], tmp_path, reporter=log)
    assert (tmp_path / "f.gz").read_bytes() == body
    assert any(e[0] == "warn" and "again from the start" in e[1] for e in log.events)


def test_404_on_first_mirror_falls_back_to_second(server, tmp_path):
    base, srv = server
    srv.files = _idx_set(np.random.default_rng(3), 10, 5)
    log = _Log()
    results = download(_manifest(srv.files, [base + "/missing/", base + "/good/"]), tmp_path, reporter=log)
    assert all(r.url.startswith(base + "/good/") for r in results)
    assert sum(1 for p, _ in srv.requests if p.startswith("/missing/")) == 4
    assert any(e[0] == "warn" and "404" in e[1] and "next mirror" in e[1] for e in log.events)


def test_every_mirror_failing_reports_each(server, tmp_path):
    base, srv = server
    srv.files = {"f.gz": b"abc"}
    entry = _manifest(srv.files, []).files[0]
    with pytest.raises(DownloadError) as e:
        download_file(entry, [base + "/missing/", base + "/corrupt/"], tmp_path)
    assert "every mirror" in str(e.value) and "404" in str(e.value) and "checksum mismatch" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_existing_good_file_is_kept_and_bad_one_replaced_only_when_verified(server, tmp_path):
    base, srv = server
    srv.files = {"f.gz": b"the real bytes"}
    entry = _manifest(srv.files, []).files[0]
    (tmp_path / "f.gz").write_bytes(b"old wrong bytes")
    with pytest.raises(DownloadError):
        download_file(entry, [base + "/corrupt/"], tmp_path)
    assert (tmp_path / "f.gz").read_bytes() == b"old wrong bytes"   # untouched on failure
    assert download_file(entry, [base + "/good/"], tmp_path).status == "downloaded"
    assert (tmp_path / "f.gz").read_bytes() == b"the real bytes"


def test_manifest_file_round_trip_and_bad_manifests(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"name": "mine", "mirrors": ["http://x/"], "files": [{"name": "a.gz", "hash": "md5:" + "0" * 32}]}))
    source = load_manifest(path)
    assert source.name == "mine" and source.files[0].algorithm == "md5"
    path.write_text(json.dumps({"files": [{"name": "../evil", "hash": "md5:00"}]}))
    with pytest.raises(DataError, match="bad entry"):
        load_manifest(path)
    path.write_text("{not json")
    with pytest.raises(DataError, match="not a download manifest"):
        load_manifest(path)


def test_known_sources_are_complete():
    from digitnet.datasets import IDX_FILES, KNOWN

    for name, source in SOURCES.items():
        assert name in KNOWN
        assert {f.name for f in source.files} == {stem + ".gz" for stem in IDX_FILES.values()}
        assert all(f.algorithm == "md5" and len(f.digest) == 32 for f in source.files)
        assert len(source.mirrors) >= 2


def test_fashion_copies_on_this_machine_match_the_published_content_hashes(fashion_mnist):
    """The local .gz files were re-compressed, so their bytes differ from the published .gz
    md5; their decompressed content must match the published raw md5."""
    for entry in SOURCES["fashion-mnist"].files:
        assert verify_local(fashion_mnist / entry.name, entry) in ("file", "content"), entry.name


def test_cli_download_with_manifest_and_bar_free_output(server, tmp_path):
    from digitnet.cli import app

    base, srv = server
    srv.files = _idx_set(np.random.default_rng(4), 10, 5)
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"name": "testset", "mirrors": [base + "/missing/", base + "/drop/"],
                                    "files": [{"name": n, "hash": "sha256:" + hashlib.sha256(b).hexdigest()}
                                              for n, b in srv.files.items()]}))
    out = tmp_path / "dl"
    result = CliRunner().invoke(app, ["data", "download", "--manifest", str(manifest), "--dir", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(srv.files)
    assert "--data " + str(out) in result.output


def test_cli_download_checksum_failure_is_one_line_exit_1(server, tmp_path):
    base, srv = server
    srv.files = {"x.gz": b"payload"}
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"mirrors": [base + "/corrupt/"], "files": [{"name": "x.gz", "hash": "md5:" + hashlib.md5(b"payload").hexdigest()}]}))
    exe = Path(sys.executable).parent / "digitnet"
    proc = subprocess.run([str(exe), "data", "download", "--manifest", str(manifest), "--dir", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("digitnet: error: x.gz") and "checksum mismatch" in lines[-1]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "d" / "x.gz").exists() and not (tmp_path / "d" / "x.gz.part").exists()


def test_a_shipped_set_is_here_and_cannot_be_downloaded():
    from digitnet import download
    from digitnet.datasets import SHIPPED
    from digitnet.errors import DataError

    assert set(SHIPPED) == {"embedded", "fonts"}
    for name in SHIPPED:
        status = download.local_status(name)
        assert status["present"] and Path(status["path"]).is_file() and status["train"] and status["test"], status
        with pytest.raises(DataError, match="ships inside digitnet"):
            download.source_for(name)
