"""``digitnet inspect attention`` and ``inspect mlp`` (digitnet/cli/inspect_attention.py), and
the older inspect views on a transformer: on a small vision transformer built from the layer
registry and saved (random weights, the attention sharpened so it has somewhere to look).

The expected values come from a forward pass written out here by hand in float64 (patches,
LayerNorm, per-head softmax attention, GELU MLP) and from evaluating a copy of the network
with a neuron zeroed, never from the functions under test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli_helpers import run as run_script
from digitnet.cli import app

runner = CliRunner()
SPEC = "patch7x16,block2,block2"        # 4×4 patches of 7×7 -> 17 tokens of 16, two blocks of 2 heads, MLP 64 wide
T, D, HEADS, F = 17, 16, 2, 64


def vit_network():
    from digitnet.training import TrainConfig

    net = TrainConfig(layers=SPEC, hidden=(), optimizer="adam", seed=5).build((28, 28), 10)
    rng = np.random.default_rng(0)
    net.params += rng.normal(0, 0.05, net.params.shape).astype(np.float32)
    for layer, p in zip(net.layers, net.views):
        if layer.type == "block":                                  # sharper attention than an untrained net's
            p["W_qkv"] += rng.normal(0, 0.6, p["W_qkv"].shape).astype(np.float32)
    return net


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    from digitnet.modelfile import Model, save_model

    path = tmp_path_factory.mktemp("vit") / "vit.npz"
    save_model(Model(vit_network(), tuple("0123456789"), (28, 28), dataset={"name": "embedded", "spec": "embedded"}), path)
    return path


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    from digitnet.modelfile import Model, save_model
    from digitnet.nn.network import Network, dense_layers

    path = tmp_path_factory.mktemp("dense") / "dense.npz"
    net = Network.init(dense_layers((784, 8, 10), "relu", "softmax"), (1, 28, 28))
    save_model(Model(net, tuple("0123456789"), (28, 28), dataset={"name": "embedded", "spec": "embedded"}), path)
    return path


@pytest.fixture(scope="module")
def test_split():
    from digitnet.datasets import load_dataset

    return load_dataset("embedded").split("test")


@pytest.fixture(autouse=True)
def _eighty_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")


def run(*args):
    return runner.invoke(app, ["inspect", *map(str, args)])


def ok(*args) -> str:
    """The output of a command that succeeds, as a script in a pipe gets it: plain text, no
    line padded with spaces (in a pipe, prose and data tables keep their natural width)."""
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert "\x1b[" not in r.output                                 # not a terminal: plain text
    assert not [line for line in r.output.splitlines() if line.endswith(" ")], r.output
    return r.output


def js(*args) -> dict:
    r = run(*args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


# ---------------------------------------------------------------------------------------------
# the transformer written out by hand, float64

def _ln(u, gamma, beta):
    mu = u.mean(axis=-1, keepdims=True)
    return (u - mu) / np.sqrt(((u - mu) ** 2).mean(axis=-1, keepdims=True) + 1e-5) * gamma + beta


def by_hand(net, image):
    """For one image (28, 28): each block's attention (H, T, T), its MLP's GELU activations
    (T, F), and the class scores (softmax)."""
    p = [{k: v.astype(np.float64) for k, v in views.items()} for views in net.views]
    P = 7
    patches = np.array([image[r * P:(r + 1) * P, c * P:(c + 1) * P].ravel() for r in range(4) for c in range(4)])
    x = np.vstack([p[0]["cls"], patches @ p[0]["W"].reshape(D, -1).T + p[0]["b"]]) + p[0]["pos"]   # (T, D)
    atts, acts = [], []
    for b in (1, 2):
        q = p[b]
        u = _ln(x, q["ln1_gamma"], q["ln1_beta"])
        qkv = u @ q["W_qkv"].T + q["b_qkv"]                                   # (T, 3D): q, k, v side by side
        d = D // HEADS
        y, att = np.zeros((T, D)), []
        for h in range(HEADS):
            cut = slice(h * d, (h + 1) * d)
            qh, kh, vh = qkv[:, :D][:, cut], qkv[:, D:2 * D][:, cut], qkv[:, 2 * D:][:, cut]
            s = qh @ kh.T / np.sqrt(d)
            a = np.exp(s - s.max(axis=1, keepdims=True))
            a /= a.sum(axis=1, keepdims=True)
            att.append(a)
            y[:, cut] = a @ vh
        x = x + y @ q["W_o"].T + q["b_o"]
        hpre = _ln(x, q["ln2_gamma"], q["ln2_beta"]) @ q["W_1"].T + q["b_1"]
        g = 0.5 * hpre * (1 + np.tanh(np.sqrt(2 / np.pi) * (hpre + 0.044715 * hpre ** 3)))
        x = x + g @ q["W_2"].T + q["b_2"]
        atts.append(np.array(att))
        acts.append(g)
    z = _ln(x[0], p[3]["gamma"], p[3]["beta"]) @ p[4]["W"].T + p[4]["b"]
    e = np.exp(z - z.max())
    return atts, acts, e / e.sum()


def rollout_by_hand(atts):
    R = np.eye(T)
    for a in atts:
        R = (0.5 * np.eye(T) + 0.5 * a.mean(axis=0)) @ R
    return R


# ---------------------------------------------------------------------------------------------
# inspect attention

def test_attention_json_is_the_attention_computed_by_hand(vit, test_split):
    from digitnet.modelfile import load_model

    images, labels = test_split
    out = js("attention", vit, "--index", 3)
    atts, _, scores = by_hand(load_model(vit).network, images[3] / 255.0)
    assert (out["patch"], out["grid"], out["tokens"], out["token"]) == (7, [4, 4], T, 0)
    assert out["label"] == int(labels[3]) and out["predicted"] == int(scores.argmax())
    assert out["confidence"] == pytest.approx(scores.max(), abs=1e-5)
    assert [b["block"] for b in out["blocks"]] == [1, 2] and [b["heads"] for b in out["blocks"]] == [HEADS, HEADS]
    for b, want in zip(out["blocks"], atts):
        att = np.array(b["attention"])
        assert att.shape == (HEADS, T, T)
        np.testing.assert_allclose(att.sum(axis=-1), 1.0, atol=1e-4)             # each token's weights sum to 1
        np.testing.assert_allclose(att, want, atol=2e-5)
        np.testing.assert_allclose(np.array(b["mean"]), want.mean(axis=0), atol=2e-5)
    R = np.array(out["rollout"])
    np.testing.assert_allclose(R, rollout_by_hand(atts), atol=5e-5)
    np.testing.assert_allclose(R.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.array(out["class_token_rollout"]), R[0, 1:].reshape(4, 4), atol=1e-6)
    assert max(np.abs(a - 1 / T).max() for a in atts) > 0.05                       # the test has something to see


def test_attention_text_draws_the_weights_over_the_digit(vit, test_split):
    images, _ = test_split
    out = ok("attention", vit, "--index", 3)
    lines = out.splitlines()
    assert "Where the class token looks" in out and ("wrong" in lines[0] or "right" in lines[0])
    assert "block 1" in lines and "block 2" in lines
    # the rollout map: the second picture of the first row, after the 28-column input and a 3-column gap
    R = np.array(js("attention", vit, "--index", 3)["class_token_rollout"])
    start = next(i for i, line in enumerate(lines) if line.startswith("input")) + 1
    rows = [line[31:59].ljust(28) for line in lines[start:start + 14]]
    ink = images[3] / 255.0
    r, c = np.unravel_index(R.argmax(), R.shape)                                   # the patch drawn at full weight
    inside = range(-(-7 * r // 2), (7 * r + 5) // 2 + 1)                           # text lines (2 pixel rows) in it
    cells = [(y, x) for y in inside for x in range(7 * c, 7 * c + 7) if ink[2 * y:2 * y + 2, x].max() < 0.5]
    assert cells and all(rows[y][x] == "@" for y, x in cells), "\n".join(rows)
    strokes = [(y, x) for y in range(14) for x in range(28) if ink[2 * y:2 * y + 2, x].max() >= 0.5]
    assert strokes and all(rows[y][x] == "o" for y, x in strokes)                  # the digit, drawn over it


def test_attention_png(vit, tmp_path, test_split):
    from PIL import Image

    images, _ = test_split
    png = tmp_path / "att.png"
    out = ok("attention", vit, "--index", 3, "--png", png)
    assert "Wrote" in out
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        a = np.asarray(im.convert("RGB"))
    tile, gap = 28 * 4, 4
    assert a.shape == (3 * tile + 2 * gap, (HEADS + 1) * tile + HEADS * gap, 3)    # input row, then a row per block
    np.testing.assert_array_equal(a[:tile:4, :tile:4, 0], images[3])               # the input, top left, in grey
    assert (a[tile + gap:2 * tile + gap, :tile, 0] >= a[tile + gap:2 * tile + gap, :tile, 1]).all()   # red heat
    again = run("attention", vit, "--index", 3, "--png", png)                      # an existing file is kept...
    assert again.exit_code != 0 and "--force" in again.output
    assert run("attention", vit, "--index", 3, "--png", png, "--force").exit_code == 0


def test_attention_of_one_patch_and_every_patch(vit, test_split):
    from digitnet.modelfile import load_model

    images, _ = test_split
    out = js("attention", vit, "--index", 3, "--token", 6)
    atts, _, _ = by_hand(load_model(vit).network, images[3] / 255.0)
    assert out["token"] == 6
    text = ok("attention", vit, "--index", 3, "--token", 6, "--patches")
    assert "Where patch 6 (row 1, column 1) looks" in text
    assert "block 2, every patch" in text
    np.testing.assert_allclose(np.array(out["blocks"][1]["attention"])[:, 6], atts[1][:, 6], atol=2e-5)


# ---------------------------------------------------------------------------------------------
# inspect mlp

def test_mlp_json_questions_and_answers_by_hand(vit, test_split):
    from digitnet.modelfile import load_model

    images, _ = test_split
    net = load_model(vit).network
    out = js("mlp", vit, "--block", 2, "--top", 3)
    assert (out["block"], out["n_neurons"], out["top"], out["images"], out["split"]) == (2, F, 3, len(images), "test")
    assert [n["neuron"] for n in out["neurons"]] == list(range(F)) and out["ablation"] is None
    rows = sorted({q["row"] for n in out["neurons"][:4] for q in n["question"]})
    acts = {row: by_hand(net, images[row] / 255.0)[1][1] for row in rows}        # block 2's GELU outputs (T, F)
    for n in out["neurons"][:4]:
        values = [q["activation"] for q in n["question"]]
        assert values == sorted(values, reverse=True) and len(values) == 3
        for q in n["question"]:
            assert 1 <= q["token"] < T and q["patch"] == list(divmod(q["token"] - 1, 4))
            assert q["activation"] == pytest.approx(acts[q["row"]][q["token"], n["neuron"]], abs=1e-4)
        # the answer: W_2's column through the final LayerNorm's scale (no shift) and the head's weights
        w = net.views[2]["W_2"][:, n["neuron"]].astype(np.float64)
        want = net.views[4]["W"] @ ((w - w.mean()) / np.sqrt(w.var() + 1e-5) * net.views[3]["gamma"])
        np.testing.assert_allclose(n["answer"], want, atol=1e-4)
        assert n["promotes"][0] == int(np.argmax(want)) and n["demotes"][0] == int(np.argmin(want))


def test_mlp_questions_are_the_best_over_sampled_images(vit, test_split):
    """Nothing in a sample of test images excites a neuron more than its question's last patch."""
    from digitnet.modelfile import load_model

    images, _ = test_split
    net = load_model(vit).network
    out = js("mlp", vit, "--block", 1, "--neuron", "0:3", "--top", 2)
    assert [n["neuron"] for n in out["neurons"]] == [0, 1, 2]
    sample = [int(n["question"][0]["row"]) for n in out["neurons"]] + list(range(0, 2000, 97))
    best = np.max([by_hand(net, images[i] / 255.0)[1][0][1:, :3] for i in sample], axis=(0, 1))   # (3,) over patches
    for n, top in zip(out["neurons"], best):
        assert n["question"][0]["activation"] == pytest.approx(top, abs=1e-4)


def test_mlp_ablation_matches_an_independent_evaluation(vit, test_split):
    from digitnet.modelfile import load_model

    images, labels = test_split
    out = js("mlp", vit, "--block", 1, "--ablate", 9)
    assert [n["neuron"] for n in out["neurons"]] == [9]
    ab = out["ablation"]
    net = load_model(vit).network
    x = images.reshape(len(images), -1) / np.float32(255)
    silenced = net.copy()
    silenced.views[1]["W_2"][:, 9] = 0.0                    # neuron 9 of block 1 writes nothing
    for name, n in (("before", net), ("after", silenced)):
        right = n.scores(x).argmax(axis=1) == labels
        assert ab[f"accuracy_{name}"] == pytest.approx(right.mean())
        for row in ab["classes"]:
            assert row[name] == pytest.approx(right[labels == row["class"]].mean())
    for row in ab["classes"]:
        assert row["support"] == int((labels == row["class"]).sum())
        assert row["change"] == pytest.approx(row["after"] - row["before"])
    assert ab["neuron"] == 9 and ab["change"] == pytest.approx(ab["accuracy_after"] - ab["accuracy_before"])
    # a neuron whose removal changes something, so that the comparison above can fail
    changes = [js("mlp", vit, "--block", 2, "--ablate", j)["ablation"]["change"] for j in range(0, F, 8)]
    assert any(c != 0 for c in changes) or ab["change"] != 0


def test_mlp_text(vit):
    out = ok("mlp", vit, "--block", 2, "--neuron", "3,5", "--top", 4, "--ablate", 5)
    assert "block 2's MLP: neurons 3, 5 of 64" in out
    assert out.count("answer") >= 3 and "#3" in out and "#5" in out
    table = out.split("zeroed")[1].splitlines()
    assert sum(1 for line in table if line.split() and line.split()[0] in "0123456789") == 10
    assert "test accuracy" in out


# ---------------------------------------------------------------------------------------------
# refusals: one line on stderr, a non-zero exit, no traceback

@pytest.mark.parametrize("args, says", [
    (["attention", "DENSE", "--index", "0"], "not a transformer"),
    (["mlp", "DENSE", "--block", "1"], "no transformer blocks"),
    (["mlp", "VIT", "--block", "3"], "--block must be from 1 to 2"),
    (["mlp", "VIT", "--block", "1", "--neuron", "64"], "--neuron"),
    (["mlp", "VIT", "--block", "1", "--ablate", "-1"], "--ablate must be a neuron from 0 to 63"),
    (["mlp", "VIT", "--block", "1", "--top", "0"], "--top"),
    (["attention", "VIT", "--index", "0", "--token", "17"], "--token must be cls or a patch from 1 to 16"),
])
def test_refusals_are_one_line(vit, dense, args, says):
    args = [{"DENSE": dense, "VIT": vit}.get(a, a) for a in args]
    r = run_script(["inspect", *args])
    assert r.returncode != 0 and r.stdout == b""
    err = r.stderr.decode()
    assert err.count("\n") == 1 and says in err and "Traceback" not in err, err


def test_help_ends_with_an_example():
    for cmd in ("attention", "mlp"):
        r = run(cmd, "--help")
        assert r.exit_code == 0
        desc = r.output.split("Arguments:")[0].split("Options:")[0].rstrip().splitlines()
        assert desc[-1].strip().startswith("digitnet inspect " + cmd), cmd
        wide = runner.invoke(app, ["inspect", cmd, "--help"], terminal_width=80).output
        assert max(len(line) for line in wide.splitlines()) <= 80, max(wide.splitlines(), key=len)


def test_console_script_in_a_pipe(vit):
    r = run_script(["inspect", "attention", vit, "--index", "0"], NO_COLOR="")     # a pipe alone: plain text
    assert r.returncode == 0 and b"\x1b[" not in r.stdout and b"block 2" in r.stdout


def test_colour_in_a_terminal(vit):
    from cli_helpers import run_in_terminal

    code, out = run_in_terminal(["inspect", "attention", vit, "--index", "0"], 100, NO_COLOR="")
    assert code == 0 and "\x1b[" in out and "▀" in out


# ---------------------------------------------------------------------------------------------
# the older views on a transformer

def test_summary_counts_every_array(vit):
    from digitnet.modelfile import load_model

    info = js("summary", vit, "--no-test")
    net = load_model(vit).network
    assert info["parameters"] == net.params.size
    for row in info["layers"]:
        assert row["weights"] + row["biases"] + row["other"] == row["parameters"]
    block = info["layers"][1]
    assert block["type"] == "block" and block["weights"] == 3 * D * D + D * D + 2 * F * D
    assert block["biases"] == 3 * D + D + F + D and block["other"] == 4 * D
    out = ok("summary", vit, "--no-test")
    assert "\\x0a" not in out and "28×28 in, 10 softmax out" in out          # the architecture's lines are lines
    assert "W_qkv 48×16" in out and f"{net.params.size:,}" in out


def test_weights_shows_the_patch_embedding_filters(vit):
    from digitnet.modelfile import load_model

    w = js("weights", vit, "--layer", 1, "--neurons", ":")
    W = load_model(vit).network.views[0]["W"]
    assert w["shape"] == [D, 1, 7, 7] and w["type"] == "conv"
    np.testing.assert_allclose(np.array(w["weights"]), W.reshape(D, -1), atol=1e-6)
    out = ok("weights", vit, "--layer", 1)
    assert "applied to each 7×7 patch of the image" in " ".join(out.split())


def test_activations_show_each_blocks_tokens(vit, test_split):
    from digitnet.modelfile import load_model

    images, _ = test_split
    out = js("activations", vit, "--index", 3)
    net = load_model(vit).network
    assert [layer["name"] for layer in out["layers"]] == ["patch7x16", "block2x16", "block2x16", "dense10:softmax"]
    assert [layer["shape"] for layer in out["layers"][:3]] == [[T, D]] * 3
    outs = net.feedforward(images[3:4].reshape(1, -1) / np.float32(255))
    for got, want in zip(out["activations"][:3], outs[1:4]):
        np.testing.assert_allclose(got, want[0].ravel(), atol=1e-5)
    _, _, scores = by_hand(net, images[3] / 255.0)
    np.testing.assert_allclose(out["activations"][-1], scores, atol=1e-5)
    text = ok("activations", vit, "--index", 3)
    assert text.count("17 tokens of 16 values") == 3


def test_noise_dream_errors_run_on_a_transformer(vit, test_split):
    from digitnet.modelfile import load_model

    images, labels = test_split
    noise = js("noise", vit, "--samples", 50)
    assert sum(noise["class_counts"].values()) == 50
    dream = js("dream", vit, 4, "--steps", 30)                  # gradient ascent through attention and LayerNorms
    assert dream["probability"] > max(0.5, dream["start_probability"]) and dream["predicted"] == 4
    errors = js("errors", vit, "-n", 3)
    wrong = (load_model(vit).network.scores(images.reshape(len(images), -1) / np.float32(255)).argmax(axis=1) != labels)
    assert errors["errors"] == int(wrong.sum()) and len(errors["mistakes"]) == 3
    for cmd in (["noise", vit, "--samples", 20], ["dream", vit, 4, "--steps", 5], ["errors", vit, "-n", 2]):
        ok(*cmd)


def test_no_transformer_view_imports_numba(vit, tmp_path):
    code = f"""
import sys
from typer.testing import CliRunner
from digitnet.cli import app
v = {str(vit)!r}
for args in (["attention", v, "--index", "1", "--png", {str(tmp_path / 'a.png')!r}], ["mlp", v, "--block", "1", "--neuron", "0",
             "--ablate", "0"], ["activations", v, "--index", "1"], ["summary", v, "--no-test"]):
    r = CliRunner().invoke(app, ["inspect", *args])
    assert r.exit_code == 0, (args, r.output)
assert "numba" not in sys.modules, sorted(k for k in sys.modules if "numba" in k)[:5]
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# the shipped transformer

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "attention.npz"


def test_shipped_attention_model(test_split):
    from digitnet.modelfile import load_model

    images, labels = test_split
    m = load_model(SHIPPED)
    right = m.scores(images.reshape(len(images), -1) / np.float32(255)).argmax(axis=1) == labels
    assert right.mean() >= 0.985 and m.meta["test_accuracy"] == pytest.approx(right.mean())
    out = js("attention", SHIPPED, "--index", 0)
    assert [b["heads"] for b in out["blocks"]] == [4] * 4 and out["tokens"] == 17
    assert out["predicted"] == labels[0]
    mlp = js("mlp", SHIPPED, "--block", 4, "--neuron", 0, "--top", 2)
    assert mlp["n_neurons"] == 256 and len(mlp["neurons"]) == 1
