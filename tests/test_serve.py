"""``digitnet draw``'s server and JSON API: answers that agree with predict and with the math
done here by hand (a transformer's attention too), one forward pass per stroke, the page's
files, the limits and the errors (a burst of malformed requests leaves the server answering),
and the command itself in a subprocess: up in under a second, never importing numba, Ctrl-C
→ 130, SIGTERM → 143 wherever it lands, a port in use, --host's warning."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digitnet.modelfile import Model, load_model, save_model
from digitnet.nn.layers import Activation, Conv, Dense, Flatten, MaxPool
from digitnet.nn.network import Network
from digitnet.serve import server as srv
from digitnet.serve.server import MAX_BODY, exposure_warning, running

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_3B1B = ROOT / "models" / "mnist-3b1b.npz"
DIGITNET = Path(sys.executable).with_name("digitnet")


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers

@pytest.fixture(scope="module")
def conv_path(tmp_path_factory) -> Path:
    """A small conv net (random weights: these tests check the plumbing, not accuracy)."""
    layers = [Conv(4, 5), Activation("relu"), MaxPool(2), Flatten(), Dense(10), Activation("softmax")]
    net = Network.init(layers, (1, 28, 28), seed=3)
    path = tmp_path_factory.mktemp("conv") / "tiny-conv.npz"
    save_model(Model(net, tuple("0123456789"), meta={"preset": "test"}), path)
    return path


@pytest.fixture(scope="module")
def vit_path(tmp_path_factory) -> Path:
    """A tiny transformer (4×4 patches of 7×7 pixels, two blocks of 2 and 4 heads), random
    weights jittered so that the attention is not uniform."""
    from digitnet.nn.spec import architecture, parse_layers

    net = Network.init(architecture(parse_layers("patch7x16,block2,block4"), (1, 28, 28), 10, "softmax"), (1, 28, 28), seed=4)
    net.params += np.random.default_rng(0).normal(0, 0.3, net.params.shape).astype(np.float32)
    path = tmp_path_factory.mktemp("vit") / "tiny-vit.npz"
    save_model(Model(net, tuple("0123456789"), meta={"preset": "test"}), path)
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A working directory whose models/ holds a copy of the 3b1b model and a broken file."""
    cwd = tmp_path_factory.mktemp("cwd")
    (cwd / "models").mkdir()
    shutil.copy(SHIPPED_3B1B, cwd / "models" / "mine.npz")
    (cwd / "models" / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    return cwd


@pytest.fixture(scope="module")
def server(conv_path, vit_path, workdir):
    with running([SHIPPED_3B1B, conv_path, vit_path], cwd=workdir) as s:
        yield s


def call(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, headers, JSON or text) of one request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        ctype = r.getheader("Content-Type", "")
        return r.status, dict(r.getheaders()), json.loads(data) if ctype.startswith("application/json") else data
    finally:
        conn.close()


def raw(server, data: bytes, shut: bool = False) -> bytes:
    """Send raw bytes and read whatever comes back until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def drawn_seven(size: int = 280, dark_on_light: bool = False) -> Image.Image:
    ink, paper = (0, 255) if dark_on_light else (255, 0)
    im = Image.new("L", (size, size), paper)
    s = size / 280
    ImageDraw.Draw(im).line([(70 * s, 60 * s), (210 * s, 60 * s), (120 * s, 230 * s)], fill=ink,
                            width=int(18 * s), joint="curve")
    return im


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# ---------------------------------------------------------------------------------------------
# Answers

def test_image_answers_agree_with_predict(server, tmp_path, embedded):
    """An uploaded image goes through predict's own loader and the model's preprocessing:
    the same 28×28, the same scores as ``digitnet predict`` gives for the same file."""
    from digitnet.predict import predict_inputs

    model = load_model(SHIPPED_3B1B)
    images = [drawn_seven(), drawn_seven(500, dark_on_light=True).convert("RGB")]
    for k in range(3):    # real MNIST digits, enlarged, dark ink on light paper
        images.append(Image.fromarray(255 - embedded.test_images[k]).resize((140, 140), Image.Resampling.BICUBIC))
    for i, im in enumerate(images):
        fmt = "JPEG" if i == 1 else "PNG"
        data = png_bytes(im, fmt)
        path = tmp_path / f"d{i}.{fmt.lower()}"
        path.write_bytes(data)
        row = next(predict_inputs(model, [str(path)], keep_probs=True, keep_images=True))
        status, _, got = call(server, "POST", "/api/predict?model=mnist-3b1b", data, {"Content-Type": f"image/{fmt.lower()}"})
        assert status == 200, got
        assert got["label"] == row.label and got["name"] == row.name
        np.testing.assert_allclose(got["scores"], row.probs, atol=1e-4)
        np.testing.assert_allclose(got["input"], row.image.reshape(-1), atol=1e-4)
        assert got["confidence"] == pytest.approx(row.confidence, abs=1e-5)
    assert call(server, "POST", "/api/predict?model=mnist-3b1b", png_bytes(drawn_seven()),
                {"Content-Type": "image/png"})[2]["label"] == 7


def test_pixel_answers_and_activations_match_the_math_done_by_hand(server, embedded):
    """784 numbers go in as they are; each column's activations are σ(W a + b) computed here
    independently, and the scores are the sigmoid outputs divided by their sum."""
    model = load_model(SHIPPED_3B1B)
    x = embedded.test_images[0].astype(np.float64) / 255
    status, _, got = call(server, "POST", "/api/predict", json.dumps({"model": "mnist-3b1b", "pixels": x.tolist()}).encode(),
                          {"Content-Type": "application/json"})
    assert status == 200, got
    dense = [v for v in model.network.views if v]
    a, columns = x.reshape(-1), [x.reshape(-1)]
    for p in dense:
        a = sigmoid(p["W"].astype(np.float64) @ a + p["b"])
        columns.append(a)
    assert [c["shape"] for c in got["activations"]] == [[28, 28], [16], [16], [10]]
    for col, want in zip(got["activations"], columns):
        np.testing.assert_allclose(col["values"], want, atol=1e-4)
    np.testing.assert_allclose(got["scores"], a / a.sum(), atol=1e-4)
    assert got["label"] == int(np.argmax(a)) == embedded.test_labels[0]
    # the same image as 28 rows of 28, and without activations
    status, _, lean = call(server, "POST", "/api/predict?activations=0",
                           json.dumps({"model": "mnist-3b1b", "pixels": x.reshape(28, 28).tolist()}).encode(),
                           {"Content-Type": "application/json"})
    assert status == 200 and "activations" not in lean and lean["scores"] == got["scores"]


def test_links_are_the_strongest_contributions(server, embedded):
    """Between two columns the page draws the connections with the largest |W[i, j]·a_j|."""
    model = load_model(SHIPPED_3B1B)
    x = embedded.test_images[1].astype(np.float64).reshape(-1) / 255
    _, _, got = call(server, "POST", "/api/predict", json.dumps({"model": "mnist-3b1b", "pixels": x.tolist()}).encode(),
                     {"Content-Type": "application/json"})
    W1 = next(v for v in model.network.views if v)["W"].astype(np.float64)
    first = next(g for g in got["links"] if g["from"] == 0)
    assert first["to"] == 1
    contributions = [(abs(W1[i, j] * x[j]), j, i) for i in range(W1.shape[0]) for j in range(W1.shape[1])]
    contributions.sort(reverse=True)
    want = {(j, i) for _, j, i in contributions[:len(first["links"])]}
    assert {(s, d) for s, d, _ in first["links"]} == want
    for s, d, c in first["links"][:20]:
        assert c == pytest.approx(W1[d, s] * x[s], abs=1e-3)
    assert [(g["from"], g["to"]) for g in got["links"]] == [(0, 1), (1, 2), (2, 3)]


def test_largest_is_exact():
    """The sampled threshold never changes the answer: the k largest, as a full sort finds them."""
    from digitnet.serve.views import largest

    rng = np.random.default_rng(0)
    for n, k, zeros in [(401_408, 160, 0.0), (401_408, 160, 0.8), (401_408, 160, 0.9999), (784, 160, 0.5),
                        (50_000, 7, 0.3), (10, 3, 0.0)]:
        values = np.abs(rng.standard_normal(n)).astype(np.float32)
        values[rng.random(n) < zeros] = 0
        k = min(k, int(np.count_nonzero(values)))
        got = largest(values, k)
        want = np.argsort(-values, kind="stable")[:k]
        assert len(got) == k and np.array_equal(values[got], values[want]), (n, k, zeros)
        assert len(set(got.tolist())) == k
    for stride in range(36, 43):     # large values only where a strided sample looks: its threshold keeps too few
        values = rng.random(401_408).astype(np.float32)
        values[::stride] += 10
        got = largest(values, 160)
        assert np.array_equal(values[got], np.sort(values)[::-1][:160]), stride


def test_weights_of_a_first_layer_neuron_are_its_28x28_image(server):
    model = load_model(SHIPPED_3B1B)
    W1 = next(v for v in model.network.views if v)["W"]
    status, _, got = call(server, "GET", "/api/models/mnist-3b1b/weights?layer=1&unit=5")
    assert status == 200 and got["shape"] == [28, 28] and got["over"] == "pixels"
    np.testing.assert_allclose(got["values"], W1[5], atol=1e-5)
    status, _, got = call(server, "GET", "/api/models/mnist-3b1b/weights?layer=3&unit=7")
    W3 = [v for v in model.network.views if v][2]["W"]
    assert status == 200 and got["shape"] == [16]
    np.testing.assert_allclose(got["values"], W3[7], atol=1e-5)


def test_conv_models_show_feature_maps(server, conv_path, embedded):
    """A conv net's columns are its feature maps; each map is the filter slid over the image
    (computed here with explicit loops), and hovering a map gives its filter."""
    model = load_model(conv_path)
    conv = model.network.views[0]
    status, _, desc = call(server, "GET", "/api/models/tiny-conv")
    assert status == 200 and desc["kind"] == "conv"
    assert [(c["kind"], c["shape"]) for c in desc["layers"]] == [
        ("image", [28, 28]), ("maps", [4, 24, 24]), ("maps", [4, 12, 12]), ("neurons", [10])]
    x = embedded.test_images[2].astype(np.float64) / 255
    _, _, got = call(server, "POST", "/api/predict", json.dumps({"model": "tiny-conv", "pixels": x.tolist()}).encode(),
                     {"Content-Type": "application/json"})
    maps = np.zeros((4, 24, 24))
    for f in range(4):
        for r in range(24):
            for c in range(24):
                maps[f, r, c] = (conv["W"][f, 0] * x[r:r + 5, c:c + 5]).sum() + conv["b"][f]
    maps = np.maximum(maps, 0)
    pooled = maps.reshape(4, 12, 2, 12, 2).max(axis=(2, 4))
    np.testing.assert_allclose(got["activations"][1]["values"], maps.reshape(-1), atol=2e-4)
    np.testing.assert_allclose(got["activations"][2]["values"], pooled.reshape(-1), atol=2e-4)
    assert [(g["from"], g["to"]) for g in got["links"]] == [(2, 3)]      # the dense layer reads the pooled maps
    status, _, w = call(server, "GET", "/api/models/tiny-conv/weights?layer=1&unit=2")
    assert status == 200 and w["shape"] == [1, 5, 5] and w["over"] == "filter"
    np.testing.assert_allclose(w["values"], conv["W"][2].reshape(-1), atol=1e-5)
    status, _, w = call(server, "GET", "/api/models/tiny-conv/weights?layer=2&unit=0")
    assert status == 400 and "no weights" in w["error"]


def test_attention_models_show_where_the_class_token_looks(server, vit_path, embedded):
    """For a transformer the answer carries the class token's attention over the patch grid,
    per block (mean over heads, and each head), and its rollout. Block 1's is computed here by
    hand from the patch embedding's tokens (LayerNorm, the query and key projections, a
    softmax per head); every block's and the rollout agree with ``inspect attention``'s view.
    Other models carry none."""
    from digitnet.attention_analysis import attention_view

    net = load_model(vit_path).network
    x = embedded.test_images[3].astype(np.float64) / 255
    status, _, desc = call(server, "GET", "/api/models/tiny-vit")
    assert status == 200 and desc["kind"] == "attention"
    status, _, got = call(server, "POST", "/api/predict", json.dumps({"model": "tiny-vit", "pixels": x.tolist()}).encode(),
                          {"Content-Type": "application/json"})
    assert status == 200, got
    att = got["attention"]
    assert att["patch"] == 7 and att["grid"] == [4, 4] and [b["heads"] for b in att["blocks"]] == [2, 4]

    tokens = net.feedforward(x.reshape(1, -1).astype(np.float32))[1][0].astype(np.float64)     # (17, 16): class token first
    p = net.views[1]
    xn = (tokens - tokens.mean(-1, keepdims=True)) / np.sqrt(tokens.var(-1, keepdims=True) + 1e-5) * p["ln1_gamma"] + p["ln1_beta"]
    qkv = xn @ p["W_qkv"].T.astype(np.float64) + p["b_qkv"]                                    # (17, 48): q, k, v
    heads, d = 2, 8
    rows = []
    for h in range(heads):
        q0 = qkv[0, h * d:(h + 1) * d]                                                          # the class token's query
        k = qkv[:, 16 + h * d:16 + (h + 1) * d]                                                 # every token's key
        s = k @ q0 / np.sqrt(d)
        rows.append(np.exp(s - s.max()) / np.exp(s - s.max()).sum())
    rows = np.array(rows)
    np.testing.assert_allclose(att["blocks"][0]["per_head"], rows[:, 1:], atol=1e-4)
    np.testing.assert_allclose(att["blocks"][0]["mean"], rows.mean(0)[1:], atol=1e-4)
    assert att["blocks"][0]["self"] == pytest.approx(rows.mean(0)[0], abs=1e-4)
    assert np.ptp(att["blocks"][0]["mean"]) > 0.01                 # not uniform: the test can tell patches apart

    view = attention_view(net, x.astype(np.float32))
    for b, block in enumerate(att["blocks"], start=1):
        np.testing.assert_allclose(np.reshape(block["mean"], (4, 4)), view.class_token(b), atol=1e-5)
    np.testing.assert_allclose(np.reshape(att["rollout"], (4, 4)), view.class_token(), atol=1e-5)
    assert np.argmax(got["scores"]) == np.argmax(view.scores)

    lean = call(server, "POST", "/api/predict?activations=0", json.dumps({"model": "tiny-vit", "pixels": x.tolist()}).encode(),
                {"Content-Type": "application/json"})[2]
    assert "attention" not in lean and lean["scores"] == got["scores"]
    other = call(server, "POST", "/api/predict", json.dumps({"model": "tiny-conv", "pixels": x.tolist()}).encode(),
                 {"Content-Type": "application/json"})[2]
    assert "activations" in other and "attention" not in other


def test_models_are_listed_by_id_without_paths(server, conv_path, workdir):
    status, _, got = call(server, "GET", "/api/models")
    assert status == 200
    models = {m["id"]: m for m in got["models"]}
    ids = list(models)
    assert ids[:2] == ["mnist-3b1b", "tiny-conv"] and got["default"] == "mnist-3b1b"
    assert models["mnist-3b1b"]["source"] == "command line" and models["mnist-3b1b"]["default"] is True
    assert models["digitnet"]["source"] == "default"                  # the shipped default model
    assert models["mine"]["source"] == "models/" and models["broken"]["source"] == "models/"
    assert ids.count("mnist-3b1b") == 1 and "mnist-3b1b-2" not in ids  # the shipped copy is the same file: once
    assert len(ids) == len(set(ids))
    text = json.dumps(got)
    for folder in (str(ROOT), str(conv_path.parent), str(workdir)):
        assert folder not in text                                      # file names only, never paths
    assert models["mnist-3b1b"]["architecture"].startswith("784-16-16-10")
    # a file that is not a model is listed with its reason, and refused when chosen
    call(server, "GET", "/api/models/broken")
    status, _, got = call(server, "GET", "/api/models/broken")
    assert status == 422 and "broken" in got["error"]
    assert call(server, "GET", "/api/models")[2]["models"][ids.index("broken")]["error"]


def test_noise_and_dream(server):
    from digitnet.analysis import noise_experiment

    status, _, got = call(server, "POST", "/api/noise", json.dumps({"model": "mnist-3b1b", "seed": 5}).encode(),
                          {"Content-Type": "application/json"})
    assert status == 200, got
    report = noise_experiment(load_model(SHIPPED_3B1B), samples=got["noise"]["samples"], seed=5, keep=1)
    np.testing.assert_allclose(got["input"], report.images[0].reshape(-1), atol=1e-4)
    assert got["noise"]["class_counts"] == report.class_counts.tolist()
    assert got["label"] == report.predicted[0] and got["confidence"] == pytest.approx(report.confidence[0], abs=1e-5)

    t = time.perf_counter()
    status, _, d1 = call(server, "POST", "/api/dream?model=mnist-3b1b&digit=3")
    first = time.perf_counter() - t
    assert status == 200, d1
    assert d1["dream"]["digit"] == 3 and d1["label"] == 3 and d1["dream"]["probability"] > 0.9
    assert d1["dream"]["start_probability"] < d1["dream"]["probability"]
    t = time.perf_counter()
    d2 = call(server, "POST", "/api/dream", json.dumps({"model": "mnist-3b1b", "digit": 3}).encode(),
              {"Content-Type": "application/json"})[2]
    assert d2["input"] == d1["input"] and time.perf_counter() - t < first     # kept, not climbed again


# ---------------------------------------------------------------------------------------------
# The page

def test_the_page_is_self_contained(server):
    status, headers, html = call(server, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
    html = html.decode()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "/static/draw.js" in refs and "/static/draw.css" in refs
    types = {".js": "text/javascript", ".css": "text/css"}
    for ref in refs:
        assert ref.startswith("/") or ref.startswith("data:"), ref
        if ref.startswith("/static/"):
            status, headers, body = call(server, "GET", ref)
            assert status == 200 and headers["Content-Type"].startswith(types[Path(ref).suffix]) and body
            assert not re.search(rb"https?://|//cdn|@import", body), ref       # nothing from elsewhere
    assert not re.search(r"https?://", html) and "<script>" not in html and " on" + "click=" not in html


def test_static_files_travel_in_the_wheel(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(ROOT)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-500:]
    wheel = next(tmp_path.glob("digitnet-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"digitnet/serve/static/{n}" for n in ("index.html", "draw.css", "draw.js")} <= names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = "from digitnet.serve.server import static_files; print(sorted(static_files()))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(site)})
    assert r.returncode == 0 and "index.html" in r.stdout, r.stderr


# ---------------------------------------------------------------------------------------------
# Limits and errors

def test_a_burst_of_malformed_requests_gets_json_4xx_and_the_server_stays_up(server):
    png = png_bytes(drawn_seven())
    huge = png_bytes(Image.new("1", (5_000, 5_000)))            # a few kB declaring 25 megapixels
    json_type = {"Content-Type": "application/json"}
    cases = [
        ("POST", "/api/predict", b"not an image", {"Content-Type": "image/png"}, 422),
        ("POST", "/api/predict", png[: len(png) // 2], {"Content-Type": "image/png"}, 422),
        ("POST", "/api/predict", huge, {"Content-Type": "image/png"}, 413),
        ("POST", "/api/predict", png_bytes(Image.new("L", (280, 280))), {"Content-Type": "image/png"}, 422),
        ("POST", "/api/predict", b"", {"Content-Type": "image/png"}, 400),
        ("POST", "/api/predict", png, {"Content-Type": "text/plain"}, 415),
        ("POST", "/api/predict", png, {}, 415),
        ("POST", "/api/predict", b"{not json", json_type, 400),
        ("POST", "/api/predict", b"[1, 2, 3]", json_type, 400),
        ("POST", "/api/predict", b"[" * 100_000 + b"]" * 100_000, json_type, 400),
        ("POST", "/api/predict", b'{"pixels": [1, 2]}', json_type, 400),
        ("POST", "/api/predict", json.dumps({"pixels": [255] * 784}).encode(), json_type, 400),
        ("POST", "/api/predict", json.dumps({"pixels": ["a"] * 784}).encode(), json_type, 400),
        ("POST", "/api/predict", ('{"pixels": [NaN' + ", 0" * 783 + "]}").encode(), json_type, 400),
        ("POST", "/api/predict", json.dumps({"pixels": [[0] * 27] * 29}).encode(), json_type, 400),
        ("POST", "/api/predict", json.dumps({"model": "nope", "pixels": [0] * 784}).encode(), json_type, 404),
        ("POST", "/api/predict", json.dumps({"model": "../../../etc/passwd", "pixels": [0] * 784}).encode(), json_type, 404),
        ("POST", "/api/predict", json.dumps({"model": ["mnist-3b1b"], "pixels": [0] * 784}).encode(), json_type, 400),
        ("POST", "/api/predict?model=%2Fetc%2Fpasswd", png, {"Content-Type": "image/png"}, 404),
        ("POST", "/api/predict?activations=maybe", png, {"Content-Type": "image/png"}, 400),
        ("GET", "/api/predict", None, {}, 405),
        ("DELETE", "/api/models", None, {}, 405),
        ("POST", "/", b"x", {"Content-Type": "text/plain"}, 405),
        ("GET", "/api/nothing", None, {}, 404),
        ("GET", "/nothing", None, {}, 404),
        ("GET", "/static/../../pyproject.toml", None, {}, 404),
        ("GET", "/api/models/mnist-3b1b/weights?layer=abc&unit=0", None, {}, 400),
        ("GET", "/api/models/mnist-3b1b/weights?layer=99&unit=0", None, {}, 400),
        ("GET", "/api/models/mnist-3b1b/weights?layer=1&unit=-1", None, {}, 400),
        ("GET", "/api/models/mnist-3b1b/weights?layer=0&unit=0", None, {}, 400),
        ("GET", "/api/models/mnist-3b1b/nothing", None, {}, 404),
        ("POST", "/api/dream", b'{"digit": 10}', json_type, 400),
        ("POST", "/api/dream", b'{"digit": "three"}', json_type, 400),
        ("POST", "/api/dream", b'{"digit": true}', json_type, 400),
        ("POST", "/api/noise", b'{"seed": -1}', json_type, 400),
        ("POST", "/api/noise", b"seed=1", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ("GET", "/api/models", None, {"Host": "evil.example:8784"}, 403),
        ("POST", "/api/predict", b"x" * 100, {"Content-Type": "image/png", "Content-Length": "abc"}, 400),
        ("POST", "/api/predict", b"", {"Content-Type": "image/png", "Content-Length": str(MAX_BODY + 1)}, 413),
        ("POST", "/api/predict", b"", {"Content-Type": "image/png", "Content-Length": "-5"}, 400),
        ("POST", "/api/predict", b"", {"Content-Type": "image/png", "Transfer-Encoding": "chunked"}, 411),
    ]
    for method, path, body, headers, want in cases:
        status, got_headers, got = call(server, method, path, body, headers)
        assert status == want, (method, path, headers, status, got)
        assert got_headers["Content-Type"].startswith("application/json") and got["error"], (path, got)
    # below http.client: a garbage request line, headers too long, a body cut short
    for data, shut, want in [(b"HELLO\r\n\r\n", False, b" 400 "),
                             (b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", False, b" 431 "),
                             (b"GET /\x00\xff HTTP/1.1\r\nConnection: close\r\n\r\n", False, b"HTTP/1.1 404 "),
                             (b"POST /api/predict HTTP/1.1\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\nabc", True, b" 400 ")]:
        reply = raw(server, data, shut)
        assert want in reply.split(b"\r\n")[0] + b" " and b'"error"' in reply, (data[:40], reply[:200])
    # and it still answers
    status, _, got = call(server, "POST", "/api/predict?model=mnist-3b1b", png, {"Content-Type": "image/png"})
    assert status == 200 and got["label"] == 7


def test_the_body_limit_is_exact(server):
    """MAX_BODY bytes are read (and refused as an image); one byte more is refused unread."""
    status, _, got = call(server, "POST", "/api/predict", b"\0" * MAX_BODY, {"Content-Type": "image/png"})
    assert status == 422, got
    status, _, got = call(server, "POST", "/api/predict", b"\0" * (MAX_BODY + 1), {"Content-Type": "image/png"})
    assert status == 413 and "at most" in got["error"]


def test_keep_alive_serves_many_requests_on_one_connection(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    png = png_bytes(drawn_seven())
    for i in range(20):
        conn.request("POST", "/api/predict?model=mnist-3b1b&activations=0", png, {"Content-Type": "image/png"})
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["label"] == 7
        if i % 5 == 0:          # a refused request's body is read too: the next request is not garbled
            conn.request("POST", "/index.html", b"GET /api/models HTTP/1.1\r\n\r\n", {"Content-Type": "text/plain"})
            r = conn.getresponse()
            assert r.status == 405 and json.loads(r.read())["error"]
    conn.close()


def test_a_bug_is_a_500_and_the_server_goes_on(server, monkeypatch):
    def broken(*args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(srv, "handle", broken)
    status, _, got = call(server, "GET", "/api/models")
    assert status == 500 and "RuntimeError" in got["error"] and "still running" in got["error"]
    monkeypatch.undo()
    assert call(server, "GET", "/api/models")[0] == 200


def test_the_server_side_of_a_stroke_is_cheap(monkeypatch):
    """The latency bar (a round trip under 30 ms, so drawing feels live) where the machine's
    load cannot blur it. Each stroke runs the network exactly once (counted: every pass goes
    through the first layer), with or without activations. And the server's whole work for
    what the page sends on each stroke — decoding the PNG, the model's preprocessing, the
    forward pass, activations and links, the JSON — stays well under the bar in CPU time for
    the shipped default model (a CNN), with BLAS as the server sets it (one thread; two spin
    and wait for a core on a busy machine, which shows in CPU time too). The best of 16 is
    taken: load only ever adds to CPU time (cache misses, a shared core)."""
    from threadpoolctl import threadpool_limits

    from digitnet.modelfile import default_model_path
    from digitnet.serve.api import handle
    from digitnet.serve.catalog import Catalog

    catalog = Catalog.discover([default_model_path()], cwd=ROOT)
    net = catalog.get(None).model.network
    first = net.layers[0]
    passes = []
    forward = type(first).forward
    monkeypatch.setattr(type(first), "forward", lambda self, *a, **k: (self is first and passes.append(1)) or forward(self, *a, **k))
    png = png_bytes(drawn_seven())
    for query in ({}, {"activations": "0"}):
        passes.clear()
        status, obj = handle(catalog, "POST", "/api/predict", query, "image/png", png)
        assert status == 200 and obj["label"] == 7
        assert len(passes) == 1, f"{len(passes)} forward passes for one stroke ({query or 'with activations'})"
    assert obj.keys() < handle(catalog, "POST", "/api/predict", {}, "image/png", png)[1].keys()
    monkeypatch.undo()

    times = []
    with threadpool_limits(limits=None, user_api="blas"):      # restores the test process's BLAS threads after
        srv.one_blas_thread()
        for _ in range(16):
            t = time.process_time()
            status, obj = handle(catalog, "POST", "/api/predict", {}, "image/png", png)
            json.dumps(obj, allow_nan=False, separators=(",", ":"))
            times.append(time.process_time() - t)
            assert status == 200
    # best of 16 is 9-13 ms here against the page's 30 ms bar; a busy spell of the shared host
    # once pushed it to 16.6 ms in a fresh-clone CI run, so the bar sits at 20 ms (a second
    # forward pass is caught by the count above, not by the clock)
    assert min(times) < 0.020, f"{1000 * min(times):.1f} ms of CPU per stroke at best"


def test_only_loopback_is_quiet():
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert exposure_warning(host) is None
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.org"):
        assert "anyone" in exposure_warning(host)


# ---------------------------------------------------------------------------------------------
# The command

def _start(args, env=None, cwd=None):
    return subprocess.Popen([str(DIGITNET), "draw", "--no-browser", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)


def _url(proc) -> str:
    line = proc.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
    return m.group(0)


def _first_answer(url: str, since: float, timeout: float = 10) -> float:
    import urllib.request

    while True:
        try:
            with urllib.request.urlopen(url + "api/models", timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - since
        except OSError:
            if time.perf_counter() - since > timeout:
                raise
            time.sleep(0.005)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a running process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _post(url: str, path: str, data: bytes, ctype: str) -> dict:
    import urllib.request

    req = urllib.request.Request(url + path.lstrip("/"), data=data, headers={"Content-Type": ctype}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_draw_is_up_in_under_a_second_never_imports_numba_and_ctrl_c_exits_130(tmp_path, vit_path):
    shim = tmp_path / "shim" / "numba"
    shim.mkdir(parents=True)
    marker = tmp_path / "numba-was-imported"
    shim.joinpath("__init__.py").write_text("import os\nopen(os.environ['NUMBA_MARKER'], 'w').close()\n"
                                           "raise ImportError('digitnet draw imported numba')\n")
    env = {**os.environ, "PYTHONPATH": str(shim.parent), "NUMBA_MARKER": str(marker)}
    env.pop("DIGITNET_MODEL", None)
    times, cpu = [], []
    for attempt in range(5):          # the best of up to five: the machine is shared
        t = time.perf_counter()
        extra = [str(vit_path)] if attempt == 0 else []          # a transformer too, once: its attention is NumPy only
        proc = _start(["--port", "0", str(SHIPPED_3B1B), *extra], env=env, cwd=tmp_path)
        try:
            url = _url(proc)
            times.append(_first_answer(url, t))
            cpu.append(_cpu_seconds(proc.pid))
            if attempt == 0:          # every endpoint, so any lazy import would happen
                png = png_bytes(drawn_seven())
                assert _post(url, "/api/predict", png, "image/png")["label"] == 7
                assert _post(url, "/api/predict?model=tiny-vit", png, "image/png")["attention"]["blocks"]
                assert _post(url, "/api/predict", json.dumps({"pixels": [0.5] * 784}).encode(), "application/json")
                assert _post(url, "/api/noise", b'{"seed": 1}', "application/json")["noise"]
                assert _post(url, "/api/dream", b'{"digit": 2}', "application/json")["dream"]
                import urllib.request
                with urllib.request.urlopen(url + "api/models/mnist-3b1b/weights?layer=1&unit=0") as r:
                    assert json.loads(r.read())["shape"] == [28, 28]
                with urllib.request.urlopen(url) as r:
                    assert b"<canvas" in r.read()
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=10)
        assert proc.returncode == 130, err
        assert err.strip().splitlines() == ["digitnet: stopped (Ctrl-C)"], err
        if min(times) < 1.0 and attempt > 0:
            break
    assert not marker.exists(), "digitnet draw imported numba"
    # the CPU it takes to come up does not depend on the neighbours; the wall-clock bar is
    # held where the machine is not oversubscribed (on a 2-core machine shared with
    # trainings, the wait for a core can exceed the work)
    assert min(cpu) < 0.6, f"{min(cpu):.2f} s of CPU before the first answer"
    if os.getloadavg()[0] < 2 * (os.cpu_count() or 1):
        assert min(times) < 1.0, f"up and answering after {min(times):.2f} s at best ({len(times)} launches)"


def test_sigterm_exits_143_with_one_line(tmp_path):
    proc = _start(["--port", "0", str(SHIPPED_3B1B)], cwd=tmp_path)
    try:
        _first_answer(_url(proc), time.perf_counter())
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 143 and err.strip().splitlines() == ["digitnet: stopped (terminated)"], err


def test_sigterm_is_not_lost_while_a_connection_is_being_handed_over(conv_path):
    """The signal lands wherever the main thread is. When that was inside socketserver's
    hand-over of a new connection to its thread, the server's loop took the exception for a
    failed request (``except Exception`` → handle_error) and served on: SIGTERM was lost.
    Here the exception is raised exactly there, deterministically; it must end the loop."""
    import threading

    from digitnet.cli.draw import _Terminated
    from digitnet.serve.catalog import Catalog

    server = srv.make_server(Catalog.discover([conv_path], cwd=conv_path.parent), port=0)

    def terminated(request, client_address):
        raise _Terminated

    server.process_request = terminated
    connect = threading.Thread(target=lambda: socket.create_connection(("127.0.0.1", server.port), timeout=5).close())
    guard = threading.Timer(10, server.shutdown)        # if the exception is swallowed: stop, and fail below
    connect.start()
    guard.start()
    try:
        with pytest.raises(_Terminated):
            server.serve_forever(poll_interval=0.05)
    finally:
        guard.cancel()
        connect.join()
        server.server_close()


def test_a_port_in_use_is_one_clear_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([str(DIGITNET), "draw", "--no-browser", "--port", str(port), str(SHIPPED_3B1B)],
                           capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and f"port {port}" in r.stderr and "in use" in r.stderr and "--port 0" in r.stderr


def test_bad_arguments_are_one_line(tmp_path):
    r = subprocess.run([str(DIGITNET), "draw", "--no-browser", str(tmp_path / "missing.npz")],
                       capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "missing.npz" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([str(DIGITNET), "draw", "--no-browser", "--port", "70000"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_draw_options_reach_the_server(monkeypatch, tmp_path):
    """--host reaches serve() as given, a non-loopback address printing one warning line
    first; models come as arguments and with -m; the default model is left to the library
    (``Catalog.discover`` follows the rule every command follows, $DIGITNET_MODEL first:
    test_serve_catalog.py)."""
    from typer.testing import CliRunner

    from digitnet.cli import app

    seen = []
    monkeypatch.setattr(srv, "serve", lambda models, host, port, on_ready, default=None:
                        seen.append((list(map(str, models)), host, port, default)))
    monkeypatch.setenv("DIGITNET_MODEL", str(tmp_path / "mine.npz"))
    r = CliRunner().invoke(app, ["draw", "--no-browser", "--host", "0.0.0.0", "--port", "9999"])
    assert r.exit_code == 0 and seen == [([], "0.0.0.0", 9999, None)]
    assert r.stderr.count("warning") == 1 and "0.0.0.0" in r.stderr and "anyone" in r.stderr
    r = CliRunner().invoke(app, ["draw", "--no-browser", "a.npz", "-m", "b.npz", "--model", "c.npz"])
    assert r.exit_code == 0 and seen[-1][:3] == (["a.npz", "b.npz", "c.npz"], "127.0.0.1", 8784)
    assert "warning" not in r.stderr
