"""The drawing page in a real browser: Debian's Chromium driven by Playwright for Python.

It draws a 7 with the mouse (down, moves, up), waits for the answer on the page, checks it
says 7 and that the API says the same for the same picture, switches models (a dense one, a
conv one, and a transformer, whose class token's attention is drawn over the patches), hovers
a neuron for its weights, uploads and pastes images, tries noise, a dream and Clear, and
saves screenshots under the test's tmp_path. Outside CI a missing browser or Playwright skips;
with CI=true it fails (.ci/run installs both).
"""

from __future__ import annotations

import base64
import json
import os
import resource
import shutil
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SEVEN = [(70, 60), (210, 60), (120, 230)]        # on the 280×280 pad: the bar, then the stem


def _chromium() -> str | None:
    for candidate in (os.environ.get("DIGITNET_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    exe = _chromium()
    if sync_playwright is None or exe is None:
        why = "Playwright for Python is not installed" if sync_playwright is None else "no chromium executable"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}: .ci/run must install it (apt-get install chromium; pip install playwright)")
        pytest.skip(why)
    # The suite caps its address space (conftest); Chromium reserves far more than it uses and
    # dies at start under the cap, so its processes (started now: Playwright's driver, then
    # the browser) get the hard limit back.
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
            yield b
            b.close()
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture(scope="module")
def conv_model(tmp_path_factory) -> Path:
    from digitnet.modelfile import Model, save_model
    from digitnet.nn.layers import Activation, Conv, Dense, Flatten, MaxPool
    from digitnet.nn.network import Network

    layers = [Conv(6, 5, padding=2), Activation("relu"), MaxPool(2), Conv(8, 5), Activation("relu"), MaxPool(2),
              Flatten(), Dense(32), Activation("relu"), Dense(10), Activation("softmax")]
    path = tmp_path_factory.mktemp("conv") / "small-conv.npz"
    save_model(Model(Network.init(layers, (1, 28, 28), seed=1), tuple("0123456789")), path)
    return path


@pytest.fixture(scope="module")
def vit_model(tmp_path_factory) -> Path:
    """A tiny transformer (4×4 patches, two blocks), random weights jittered so its attention varies."""
    import numpy as np

    from digitnet.modelfile import Model, save_model
    from digitnet.nn.network import Network
    from digitnet.nn.spec import architecture, parse_layers

    net = Network.init(architecture(parse_layers("patch7x16,block2,block4"), (1, 28, 28), 10, "softmax"), (1, 28, 28), seed=4)
    net.params += np.random.default_rng(0).normal(0, 0.3, net.params.shape).astype(np.float32)
    path = tmp_path_factory.mktemp("vit") / "tiny-vit.npz"
    save_model(Model(net, tuple("0123456789")), path)
    return path


def _api_predict(url: str, model: str, image: bytes, ctype: str = "image/png") -> dict:
    req = urllib.request.Request(f"{url}api/predict?model={model}", data=image, headers={"Content-Type": ctype},
                                 method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _settled(page, model: str) -> None:
    """Wait until the page shows an answer from ``model`` and has no request in flight."""
    page.wait_for_function(
        "m => document.body.dataset.busy === '0' && document.querySelector('#answer').dataset.model === m"
        " && document.querySelector('#answer').dataset.label !== undefined", arg=model, timeout=15_000)


def test_draw_a_seven_in_the_browser(browser, conv_model, vit_model, tmp_path):
    from digitnet.modelfile import default_model_path
    from digitnet.serve.server import running

    shipped_3b1b = ROOT / "models" / "mnist-3b1b.npz"
    errors: list[str] = []
    with running([default_model_path(), shipped_3b1b, conv_model, vit_model], cwd=tmp_path) as server:
        page = browser.new_page(viewport={"width": 1280, "height": 1300})
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.goto(server.url)
        page.wait_for_selector("#bars .name")
        first = page.eval_on_selector("#model", "s => s.value")
        assert first == "digitnet"
        assert page.text_content("#label") == "?"

        # draw a 7: press, move along the bar and down the stem, release
        box = page.locator("#pad").bounding_box()
        sx, sy = box["width"] / 280, box["height"] / 280
        page.mouse.move(box["x"] + SEVEN[0][0] * sx, box["y"] + SEVEN[0][1] * sy)
        page.mouse.down()
        for (ax, ay), (bx, by) in zip(SEVEN, SEVEN[1:]):
            for t in range(1, 16):
                page.mouse.move(box["x"] + (ax + (bx - ax) * t / 15) * sx, box["y"] + (ay + (by - ay) * t / 15) * sy)
        page.mouse.up()
        _settled(page, "digitnet")
        assert page.text_content("#label") == "7"
        assert page.get_attribute("#answer", "data-label") == "7"

        # the API says the same for the very picture the page sent
        png = base64.b64decode(page.eval_on_selector("#pad", "c => c.toDataURL('image/png')").split(",", 1)[1])
        api = _api_predict(server.url, "digitnet", png)
        assert api["label"] == 7
        bars = page.eval_on_selector_all("#bars .pct", "els => els.map(e => e.textContent)")
        assert len(bars) == 10 and bars[7] == page.text_content("#bars .pct.win")
        seen = page.eval_on_selector("#seen", "c => [c.width, c.height]")
        assert seen == [28, 28]
        page.screenshot(path=str(tmp_path / "draw-default.png"), full_page=True)

        # switch to the video's network: the page asks it about the same drawing
        page.select_option("#model", "mnist-3b1b")
        _settled(page, "mnist-3b1b")
        assert page.text_content("#label") == str(_api_predict(server.url, "mnist-3b1b", png)["label"])
        assert page.get_attribute("#net", "data-columns") == "image,neurons,neurons,neurons"
        assert page.text_content("#model-info").startswith("784-16-16-10")

        # hover a first-layer neuron: its 28×28 incoming weights appear
        center = page.evaluate("() => { const c = state.layout.columns[1]; return unitCenter(c, 3); }")
        net = page.locator("#net").bounding_box()
        page.mouse.move(net["x"] + center[0], net["y"] + center[1])
        page.wait_for_function("() => !document.querySelector('#tip-weights').hidden", timeout=10_000)
        assert page.text_content("#tip-title") == "layer 1 · neuron 3"
        assert page.eval_on_selector("#tip-weights", "c => c.width") >= 28 * 4
        assert "784 pixels" in page.text_content("#tip-note")
        page.screenshot(path=str(tmp_path / "draw-3b1b-hover.png"), full_page=True)
        page.mouse.move(5, 5)

        # a conv net shows its feature maps
        page.select_option("#model", "small-conv")
        _settled(page, "small-conv")
        assert page.get_attribute("#net", "data-columns") == "image,maps,maps,maps,maps,neurons,neurons"
        assert page.text_content("#label") == str(_api_predict(server.url, "small-conv", png)["label"])
        page.screenshot(path=str(tmp_path / "draw-conv.png"), full_page=True)
        assert page.eval_on_selector("#attention", "e => e.hidden")          # no attention panel but for transformers

        # a transformer: where its class token looks, per block and rolled out, over the 28×28
        page.select_option("#model", "tiny-vit")
        _settled(page, "tiny-vit")
        api = _api_predict(server.url, "tiny-vit", png)
        assert page.text_content("#label") == str(api["label"])
        page.wait_for_function("() => !document.querySelector('#attention').hidden")
        assert page.get_attribute("#attention", "data-blocks") == str(len(api["attention"]["blocks"])) == "2"
        size = page.eval_on_selector("#attention-maps", "c => [c.clientWidth, c.clientHeight]")
        assert size[0] >= 3 * 140 and size[1] >= 140                       # two blocks and the rollout, side by side
        tinted = page.eval_on_selector("#attention-maps", """c => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i + 2] > d[i] + 40) n++;       // the accent's blue-green tint
            return n; }""")
        assert tinted > 1000
        page.screenshot(path=str(tmp_path / "draw-attention.png"), full_page=True)

        # the experiments, back on the video's network
        page.select_option("#model", "mnist-3b1b")
        _settled(page, "mnist-3b1b")

        # an uploaded photo-like image (dark ink on paper) and a pasted one: the file's own
        # bytes go to the server, so the page and the API agree
        from PIL import Image, ImageDraw

        photo = Image.new("RGB", (500, 400), (236, 232, 222))
        ImageDraw.Draw(photo).line([(180, 80), (330, 80), (230, 330)], fill=(25, 25, 60), width=16, joint="curve")
        photo_path = tmp_path / "photo.jpg"
        photo.save(photo_path, quality=90)
        count = page.get_attribute("#answer", "data-count")
        page.set_input_files("#file", str(photo_path))
        page.wait_for_function("c => document.querySelector('#answer').dataset.count !== c"
                               " && document.body.dataset.busy === '0'", arg=count)
        api = _api_predict(server.url, "mnist-3b1b", photo_path.read_bytes(), "image/jpeg")
        assert page.text_content("#label") == str(api["label"])
        seen = page.eval_on_selector("#seen", "c => Array.from(c.getContext('2d').getImageData(0, 0, 28, 28).data)"
                                                " .filter((v, i) => i % 4 === 0)")
        assert max(abs(a - round(255 * b)) for a, b in zip(seen, api["input"])) <= 1     # the 28×28 it saw
        count = page.get_attribute("#answer", "data-count")
        page.evaluate("""b64 => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], "pasted.png", {type: "image/png"}));
            document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: data}));
        }""", base64.b64encode(png).decode())
        page.wait_for_function("c => document.querySelector('#answer').dataset.count !== c"
                               " && document.body.dataset.busy === '0'", arg=count)
        assert page.text_content("#label") == str(_api_predict(server.url, "mnist-3b1b", png)["label"])
        page.click("#noise")
        page.wait_for_function("() => document.querySelector('#experiment-note').textContent.includes('noise images')")
        page.select_option("#dream-digit", "3")
        page.click("#dream")
        page.wait_for_function("() => document.querySelector('#experiment-note').textContent.includes('excites')",
                               timeout=30_000)
        assert page.text_content("#label") == "3"
        page.screenshot(path=str(tmp_path / "draw-dream.png"), full_page=True)

        # Clear empties the pad and the answer
        page.click("#clear")
        page.wait_for_function("() => document.querySelector('#label').textContent === '?'")
        page.close()
    assert not errors, errors
    print(f"screenshots in {tmp_path}")
