"""digitnet under attack and under faults, family by family (issue 13): hostile mirrors,
concurrency, signals in every phase, small inputs that would cost unbounded memory, outputs
other than models, models that pass validation but are not usable, mismatches, caches and
permissions.

Defects of the command line are reproduced through the real console script (subprocesses);
the HTTP servers listen on 127.0.0.1, start inside the test, and stop by themselves (every
response loop is bounded by bytes and by the server's lifetime).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from digitnet.download import RemoteFile, download_file
from digitnet.errors import DownloadError, ModelError, UsageError

ROOT = Path(__file__).resolve().parents[1]
DIGITNET = ROOT / ".venv" / "bin" / "digitnet"
LIFETIME = 60.0            # seconds: every server shuts itself down after this
STREAM_LIMIT = 64 << 20    # bytes: the most any response loop sends


def run(args, cwd=None, env=None, timeout=240, **kw):
    e = {**os.environ, "NO_COLOR": "1", "COLUMNS": "100", **(env or {})}
    e.pop("DIGITNET_MODEL", None)
    return subprocess.run([str(DIGITNET), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=e, **kw)


_MEASURE = """
import os, subprocess, sys
p = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(p.pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(args, tmp_path, timeout=240):
    """Run the console script; return (exit code, stdout, stderr, peak RSS in MB) measured by
    the kernel for that process alone (wait4). It is started from a small Python process, not
    from pytest's: Linux carries a forked child's peak over its exec, so a child of the (large)
    test process would report at least the test process's size."""
    out, err, rss = tmp_path / "measured.out", tmp_path / "measured.err", tmp_path / "measured.rss"
    with open(out, "w") as o, open(err, "w") as e:
        try:
            p = subprocess.run([sys.executable, "-c", _MEASURE, str(rss), str(DIGITNET), *map(str, args)],
                               stdout=o, stderr=e, env={**os.environ, "NO_COLOR": "1"}, timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"digitnet {' '.join(map(str, args))} did not finish in {timeout} s")
    return p.returncode, out.read_text(), err.read_text(), int(rss.read_text()) / 1024


def one_error_line(stderr: str) -> str:
    lines = [l for l in stderr.strip().splitlines() if l.startswith("digitnet: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# =============================================================================================
# Hostile mirrors
# =============================================================================================

class _Hostile(BaseHTTPRequestHandler):
    """Serves ``server.files`` by mode, the first path component: good, endless (no length,
    never ends), huge (Content-Length of 10 GB), drip (a byte every 0.2 s), slowhead (the
    status line a byte every 0.3 s), throttle (the file at ~150 kB/s)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _alive(self) -> bool:
        return not self.server.stopping.is_set()

    def _send(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
            return True
        except OSError:           # the client hung up: what a refusing downloader does
            return False

    def do_GET(self):
        srv = self.server
        mode, _, name = self.path.strip("/").partition("/")
        srv.requests.append(self.path)
        body = srv.files.get(name)
        if body is None:
            self.send_error(404)
            return
        if mode == "slowhead":
            for byte in b"HTTP/1.1 200 OK\r\n":
                if not self._alive() or not self._send(bytes([byte])):
                    return
                time.sleep(0.3)
            return
        self.send_response(200)
        if mode == "huge":
            self.send_header("Content-Length", str(10 ** 10))
        elif mode != "endless":
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        sent = 0
        if mode in ("endless", "huge"):
            block = bytes(1 << 16)
            while self._alive() and sent < STREAM_LIMIT and self._send(block):
                sent += len(block)
        elif mode == "drip":
            while self._alive() and sent < len(body) and self._send(body[sent:sent + 1]):
                sent += 1
                srv.dripped += 1
                time.sleep(0.2)
        elif mode == "throttle":
            while self._alive() and sent < len(body) and self._send(body[sent:sent + 16384]):
                sent += 16384
                time.sleep(0.1)
        else:
            self._send(body)
            sent = len(body)
        srv.sent += sent


@pytest.fixture
def mirror():
    """A hostile HTTP server on 127.0.0.1: yields (base URL, server); stops by itself after
    LIFETIME seconds, and when the test ends."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    srv.daemon_threads = True
    srv.files, srv.requests, srv.sent, srv.dripped, srv.stopping = {}, [], 0, 0, threading.Event()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def stop():
        srv.stopping.set()
        srv.shutdown()

    timer = threading.Timer(LIFETIME, stop)
    timer.daemon = True
    timer.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", srv
    finally:
        timer.cancel()
        srv.stopping.set()
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


BODY = np.random.default_rng(13).integers(0, 256, 50_000, dtype=np.uint8).tobytes()


def _entry(name="f.gz", body=BODY, size=True) -> RemoteFile:
    return RemoteFile(name, "sha256:" + hashlib.sha256(body).hexdigest(), size=len(body) if size else 0)


def _manifest(tmp_path, base, mode, body=BODY, name="f.gz", size=True) -> Path:
    path = tmp_path / "manifest.json"
    entry = {"name": name, "hash": "sha256:" + hashlib.sha256(body).hexdigest()}
    if size:
        entry["size"] = len(body)
    path.write_text(json.dumps({"name": "hostile", "mirrors": [f"{base}/{mode}/"], "files": [entry]}))
    return path


def test_an_endless_stream_stops_at_the_files_size_and_leaves_nothing(mirror, tmp_path):
    base, srv = mirror
    srv.files = {"f.gz": BODY}
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match=r"sent more than the 115,536 bytes this file can have"):
        download_file(_entry(), [base + "/endless/"], tmp_path)
    assert time.monotonic() - t0 < 10
    assert list(tmp_path.iterdir()) == []           # no .part, no lock, no final file


def test_a_huge_content_length_is_refused_before_a_byte_is_stored(mirror, tmp_path):
    base, srv = mirror
    srv.files = {"f.gz": BODY}
    with pytest.raises(DownloadError, match=r"announces 10,000,000,000 bytes, more than the 115,536"):
        download_file(_entry(), [base + "/huge/"], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_without_a_published_size_the_cap_still_holds(mirror, tmp_path, monkeypatch):
    import digitnet.download as dl

    base, srv = mirror
    srv.files = {"f.gz": BODY}
    monkeypatch.setattr(dl, "MAX_UNKNOWN_SIZE", 1 << 20)
    with pytest.raises(DownloadError, match=r"sent more than the 1,048,576 bytes"):
        download_file(_entry(size=False), [base + "/endless/"], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_dripping_mirror_is_given_up_below_the_minimum_rate(mirror, tmp_path):
    """One byte every 0.2 s never trips a socket timeout; the rate watch gives up on it
    after one window and the next mirror serves the file."""
    base, srv = mirror
    srv.files = {"f.gz": BODY}
    warnings = []

    class Log:
        def start(self, *a): pass
        def advance(self, *a): pass
        def finish(self, *a): pass
        def warn(self, message): warnings.append(message)

    t0 = time.monotonic()
    result = download_file(_entry(), [base + "/drip/", base + "/good/"], tmp_path, reporter=Log(),
                           min_rate=1000, rate_window=1.0)
    assert time.monotonic() - t0 < 10
    assert result.status == "downloaded" and (tmp_path / "f.gz").read_bytes() == BODY
    assert any("too slow" in w and "the minimum is 1.0 kB/s" in w for w in warnings), warnings


def test_a_mirror_dripping_its_headers_meets_the_deadline(mirror, tmp_path):
    base, srv = mirror
    srv.files = {"f.gz": BODY}
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match=r"not done after the 1.5 s deadline"):
        download_file(_entry(), [base + "/slowhead/", base + "/good/"], tmp_path, deadline=1.5)
    assert time.monotonic() - t0 < 6
    assert not any(p.startswith("/good/") for p in srv.requests)    # the deadline is for the file, every mirror


@pytest.mark.parametrize("mode, says", [
    ("drip", "not done after the 2 s deadline"),
    ("slowhead", "not done after the 2 s deadline"),
    ("endless", "sent more than the 115,536 bytes this file can have"),
    ("huge", "announces 10,000,000,000 bytes"),
])
def test_hostile_mirrors_through_the_console_script(mirror, tmp_path, mode, says):
    """As found: `data download` against a mirror that never ends, claims 10 GB, or drips.
    One line, exit 1, within seconds, the disk holding at most the file's size."""
    base, srv = mirror
    srv.files = {"f.gz": BODY}
    out = tmp_path / "dl"
    t0 = time.monotonic()
    r = run(["data", "download", "--manifest", _manifest(tmp_path, base, mode), "--dir", out, "--deadline", "2"],
            timeout=60)
    assert time.monotonic() - t0 < 20
    assert r.returncode == 1, r.stderr
    line = one_error_line(r.stderr)
    assert line.startswith("digitnet: error: f.gz: ") and says in line, line
    assert sum(p.stat().st_size for p in out.iterdir()) <= len(BODY)
    assert not (out / "f.gz").exists()


def test_a_known_data_set_is_capped_at_its_published_size(mirror, tmp_path):
    """``data download mnist --mirror`` an endless stream: stopped at MNIST's own file size."""
    base, srv = mirror
    srv.files = {"train-images-idx3-ubyte.gz": b"x"}
    r = run(["data", "download", "mnist", "--mirror", base + "/huge/", "--dir", tmp_path / "m"], timeout=60)
    line = one_error_line(r.stderr)
    assert r.returncode == 1 and "train-images-idx3-ubyte.gz" in line
    assert "announces 10,000,000,000 bytes, more than the 10,067,303 this file can have" in line, line


def test_sigterm_during_a_download_keeps_the_part_and_says_so(mirror, tmp_path):
    base, srv = mirror
    srv.files = {"f.gz": BODY}
    out = tmp_path / "dl"
    p = subprocess.Popen([str(DIGITNET), "data", "download", "--manifest", str(_manifest(tmp_path, base, "drip")),
                          "--dir", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "NO_COLOR": "1"})
    deadline = time.monotonic() + 30
    while srv.dripped < 5 and time.monotonic() < deadline:        # a few bytes are on their way
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 143, err
    line = one_error_line(err)
    assert "interrupted" in line and "run the same command again to resume" in line
    assert (out / "f.gz.part").stat().st_size >= 3 and not (out / "f.gz").exists()


# =============================================================================================
# Concurrency
# =============================================================================================

def test_two_downloads_into_one_folder_take_turns(mirror, tmp_path):
    """Both runs succeed, every file is the verified one, and no .part or lock is left.
    (Each file takes about two seconds to arrive, so the second run starts during the first.)"""
    base, srv = mirror
    files = {f"f{i}.gz": np.random.default_rng(i).integers(0, 256, 300_000, dtype=np.uint8).tobytes() for i in range(3)}
    srv.files = files
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"name": "pair", "mirrors": [base + "/throttle/"], "files": [
        {"name": n, "hash": "sha256:" + hashlib.sha256(b).hexdigest(), "size": len(b)} for n, b in files.items()]}))
    out = tmp_path / "dl"
    procs = [subprocess.Popen([str(DIGITNET), "data", "download", "--manifest", str(manifest), "--dir", str(out),
                               "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "NO_COLOR": "1"}) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr
    for name, body in files.items():
        assert (out / name).read_bytes() == body
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    statuses = sorted(f["status"] for stdout, _ in results for f in json.loads(stdout)["files"])
    assert statuses == ["downloaded"] * 3 + ["present"] * 3      # each file fetched once
    assert any("waiting for another download" in stderr for _, stderr in results)


def _digit_folder(root: Path, embedded, offset: int) -> Path:
    from PIL import Image

    for label in (0, 1):
        (root / str(label)).mkdir(parents=True)
        for k in range(2):
            i = int(np.flatnonzero(embedded.train_labels == label)[offset + k])
            Image.fromarray(255 - embedded.train_images[i]).save(root / str(label) / f"{k}.png")
    return root


def test_imports_at_once_all_reach_the_index(tmp_path, embedded, monkeypatch):
    """The index is read, changed and written under a lock: two imports whose updates
    overlap (the first is slow to write) both end up in it."""
    from digitnet import importer

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    real = importer.read_index

    def slow_read():
        entries = real()
        time.sleep(0.3)              # the window in which another import reads the same index
        return entries

    monkeypatch.setattr(importer, "read_index", slow_read)
    folders = [_digit_folder(tmp_path / f"set{i}", embedded, 2 * i) for i in range(2)]
    threads = [threading.Thread(target=importer.import_folder, args=(f, tmp_path / f"{f.name}.npz")) for f in folders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    monkeypatch.setattr(importer, "read_index", real)
    assert sorted(Path(e["path"]).name for e in importer.read_index()) == ["set0.npz", "set1.npz"]


def test_imports_at_once_through_the_console_script(tmp_path, embedded):
    folders = [_digit_folder(tmp_path / f"set{i}", embedded, 2 * i) for i in range(4)]
    env = {**os.environ, "NO_COLOR": "1", "XDG_DATA_HOME": str(tmp_path / "xdg")}
    procs = [subprocess.Popen([str(DIGITNET), "data", "import", str(f), "--out", str(tmp_path / f"{f.name}.npz")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for f in folders]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    index = json.loads((tmp_path / "xdg" / "digitnet" / "imported.json").read_text())
    assert sorted(Path(e["path"]).name for e in index) == [f"set{i}.npz" for i in range(4)]


def test_two_trainings_to_one_new_out_never_both_save_there(tmp_path):
    """Both pass the existence check before either saves; the second to finish must not
    replace the first one's model: it keeps its own beside, says so, exit 1. (On a machine so
    busy that one run finishes before the other starts, the other is refused at its start,
    exit 2: then the race is run again, at most three times.)"""
    from digitnet.modelfile import load_model

    for attempt in range(3):
        d = tmp_path / f"try{attempt}"
        d.mkdir()
        out = d / "m.npz"
        args = ["train", "--preset", "3b1b", "--epochs", "80", "--out", str(out), "--json"]
        procs = [subprocess.Popen([str(DIGITNET), *args, "--seed", str(seed)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"})
                 for seed in (1, 2)]
        results = [p.communicate(timeout=600) for p in procs]
        codes = sorted(p.returncode for p in procs)
        if codes != [0, 2]:
            break
    assert codes == [0, 1], [r[1][-500:] for r in results]
    loser = next(r for p, r in zip(procs, results) if p.returncode == 1)
    line = one_error_line(loser[1])
    assert f"{out} was created by someone else while this run trained and is kept" in line
    beside = d / "m.new.npz"
    assert f"saved as {beside}" in line and json.loads(loser[0])["out"] == str(beside)
    assert {load_model(out).config["seed"], load_model(beside).config["seed"]} == {1, 2}
    assert sorted(p.name for p in d.iterdir()) == ["m.new.npz", "m.npz"]


# =============================================================================================
# Signals in every phase
# =============================================================================================

@pytest.fixture(scope="module")
def long_test_split(tmp_path_factory):
    """40 training images and 12,000 test images: the final evaluation of a conv network
    takes seconds (2.4 s on a quiet machine), long enough to be interrupted."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("signals") / "long-test.npz"
    np.savez(path, train_images=rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), train_labels=rng.integers(0, 10, 40),
             test_images=rng.integers(0, 256, (12000, 28, 28), dtype=np.uint8), test_labels=rng.integers(0, 10, 12000))
    return path


def _signal_after(args, marker: str, sig: int, delay: float = 0.0, timeout: float = 240):
    """Start the console script, wait for ``marker`` on its stderr, sleep ``delay``, send
    ``sig``; return (exit code, stdout, stderr)."""
    p = subprocess.Popen([str(DIGITNET), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "NO_COLOR": "1"})
    seen, deadline = "", time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        seen += line
        if not line or marker in line:
            break
    time.sleep(delay)
    p.send_signal(sig)
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, seen + err


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_the_final_evaluation_still_saves(long_test_split, tmp_path, sig, code):
    out = tmp_path / "m.npz"
    rc, stdout, stderr = _signal_after(["train", "--data", long_test_split, "--layers", "conv16x5", "--epochs", "1",
                                        "--no-augment", "--out", out, "--json"], "epoch   1:", sig, delay=0.3)
    assert rc == code, stderr
    assert "Traceback" not in stderr and f"Interrupted: saved the best model so far to {out}" in stderr
    from digitnet.modelfile import load_model

    model = load_model(out)
    assert len(model.history) == 1 and json.loads(stdout)["stopped"] == "interrupted"


@pytest.fixture(scope="module")
def good_model(tmp_path_factory):
    """The video's network after 3 epochs on the embedded digits: about 90% right."""
    path = tmp_path_factory.mktemp("good") / "good.npz"
    r = run(["train", "--preset", "3b1b", "--epochs", "3", "--out", path, "--json"])
    assert r.returncode == 0, r.stderr
    return path


def test_an_interrupted_run_never_replaces_a_better_model(good_model, tmp_path):
    """Ctrl-C early in a --force run: the barely trained model (lr 1e-5) loses to the file it
    would replace, so that file stays byte for byte; the new model is kept beside it."""
    out = tmp_path / "m.npz"
    out.write_bytes(good_model.read_bytes())
    out.chmod(0o600)
    before = out.read_bytes()
    rc, stdout, stderr = _signal_after(["train", "--preset", "3b1b", "--epochs", "400", "--lr", "1e-5", "--force",
                                        "--out", out], "epoch   1:", signal.SIGINT)
    assert rc == 130, stderr
    assert out.read_bytes() == before
    beside = tmp_path / "m.interrupted.npz"
    assert f"did not beat {out}" in stderr and f"which is kept; saved it as {beside} instead" in stderr
    from digitnet.modelfile import load_model

    assert load_model(beside).config["lr"] == 1e-5


def test_an_interrupted_run_that_beats_the_file_replaces_it(tmp_path):
    out = tmp_path / "m.npz"
    r = run(["train", "--preset", "3b1b", "--epochs", "1", "--lr", "1e-4", "--out", out])   # a poor model
    assert r.returncode == 0, r.stderr
    rc, stdout, stderr = _signal_after(["train", "--preset", "3b1b", "--epochs", "400", "--force", "--out", out],
                                       "epoch   2:", signal.SIGINT)
    assert rc == 130, stderr
    assert f"Interrupted: saved the best model so far to {out}" in stderr
    from digitnet.modelfile import load_model

    assert load_model(out).config["lr"] == 3.0 and not (tmp_path / "m.interrupted.npz").exists()


def test_a_signal_before_training_writes_nothing(tmp_path, monkeypatch):
    """A signal while the data loads (here sent by the loader itself) ends the command with
    one line and exit 143 before any training, and nothing is written."""
    from typer.testing import CliRunner

    import digitnet.datasets as datasets
    from digitnet.cli import app

    real = datasets.load_dataset

    def load_and_get_terminated(spec):
        data = real(spec)
        os.kill(os.getpid(), signal.SIGTERM)
        return data

    monkeypatch.setattr(datasets, "load_dataset", load_and_get_terminated)
    out = tmp_path / "m.npz"
    r = CliRunner().invoke(app, ["train", "--preset", "3b1b", "--epochs", "1", "--out", str(out)])
    assert r.exit_code == 143
    assert r.stderr.strip() == "digitnet: error: interrupted before training started; nothing was written"
    assert not out.exists() and list(tmp_path.iterdir()) == []


# =============================================================================================
# Small inputs, unbounded memory
# =============================================================================================

def _add_zero_member(src: Path, dst: Path, mib: int, name: str = "junk") -> None:
    """Copy an .npz and add a member of ``mib`` MiB of zeros (deflated: a few hundred kB)."""
    dst.write_bytes(src.read_bytes())
    with zipfile.ZipFile(dst, "a", zipfile.ZIP_DEFLATED, allowZip64=True) as z:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (mib << 20,)})
        with z.open(f"{name}.npy", "w", force_zip64=True) as f:
            f.write(header.getvalue())
            block = bytes(1 << 20)
            for _ in range(mib):
                f.write(block)


@pytest.fixture(scope="module")
def junk_files(tmp_path_factory, good_model):
    """A model and a data set of a few hundred kB, each with an unused member that inflates
    to 768 MiB: what the old readers inflated whole before any check."""
    d = tmp_path_factory.mktemp("junk")
    rng = np.random.default_rng(0)
    data = d / "data.npz"
    np.savez(data, train_images=rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), train_labels=rng.integers(0, 10, 40),
             test_images=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), test_labels=rng.integers(0, 10, 10))
    _add_zero_member(good_model, d / "model-junk.npz", 768)
    _add_zero_member(data, d / "data-junk.npz", 768, "train_files")
    return d


def test_a_model_with_a_huge_unused_member_is_refused_in_bounded_memory(junk_files, tmp_path):
    model = junk_files / "model-junk.npz"
    assert model.stat().st_size < 4 << 20
    code, _, err, peak = run_measured(["evaluate", model], tmp_path)
    assert code == 1 and "arrays ['junk', 'layer2.W'" in one_error_line(err) and "do not match the layers" in err
    assert peak < 250, f"peak RSS {peak:.0f} MB"


def test_a_data_set_with_a_huge_unused_member_loads_in_bounded_memory(junk_files, tmp_path):
    code, out, err, peak = run_measured(["data", "show", junk_files / "data-junk.npz", "-n", "1"], tmp_path)
    assert code == 0, err
    assert "40 images of 28×28" in out
    assert peak < 250, f"peak RSS {peak:.0f} MB"


def test_npz_members_are_read_only_when_asked_and_checked_before_allocating(tmp_path):
    """The reader's contract, independently of the commands: a member nobody asks for is
    never inflated (its CRC is wrong: reading it would fail), and a header that claims more
    than the member holds (32 TiB in 16 bytes) is refused before anything is allocated."""
    from digitnet.errors import DataError
    from digitnet.npzfile import read_npz

    path = tmp_path / "a.npz"
    other = np.arange(10**6, 10**6 + 1000)
    np.savez(path, wanted=np.arange(5), other=other)
    raw = bytearray(path.read_bytes())
    i = raw.find(other.tobytes()[8:40])
    raw[i:i + 8] = bytes(8)                                     # damage "other" only
    path.write_bytes(bytes(raw))
    assert read_npz(path, DataError, "a test file", ["wanted"])["wanted"].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(DataError, match="damaged"):
        read_npz(path, DataError, "a test file", ["other"])
    with pytest.raises(DataError, match="wanted is 40 bytes, more than the 30 bytes"):
        read_npz(path, DataError, "a test file", ["wanted"], max_bytes=30)
    liar = tmp_path / "liar.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (1 << 45,)})
    with zipfile.ZipFile(liar, "w") as z:
        z.writestr("big.npy", header.getvalue() + bytes(16))
    with pytest.raises(DataError, match=r"big claims shape 35184372088832 of uint8, .* but holds 16"):
        read_npz(liar, DataError, "a test file", ["big"])


# =============================================================================================
# Outputs other than models
# =============================================================================================

def test_save_png_follows_trains_rule(tmp_path):
    from digitnet.analysis import save_png

    rgb = np.zeros((4, 4, 3), np.uint8)
    model = tmp_path / "model.npz"
    model.write_bytes(b"the model")
    png = tmp_path / "a.png"
    png.write_bytes(b"someone's picture")
    png.chmod(0o640)
    with pytest.raises(UsageError, match=r"a.png exists; pass --force"):
        save_png(rgb, png)
    assert png.read_bytes() == b"someone's picture"
    save_png(rgb, png, force=True)
    assert png.read_bytes().startswith(b"\x89PNG") and stat.S_IMODE(png.stat().st_mode) == 0o640
    for target in (model, tmp_path / "link.png"):
        if target.name == "link.png":
            target.symlink_to(model)
        with pytest.raises(UsageError, match="is the file being read"):
            save_png(rgb, target, force=True, inputs=[model])
    assert model.read_bytes() == b"the model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "link.png", "model.npz"]


def test_save_png_keeps_a_file_that_appears_while_drawing(tmp_path, monkeypatch):
    """The existence check is made again when the picture is published (create-exclusive)."""
    from PIL import Image

    from digitnet.analysis import save_png

    png = tmp_path / "a.png"
    real_save = Image.Image.save

    def save_and_race(self, fp, *a, **kw):
        png.write_bytes(b"written meanwhile")
        return real_save(self, fp, *a, **kw)

    monkeypatch.setattr(Image.Image, "save", save_and_race)
    with pytest.raises(UsageError, match="appeared while the image was drawn"):
        save_png(np.zeros((4, 4, 3), np.uint8), png)
    assert png.read_bytes() == b"written meanwhile" and [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_inspect_png_never_writes_over_the_model(good_model, tmp_path):
    model = tmp_path / "m.npz"
    model.write_bytes(good_model.read_bytes())
    before = model.read_bytes()
    for force in ([], ["--force"]):
        r = run(["inspect", "weights", model, "--png", model, *force])
        assert r.returncode == 2 and f"--png {model} is the file being read" in one_error_line(r.stderr)
    png = tmp_path / "w.png"
    png.write_bytes(b"a picture of mine")
    r = run(["inspect", "weights", model, "--png", png])
    assert r.returncode == 2 and f"{png} exists; pass --force" in one_error_line(r.stderr)
    assert model.read_bytes() == before and png.read_bytes() == b"a picture of mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz", "w.png"]


# =============================================================================================
# Models that pass validation but are not usable
# =============================================================================================

def _rewrite(src: Path, dst: Path, **arrays) -> Path:
    with np.load(src) as z:
        data = {k: z[k] for k in z.files}
    data.update(arrays)
    np.savez(dst, **data)
    return dst


def test_huge_finite_weights_are_refused_and_really_give_nan(tmp_path):
    """Independent check: with the loader's check skipped, the same weights do give NaN."""
    import digitnet.modelfile as mf
    from digitnet.nn.network import Network, dense_layers

    net = Network.init(dense_layers((784, 8, 10), "relu", "softmax"), (1, 28, 28), "cross-entropy", seed=0)
    net.views[3]["W"][...] = 3e38 * np.sign(net.views[3]["W"])        # finite float32, every one of them
    bad = mf.save_model(mf.Model(net, tuple("0123456789")), tmp_path / "bad.npz")
    with pytest.raises(ModelError, match=r"not a usable model: weights so large that layer 4 \(dense10\)"):
        mf.load_model(bad)
    real = mf.check_usable
    try:
        mf.check_usable = lambda net, path="": None
        unchecked = mf.load_model(bad)
    finally:
        mf.check_usable = real
    with np.errstate(all="ignore"):
        assert np.isnan(unchecked.scores(np.ones((1, 784), np.float32))).all()
    r = run(["evaluate", bad, "--data", "embedded", "--json"])
    assert r.returncode == 1 and r.stdout == "" and "not a usable model" in one_error_line(r.stderr)


@pytest.mark.parametrize("spec", ["dense16,dense8", "conv4x3p1,pool2,dense12:tanh", "patch7x16,block2,block2"])
def test_the_overflow_bound_never_lets_nan_through(spec):
    """Weights from tiny to enormous, all at once or one array at a time (a huge W_qkv alone
    overflows attention scores, not values): whenever check_usable accepts a network, its
    scores on the inputs that push hardest (all 0, all 1, random) are finite."""
    import digitnet.modelfile as mf
    from digitnet.nn.network import Network
    from digitnet.nn.spec import architecture, parse_layers

    rng = np.random.default_rng(0)
    x = np.stack([np.zeros(784), np.ones(784), rng.random(784)]).astype(np.float32)
    layers = architecture(parse_layers(spec, "relu"), (1, 28, 28), 10, "softmax")
    base = Network.init(layers, (1, 28, 28), "cross-entropy", seed=1)
    base.params += rng.normal(0, 0.1, base.n_params).astype(np.float32)      # biases and LayerNorm too
    arrays = [(i, name) for i, views in enumerate(base.views) for name in views]
    accepted = refused = 0
    for scale in (1e3, 1e6, 1e9, 1e12, 1e15, 1e18, 1e21, 1e24, 1e30, 1e36, 1e38):
        for which in [None, *arrays]:
            net = base.copy()
            if which is None:
                net.params *= np.float32(scale)
            else:
                net.views[which[0]][which[1]][...] *= np.float32(scale)
            try:
                mf.check_usable(net)
            except ModelError:
                refused += 1
                continue
            accepted += 1
            with np.errstate(all="ignore"):
                assert np.isfinite(net.scores(x)).all(), f"{spec}: {which or 'all'} ×{scale:g} passed the check, gives NaN"
    assert accepted >= 10 and refused >= 10


def test_shipped_and_freshly_trained_models_are_usable():
    from digitnet.modelfile import check_usable, load_model

    for path in sorted((ROOT / "models").glob("*.npz")):
        check_usable(load_model(path).network, path)       # loads (and so passes) with margin to spare


# =============================================================================================
# Mismatches
# =============================================================================================

def test_resume_with_other_data_trains_on_that_data(good_model, tmp_path):
    rng = np.random.default_rng(5)
    other = tmp_path / "other.npz"
    np.savez(other, train_images=rng.integers(0, 256, (60, 28, 28), dtype=np.uint8),
             train_labels=rng.integers(0, 10, 60), test_images=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
             test_labels=rng.integers(0, 10, 20))
    out = tmp_path / "more.npz"
    r = run(["train", "--resume", good_model, "--data", other, "--epochs", "1", "--out", out, "--json"])
    assert r.returncode == 0, r.stderr
    from digitnet.modelfile import load_model

    m = load_model(out)
    assert m.dataset["spec"] == str(other) and m.dataset["train"] == 60 and m.dataset["test"] == 20
    assert len(m.history) == 4 and json.loads(r.stdout)["data"] == str(other)


def test_a_model_refuses_data_of_other_classes():
    from digitnet.datasets import FASHION_NAMES, make_dataset
    from digitnet.modelfile import Model
    from digitnet.nn.network import Network, dense_layers

    net = Network.init(dense_layers((784, 4, 10), "relu", "softmax"), (1, 28, 28), "cross-entropy")
    fashion = Model(net, FASHION_NAMES, dataset={"spec": "fashion-mnist"})
    digits = make_dataset("digits", np.zeros((2, 28, 28), np.uint8), np.array([0, 1]), None, None)
    with pytest.raises(UsageError, match=r"digits: its classes \(0, 1, 2, …\) are not the model's "
                                         r"\(T-shirt/top, Trouser, Pullover, …, from fashion-mnist\)"):
        fashion.check_fits(digits)
    Model(net, digits.class_names).check_fits(digits)               # the same classes: fine


# =============================================================================================
# Caches and permissions
# =============================================================================================

def test_numba_cache_that_others_can_write_is_not_used(tmp_path):
    """numba unpickles its cache: a cache folder others can write is ignored (training goes
    on with a private one), whether it is world-writable or owned by another user."""
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, train_images=rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), train_labels=rng.integers(0, 10, 40))
    open_dir, foreign, mine = tmp_path / "open", tmp_path / "foreign", tmp_path / "mine"
    for d in (open_dir, foreign, mine):
        d.mkdir(mode=0o700)
    open_dir.chmod(0o777)
    os.chown(foreign, 4321, 4321) if os.geteuid() == 0 else foreign.chmod(0o757)
    for cache, used in ((open_dir, False), (foreign, False), (mine, True)):
        # the fallback is the user's own cache (already warm): only "mine" compiles afresh
        r = run(["train", "--data", data, "--hidden", "8", "--epochs", "1", "--no-augment", "--out",
                 tmp_path / f"{cache.name}.npz"], env={"NUMBA_CACHE_DIR": str(cache)})
        assert r.returncode == 0, r.stderr
        assert bool(list(cache.rglob("*.nbi"))) == used, cache


def test_a_model_honours_the_umask_and_keeps_the_mode_it_replaces(tmp_path):
    def train(out, *more, umask=0o077):
        return subprocess.run([str(DIGITNET), "train", "--preset", "3b1b", "--epochs", "1", "--out", str(out), *more],
                              capture_output=True, text=True, timeout=240, preexec_fn=lambda: os.umask(umask),
                              env={**os.environ, "NO_COLOR": "1"})

    private = tmp_path / "private.npz"
    assert train(private).returncode == 0
    assert stat.S_IMODE(private.stat().st_mode) == 0o600            # umask 077: nobody else reads it
    shared = tmp_path / "shared.npz"
    shared.write_bytes(b"")
    shared.chmod(0o664)
    assert train(shared, "--force").returncode == 0                 # replaced: its mode stays
    assert stat.S_IMODE(shared.stat().st_mode) == 0o664
    private.chmod(0o600)
    assert train(private, "--force", umask=0o022).returncode == 0
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_leftover_temporaries_of_dead_writers_are_cleaned_up_by_the_next_save(tmp_path):
    """A kill -9 during a save leaves ``.NAME.PID.RANDOM.tmp``; the next save of that name
    removes it. A temporary whose writer is alive is never touched: its process exists, or
    (a writer in another pid namespace) it still holds the file's lock."""
    import fcntl

    from digitnet.atomic import atomic_write

    target = tmp_path / "m.npz"
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".m.npz.{dead.pid}.0badf00d.tmp"
    stale.write_bytes(b"half a model")
    alive = tmp_path / f".m.npz.{os.getpid()}.0000beef.tmp"         # a live process, between two writes
    alive.write_bytes(b"being written")
    locked = tmp_path / f".m.npz.{dead.pid}.0000cafe.tmp"         # a pid we cannot see, but its lock is held
    locked.write_bytes(b"being written elsewhere")
    fd = os.open(locked, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with atomic_write(target) as f:
            f.write(b"new")
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.npz", alive.name, locked.name])
    assert target.read_bytes() == b"new"
