"""``digitnet inspect``: every subcommand through CliRunner (plain text, 80 columns), its JSON,
--png files, errors as one line, determinism, no numba on any inspect path, and a real
subprocess of the console script; on a trained dense model, on a conv model built here with
weights set by hand (so the drawings can be checked cell by cell), and on the shipped
version-1 models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from digitnet.cli import app

DIGITNET = Path(sys.executable).with_name("digitnet")
SHIPPED = Path(__file__).resolve().parents[1] / "models"
runner = CliRunner()

# conv 12 filters 5×5 (28 -> 24), pool (12), conv 6 filters 3×3 on 12 channels (10), pool (5), dense 16, dense 10
CONV_SPEC = "conv12x5,pool2,conv6x3,pool2,dense16"
CONV_PARAMS = 12 * 25 + 12 + 6 * 12 * 9 + 6 + 150 * 16 + 16 + 16 * 10 + 10
ZERO = " .:-=+*#%@"[4]                  # plain text's zero weight: the middle of the ramp


def conv_network(names=tuple("0123456789")):
    """The conv model's network, untrained, with two filters set by hand: filter 0 of layer 1
    is +1 at its top left and -1 at its bottom right; filter 1 of layer 2 is +2 on channel 2's
    top right and -2 on its bottom left, zero elsewhere."""
    import numpy as np

    from digitnet.modelfile import Model
    from digitnet.training import TrainConfig

    net = TrainConfig(layers=CONV_SPEC, seed=1).build((28, 28), 10)
    W1, W2 = net.views[0]["W"], net.views[3]["W"]                    # (12, 1, 5, 5), (6, 12, 3, 3)
    W1[0] = 0
    W1[0, 0, 0, 0], W1[0, 0, 4, 4] = 1.0, -1.0
    W2[1] = 0
    W2[1, 2, 0, 2], W2[1, 2, 2, 0] = 2.0, -2.0
    net.views[0]["b"][...] = np.linspace(0.0, 0.2, 12)              # some maps stay alive under relu
    return Model(net, tuple(names), (28, 28), dataset={"name": "embedded", "spec": "embedded"})


@pytest.fixture(scope="module")
def conv_model(tmp_path_factory):
    from digitnet.modelfile import save_model

    path = tmp_path_factory.mktemp("conv") / "conv.npz"
    save_model(conv_network(), path)
    return path


@pytest.fixture(autouse=True)
def _eighty_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")


def run(*args):
    return runner.invoke(app, ["inspect", *map(str, args)])


def _prose(line: str) -> bool:
    """A line of words (a sentence, a summary row after its label), not a row of a table or
    picture: no columns lined up with runs of spaces."""
    import re

    return re.search(r"\S {3,}\S", line[14:]) is None


def ok(*args) -> str:
    """The output of a command that succeeds, as a script in a pipe gets it (CliRunner: not a
    terminal, 80 columns): pictures and tables laid out within 80 columns, prose on whole
    lines however long, no line padded with spaces."""
    r = run(*args)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert not [line for line in lines if line.endswith(" ")], r.output
    wide = [line for line in lines if len(line) > 80 and not _prose(line)]
    assert not wide, wide
    assert "\x1b[" not in r.output                       # not a terminal: plain text
    return r.output


def js(*args) -> dict:
    r = run(*args)
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_summary(tiny_model):
    out = ok("summary", tiny_model)
    assert "784 -> 32 -> 10" in out and "25,450" in out
    rows = [line.split() for line in out.splitlines()]
    assert ["2", "dense32", "dense", "32", "W1", "32×784", "+", "b1", "25,120"] in rows
    assert ["4", "dense10", "dense", "10", "W2", "10×32", "+", "b2", "330"] in rows and ["total", "25,450"] in rows
    assert "cost per epoch" in out and "accuracy per epoch" in out and "embedded" in out
    info = js("summary", tiny_model, "--json")
    assert info["model"] == info["path"] == str(tiny_model)       # "model" as every command says; "path" kept
    assert info["parameters"] == 25450 and info["sizes"] == [784, 32, 10]
    assert info["activation"] == "relu" and info["output"] == "softmax" and info["cost"] == "cross-entropy"
    assert [(r["name"], r["parameters"], r["weight_layer"]) for r in info["layers"]] == [
        ("flatten", 0, None), ("dense32", 25120, 1), ("relu", 0, None), ("dense10", 330, 2), ("softmax", 0, None)]


def accuracy_by_hand(path, images, labels) -> float:
    """A dense ReLU network's accuracy from its weights, forward pass written here."""
    import numpy as np

    from digitnet.modelfile import load_model

    a = images.reshape(len(images), -1).astype(np.float64) / 255
    dense = [v for v in load_model(path).network.views if "W" in v]
    for i, v in enumerate(dense):
        a = a @ v["W"].astype(np.float64).T + v["b"]
        a = np.maximum(a, 0) if i < len(dense) - 1 else a
    return float(np.mean(a.argmax(axis=1) == labels))


def test_summary_test_accuracy_recorded_measured_or_neither(tiny_model, tmp_path, embedded):
    """By default the accuracy recorded in the file; --test measures it now (here the file
    records a wrong number on purpose, so only a real measurement matches); --no-test never
    measures."""
    from digitnet.modelfile import load_model, save_model

    m = load_model(tiny_model)
    m.meta["test_accuracy"] = 0.123
    save_model(m, tmp_path / "recorded.npz")
    truth = accuracy_by_hand(tiny_model, embedded.test_images, embedded.test_labels)
    assert js("summary", tmp_path / "recorded.npz", "--json")["test_accuracy"] == 0.123
    measured = js("summary", tmp_path / "recorded.npz", "--json", "--test")
    assert measured["test_accuracy"] == pytest.approx(truth, abs=1e-9) and "measured now" in measured["test_note"]
    m.meta.pop("test_accuracy")
    save_model(m, tmp_path / "unrecorded.npz")
    assert js("summary", tmp_path / "unrecorded.npz", "--json")["test_accuracy"] == pytest.approx(truth, abs=1e-9)
    assert js("summary", tmp_path / "unrecorded.npz", "--json", "--no-test")["test_accuracy"] is None


def test_summary_charts_show_both_series_the_best_epoch_and_a_log_scale(tmp_path):
    """Where train and validation meet they show as '@' (not one over the other), the cost is
    on a log scale (its labels: top, geometric middle, bottom), the best epoch is marked, and
    a note says training accuracy was measured on augmented images."""
    from digitnet.modelfile import load_model, save_model

    m = load_model(SHIPPED / "mnist-3b1b.npz")
    loss = [1.0, 0.1, 0.01, 0.01]
    m.history = [{"epoch": i + 1, "lr": 3.0, "loss": v, "accuracy": 0.5 + 0.1 * i, "val_loss": v if i < 3 else 0.02,
                  "val_accuracy": 0.5 + 0.1 * i if i != 1 else 0.55, "seconds": 1.0, "samples_per_second": 1.0}
                 for i, v in enumerate(loss)]
    m.meta["best_epoch"] = 3
    m.config = {**m.config, "augment": True}
    save_model(m, tmp_path / "h.npz")
    out = ok("summary", tmp_path / "h.npz", "--no-test")
    cost = out[out.index("cost per epoch"):out.index("accuracy per epoch")].splitlines()
    rows = {line.split("|")[0].strip(): line for line in cost if "|" in line}
    assert list(rows) == ["1.0000", "", "0.1000", "0.0100"]             # top, geometric middle, bottom
    assert rows["1.0000"].endswith("|@")                                 # epoch 1: both at 1.0
    legend = next(line for line in cost if "train" in line)
    assert legend.strip() == "* train   o validation   @ both   (log scale)"
    best = next(line for line in cost if "best epoch" in line)
    assert best.strip() == "^ best epoch 3"
    assert rows["0.0100"][best.index("^")] == "@"                        # epoch 3: both at 0.01, marked best
    acc = out[out.index("accuracy per epoch"):].splitlines()
    assert any(line.rstrip().endswith("*") for line in acc) and any(line.rstrip().endswith("o") for line in acc)
    assert "on the augmented images" in flat(out)


def test_weights_first_layer_grid_and_png(tiny_model, tmp_path):
    from PIL import Image

    out = ok("weights", tiny_model, "--neurons", "0:5")
    assert all(f"#{i} ±" in out for i in range(5)) and "#5 ±" not in out
    assert ok("weights", tiny_model, "-n", "0:5") == out                      # the older spelling
    png = tmp_path / "w.png"
    ok("weights", tiny_model, "--neurons", "0:16", "--png", png)
    with Image.open(png) as im:          # 16 pictures: a 4 × 4 grid of 28·4 px tiles, 2 px apart
        assert im.size == (4 * 112 + 3 * 2, 4 * 112 + 3 * 2) and im.mode == "RGB"
    again = run("weights", tiny_model, "--neurons", "3", "--png", png)
    assert again.exit_code == 2 and "pass --force" in again.output and again.output.count("\n") == 1
    ok("weights", tiny_model, "--neurons", "3", "--png", png, "--force")
    with Image.open(png) as im:
        assert im.size == (112, 112)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.png"]     # no temporary files left
    small = ok("weights", tiny_model, "--small", "--neurons", "0:5")
    assert len(small.splitlines()) < len(out.splitlines())


def test_weights_deeper_layer(tiny_model, tmp_path):
    from PIL import Image

    out = ok("weights", tiny_model, "--layer", "2", "--neurons", ":", "--png", tmp_path / "w2.png")
    assert "32 inputs from layer 1" in out
    with Image.open(tmp_path / "w2.png") as im:
        assert im.size[1] * 32 == im.size[0] * 10                        # 10 rows × 32 columns, same zoom


@pytest.mark.parametrize("args", [("--layer", "3"), ("--layer", "0"), ("--neurons", "40:50"), ("--neurons", "x")])
def test_weights_usage_errors(tiny_model, args):
    r = run("weights", tiny_model, *args)
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "error:" in r.output


def test_activations_from_a_data_set_row(tiny_model):
    out = ok("activations", tiny_model, "--index", "0")
    assert "input (label 7)" in out and "layer 1" in out and "output" in out
    assert out.count("<") == 1                                           # one winner marked
    data = js("activations", tiny_model, "--index", "0", "--json")
    assert [len(a) for a in data["activations"]] == [32, 10] and data["label"] == 7
    assert data["predicted"] == max(range(10), key=lambda i: data["activations"][-1][i])


def test_activations_usage(tiny_model, tmp_path):
    for args in ((), ("--index", "5000"), ("--index", "1", str(tmp_path / "x.png"))):
        r = run("activations", tiny_model, *args)
        assert r.exit_code == 2 and "error:" in r.output, args


def test_noise_json_and_determinism(tiny_model, tmp_path):
    import numpy as np

    from digitnet.modelfile import Model, save_model
    from digitnet.nn.network import Network, dense_layers

    data = js("noise", tiny_model, "--samples", "500", "--json")
    assert {"samples", "mean_confidence", "class_counts"} <= set(data)
    assert data["samples"] == 500 and sum(data["class_counts"].values()) == 500
    # worked by hand: zero weights score every class 1/10; a bias of 30 on output 3 says "3", sure
    net = Network.init(dense_layers((784, 10), "relu", "softmax"), (1, 28, 28), "cross-entropy", seed=0)
    net.params[:] = 0
    save_model(Model(net, tuple("0123456789")), tmp_path / "flat.npz")
    assert js("noise", tmp_path / "flat.npz", "-n", "50", "--json")["mean_confidence"] == pytest.approx(0.1)
    next(v for v in net.views if "b" in v)["b"][3] = 30.0
    save_model(Model(net, tuple("0123456789")), tmp_path / "three.npz")
    sure = js("noise", tmp_path / "three.npz", "-n", "50", "--json")
    assert sure["class_counts"]["3"] == 50 and sure["mean_confidence"] == pytest.approx(1.0, abs=1e-9)
    assert np.isclose(sure["median_confidence"], 1.0)
    a, b = ok("noise", tiny_model, "--samples", "200"), ok("noise", tiny_model, "--samples", "200")
    c = ok("noise", tiny_model, "--samples", "200", "--seed", "1")
    assert a == b and a != c
    assert "what it says they are" in a and "mean confidence" in a


def test_dream_json_png_and_text(tiny_model, tmp_path):
    from PIL import Image

    data = js("dream", tiny_model, "3", "--json", "--png", tmp_path / "d.png")
    assert data["digit"] == 3 and data["probability"] >= 0.9 and data["probability"] > data["start_probability"]
    with Image.open(tmp_path / "d.png") as im:
        assert im.size == (224, 224)
    out = ok("dream", tiny_model, "3", "--steps", "50")
    assert "its '3'" in out and "→" in out
    assert run("dream", tiny_model, "10").exit_code == 2


def test_errors(tiny_model):
    out = ok("errors", tiny_model, "--limit", "3")
    assert "most" in out and "confident" in out and "wrong" in out
    data = js("errors", tiny_model, "--limit", "5", "--json")
    assert data["data"] == "embedded" and data["split"] == "test" and len(data["mistakes"]) == 5
    conf = [m["confidence"] for m in data["mistakes"]]
    assert conf == sorted(conf, reverse=True) and all(m["true"] != m["predicted"] for m in data["mistakes"])
    assert len(ok("errors", tiny_model, "--limit", "4", "--small").splitlines()) < len(ok("errors", tiny_model, "--limit", "4").splitlines())


def test_missing_model_is_one_line(tmp_path):
    for cmd in (["summary"], ["weights"], ["noise"], ["errors"], ["dream", "3"], ["activations", "--index", "0"]):
        args = [cmd[0], tmp_path / "none.npz", *cmd[1:]]
        r = run(*args)
        assert r.exit_code == 1 and r.output.count("\n") == 1 and "none.npz" in r.output, cmd


def test_every_inspect_command_has_help_ending_with_an_example():
    for cmd in ("summary", "weights", "activations", "noise", "dream", "errors"):
        r = run(cmd, "--help")
        assert r.exit_code == 0
        desc = r.output.split("Arguments:")[0].split("Options:")[0].rstrip().splitlines()
        assert desc[-1].strip().startswith("digitnet inspect " + cmd), cmd


# ---------------------------------------------------------------------------------------------
# conv models and the shipped version-1 files

def flat(out: str) -> str:
    """The output with its line wrapping undone, for sentences that may wrap anywhere."""
    return " ".join(out.split())


def test_summary_of_a_conv_model_lists_its_layers(conv_model):
    out = ok("summary", conv_model, "--no-test")
    assert "conv12x5:relu,pool2,conv6x3:relu,pool2,dense16:relu" in out and "->" not in out
    assert "28×28 in, 10 softmax out, cross-entropy cost" in flat(out)
    rows = [line.split() for line in out.splitlines()]
    for row in (["1", "conv12x5", "conv", "12×24×24", "W1", "12×1×5×5", "+", "b1", "312"],
                ["3", "pool2", "maxpool", "12×12×12", "0"],
                ["4", "conv6x3", "conv", "6×10×10", "W2", "6×12×3×3", "+", "b2", "654"],
                ["7", "flatten", "flatten", "150", "0"],
                ["8", "dense16", "dense", "16", "W3", "16×150", "+", "b3", "2,416"],
                ["total", f"{CONV_PARAMS:,}"]):
        assert row in rows, row
    info = js("summary", conv_model, "--json", "--no-test")
    assert info["parameters"] == CONV_PARAMS and info["sizes"] is None and info["activation"] is None
    assert info["architecture"] == "conv12x5:relu,pool2,conv6x3:relu,pool2,dense16:relu" and info["output"] == "softmax"
    assert [r["weight_layer"] for r in info["layers"]] == [1, None, None, 2, None, None, None, 3, None, 4, None]
    assert info["layers"][3]["arrays"] == {"W": [6, 12, 3, 3], "b": [6]} and info["layers"][3]["input_shape"] == [12, 12, 12]


def test_weights_of_a_first_conv_layer_cell_by_cell(conv_model, tmp_path):
    from PIL import Image

    out = ok("weights", conv_model, "--neurons", "0:3", "--png", tmp_path / "f.png")
    assert "filters 0–2 of 12, each 1×5×5, slid over the image" in flat(out)
    lines = out.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("#0 ±1 "))
    assert "#1 ±" in lines[i] and "#2 ±" in lines[i] and "#3 ±" not in out
    # 5×5 drawn 2× enlarged: one line and two characters per weight; +1 top left, -1 bottom right
    block = [line[:10] for line in lines[i + 1:i + 6]]
    assert block == ["@@" + ZERO * 8, ZERO * 10, ZERO * 10, ZERO * 10, ZERO * 8 + "  "]
    with Image.open(tmp_path / "f.png") as im:          # 3 filters: 2 × 2 grid of 5·22 px tiles, 2 px apart
        assert im.size == (222, 222)
        assert im.getpixel((5, 5)) == (255, 51, 42) and im.getpixel((105, 105)) == (51, 85, 255)   # red +1, blue -1


def test_weights_of_a_deeper_conv_layer_one_row_per_filter(conv_model, tmp_path):
    from PIL import Image

    out = ok("weights", conv_model, "--layer", "2", "--neurons", "0:2", "--png", tmp_path / "f2.png")
    text = flat(out)
    assert "filters 0–1 of 6, each 12×3×3, slid over pool2's 12 maps of 12×12" in text
    assert "--channels picks others" in text                          # 12 channels of 7 columns do not fit 80
    lines = out.splitlines()
    head = next(line for line in lines if line.lstrip().startswith("c0"))
    shown = head.split()
    assert shown[:3] == ["c0", "c1", "c2"] and "c11" not in shown and len(shown) >= 8
    r = next(k for k, line in enumerate(lines) if line.startswith("#1 ±"))
    cell = lambda c, j: lines[r + j][head.index(c):head.index(c) + 6]  # noqa: E731 — channel c, line j of filter 1
    assert [cell("c2", j) for j in range(3)] == [ZERO * 4 + "@@", ZERO * 6, "  " + ZERO * 4]
    assert [cell("c1", j) for j in range(3)] == [ZERO * 6] * 3
    with Image.open(tmp_path / "f2.png") as im:         # 2 filters × all 12 channels, 3·13 px tiles
        assert im.size == (12 * 39 + 11 * 2, 2 * 39 + 2)
    picked = ok("weights", conv_model, "--layer", "2", "--neurons", "1", "--channels", "10,11")
    assert next(line for line in picked.splitlines() if "c10" in line).split() == ["c10", "c11"]
    too_many = run("weights", conv_model, "--layer", "2", "--channels", ":")
    assert too_many.exit_code == 2 and too_many.output.count("\n") == 1 and "--png draws them all" in too_many.output
    bad = run("weights", conv_model, "--layer", "2", "--channels", "12")
    assert bad.exit_code == 2 and "--channels '12': this layer has input channels 0 to 11" in bad.output


def test_weights_of_a_dense_layer_after_convs(conv_model):
    out = ok("weights", conv_model, "--layer", "3", "--neurons", "0:4")
    assert "the 150 inputs: pool2's 6 maps of 5×5, flattened" in flat(out)
    r = run("weights", conv_model, "--layer", "5")
    assert r.exit_code == 2 and "weight layers 1 to 4" in r.output


def test_activations_of_a_conv_model(conv_model):
    import numpy as np

    from digitnet.render import shade

    data = js("activations", conv_model, "--index", "0", "--json")
    assert data["sizes"] == [784, 12 * 24 * 24, 6 * 10 * 10, 16, 10] and data["label"] == 7
    assert [(d["name"], d["shape"]) for d in data["layers"]] == [
        ("conv12x5:relu", [12, 24, 24]), ("conv6x3:relu", [6, 10, 10]), ("dense16:relu", [16]), ("dense10:softmax", [10])]
    assert [len(a) for a in data["activations"]] == data["sizes"][1:]   # the values: see test_analysis
    assert data["predicted"] == int(np.argmax(data["activations"][-1]))
    assert data["confidence"] == pytest.approx(max(data["activations"][-1]), abs=1e-6)   # softmax: score = output
    out = ok("activations", conv_model, "--index", "0", "--maps", "0:3")
    assert "layer 1 conv12x5:relu: maps 0–2 of 12, each 24×24 (drawn at half size" in flat(out)
    assert "layer 2 conv6x3:relu: maps 0–2 of 6, each 10×10;" in flat(out)
    first = np.array(data["activations"][0]).reshape(12, -1).max(axis=1)
    assert all(f"#{i} {first[i]:.2g}" in out for i in range(3)) and "#3 " not in out
    # layer 2's map 1, drawn at full size on its own scale (white = its largest value)
    maps = np.array(data["activations"][1]).reshape(6, 10, 10)
    lines = out.splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith("layer 2"))
    labels = next(k for k in range(start, len(lines)) if lines[k].startswith("#0 "))
    col = lines[labels].index("#1 ")
    drawn = [line[col:col + 10].ljust(10) for line in lines[labels + 1:labels + 6]]
    expected = [line.ljust(10) for line in shade(maps[1], plain=True, vmax=maps[1].max() or 1.0).plain.split("\n")]
    assert drawn == expected
    assert "layer 3" in out and out.count("<") == 1 and "(dense16:relu)" in out
    bad = run("activations", conv_model, "--index", "0", "--maps", "12")
    assert bad.exit_code == 2 and bad.output.count("\n") == 1 and "--maps '12'" in bad.output


def test_activations_preprocess_an_image_as_predict_does(tiny_model, tmp_path):
    """The model's own preprocessing (its metadata names it), or --no-preprocess: the same
    scores predict gives for the same image."""
    import numpy as np
    from PIL import Image, ImageDraw

    from digitnet.modelfile import load_model, save_model

    img = Image.new("L", (60, 80), 255)                              # a dark '1' on white paper, off centre
    draw = ImageDraw.Draw(img)
    draw.line([(40, 10), (40, 70)], fill=0, width=7)
    draw.line([(28, 22), (40, 10)], fill=0, width=6)
    png = tmp_path / "one.png"
    img.save(png)
    m = load_model(tiny_model)
    m.preprocessing = "none"
    save_model(m, tmp_path / "none.npz")
    outputs = {}
    for model, extra in ((tiny_model, []), (tmp_path / "none.npz", []), (tiny_model, ["--no-preprocess"])):
        acts = js("activations", model, png, *extra, "--json")
        r = runner.invoke(app, ["predict", str(png), "--model", str(model), "--format", "jsonl", "--probs", *extra])
        assert r.exit_code == 0, r.output
        probs = json.loads(r.output.splitlines()[0])["probs"]
        assert np.allclose(acts["activations"][-1], probs, atol=2e-6)
        assert acts["confidence"] == pytest.approx(max(probs), abs=2e-6)
        outputs[(str(model), tuple(extra))] = np.array(probs)
    a, b, c = outputs.values()
    assert not np.allclose(a, b, atol=1e-3) and np.allclose(b, c)    # the preprocessings differ on this image


@pytest.mark.parametrize("name", ["mnist-3b1b.npz", "digitnet.npz"])
def test_shipped_models(name):
    """Every view works on the shipped models (the 3b1b one is a version-1 file), and the
    summary names the architecture the file holds."""
    from digitnet.modelfile import load_model
    from digitnet.nn.spec import describe_layers

    path = SHIPPED / name
    net = load_model(path).network
    mlp = net.mlp()
    arch = " -> ".join(map(str, mlp[0])) if mlp else describe_layers(net.layers).split(",")[0]
    assert name != "mnist-3b1b.npz" or arch == "784 -> 16 -> 16 -> 10"
    out = ok("summary", path, "--no-test")
    assert arch in out and "W1 " in out
    assert "#1 ±" in ok("weights", path, "--neurons", "0:2")
    assert "output" in ok("activations", path, "--index", "0", "--data", "embedded")


def test_user_names_are_never_markup(tmp_path):
    """File names and class names come from users: printed as they are, never as rich markup
    (which would swallow '[i]' and fail on '[/]')."""
    from digitnet.modelfile import save_model

    path = tmp_path / "[bold]m[i].npz"
    save_model(conv_network(names=[f"[i]{d}" for d in range(9)] + ["[/]9"]), path)
    for args in (["summary", path, "--no-test"], ["weights", path, "--png", tmp_path / "[red]w.png", "--force"],
                 ["weights", path, "--layer", "2", "--neurons", "0"], ["activations", path, "--index", "3"],
                 ["noise", path, "--samples", "20"], ["dream", path, "9", "--steps", "2"], ["errors", path, "--limit", "2"]):
        out = ok(*args)
        assert "[bold]m[i].npz" in out, args
    assert "[red]w.png" in flat(ok("weights", path, "--png", tmp_path / "[red]w.png", "--force"))
    assert "only leans towards '[/]9' here" in flat(ok("dream", path, "9", "--steps", "2"))
    assert "is sure this is a '[/]9'" in flat(ok("dream", path, "9", "--steps", "30"))
    assert "[i]7" in ok("activations", path, "--index", "0") and "[/]9" in ok("noise", path, "--samples", "20")

@pytest.fixture(scope="module")
def digit_png(tmp_path_factory, embedded):
    """A test digit as a person's image (dark on light, larger): made here, never skipped."""
    from PIL import Image

    path = tmp_path_factory.mktemp("png") / "three.png"
    Image.fromarray(255 - embedded.test_images[30]).resize((84, 84)).save(path)
    return path


def test_activations_from_an_image_file(tiny_model, digit_png):
    out = ok("activations", tiny_model, digit_png)
    assert digit_png.name in out and "layer 1" in out
    assert ok("activations", digit_png, "-m", tiny_model) == out                # the model as --model
    assert ok("activations", digit_png, "--model", tiny_model) == out


def test_one_convention_for_the_model_and_counts(tiny_model, digit_png, monkeypatch):
    """--model/-m everywhere (the model first still works); -n is how many; --limit is --count."""
    assert js("dream", "3", "-m", tiny_model, "--steps", "5", "--json") == \
        js("dream", tiny_model, "3", "--steps", "5", "--json")
    assert js("errors", "-m", tiny_model, "-n", "3", "--json") == js("errors", tiny_model, "--limit", "3", "--json")
    assert js("noise", "-m", tiny_model, "-n", "30", "--json") == js("noise", tiny_model, "--samples", "30", "--json")
    assert js("activations", "-m", tiny_model, "--index", "4", "--json") == \
        js("activations", tiny_model, "--index", "4", "--json")
    both = run("summary", tiny_model, "-m", str(tiny_model) + "x")
    assert both.exit_code == 2 and "two models named" in both.output
    monkeypatch.setenv("DIGITNET_MODEL", str(tiny_model))
    assert js("summary", "--json", "--no-test")["path"] == str(tiny_model)
    assert run("dream", "x").exit_code == 2 and run("dream", "1", "2", "3").exit_code == 2


def test_weights_json(tiny_model):
    import numpy as np

    from digitnet.modelfile import load_model

    data = js("weights", tiny_model, "--layer", "2", "--neurons", "1,4", "--json")
    net = load_model(tiny_model).network
    W, b = net.views[3]["W"], net.views[3]["b"]
    assert data["type"] == "dense" and data["shape"] == [10, 32] and data["neurons"] == [1, 4]
    assert np.allclose(data["weights"], W[[1, 4]], atol=1e-6)
    assert data["bias"] == pytest.approx([b[1], b[4]], abs=1e-6)


def test_no_inspect_path_imports_numba(tiny_model, conv_model, tmp_path, digit_png):
    """Every inspect command in one fresh interpreter; numba must never be imported."""
    image = digit_png
    code = f"""
import sys
from typer.testing import CliRunner
from digitnet.cli import app
m = {str(tiny_model)!r}
c = {str(conv_model)!r}
calls = [["summary", m], ["weights", m, "--png", {str(tmp_path / 'w.png')!r}], ["activations", m, "--index", "1"],
         ["noise", m, "--samples", "50"], ["dream", m, "1", "--steps", "5"], ["errors", m, "--limit", "2"],
         ["summary", c], ["weights", c, "--png", {str(tmp_path / 'c.png')!r}], ["weights", c, "--layer", "2"],
         ["activations", c, "--index", "1"], ["noise", c, "--samples", "50"], ["dream", c, "1", "--steps", "5"],
         ["errors", c, "--limit", "2"]]
if {str(image) if image else ''!r}:
    calls.append(["activations", m, {str(image) if image else ''!r}])
for args in calls:
    r = CliRunner().invoke(app, ["inspect", *args])
    assert r.exit_code == 0, (args, r.output)
assert "numba" not in sys.modules, sorted(k for k in sys.modules if "numba" in k)[:5]
assert "digitnet.kernels" not in sys.modules and "digitnet.augment" not in sys.modules
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_console_script_in_a_pipe(tiny_model):
    env = {**os.environ, "COLUMNS": "80"}
    env.pop("NO_COLOR", None)            # a pipe alone must be enough for plain text
    r = subprocess.run([str(DIGITNET), "inspect", "noise", str(tiny_model), "--samples", "100", "--show", "1"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert "\x1b[" not in r.stdout and "mean confidence" in r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) <= 80
    bad = subprocess.run([str(DIGITNET), "inspect", "dream", str(tiny_model), "12"], capture_output=True, text=True,
                         timeout=60, env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


@pytest.mark.parametrize("columns", [40, 60])
def test_summary_in_a_narrow_terminal_drops_columns_rather_than_cut_a_count(columns, tmp_path):
    """`inspect summary` of the shipped CNN on a pseudo-terminal ``columns`` wide: the layer
    table gives up columns (type, weights, output shape) and prints every parameter count
    whole, never "12,5…"; the counts are summed here from the model's own arrays."""
    import re

    import cli_helpers
    from digitnet.modelfile import load_model

    net = load_model(SHIPPED / "digitnet.npz").network
    counts = [sum(int(a.size) for a in v.values()) for v in net.views if v]
    code, out = cli_helpers.run_in_terminal(["inspect", "summary", SHIPPED / "digitnet.npz"], columns, cwd=tmp_path)
    assert code == 0, out
    table = out[out.index("\nlayers\n"):out.index("cost per epoch")]
    assert "…" not in table, table
    assert max(len(line) for line in table.splitlines()) <= columns, table
    shown = [line.split()[-1] for line in table.splitlines() if re.match(r"^ *\d+ ", line)]
    assert [c for c in shown if c != "0"] == [f"{c:,}" for c in counts if c], table
    assert re.search(rf"total +{sum(counts):,}$", table, re.M), table
