"""``digitnet inspect``: every subcommand through CliRunner (plain text, 80 columns), its JSON,
--png files, errors as one line, determinism, no numba on any inspect path, and a real
subprocess of the console script."""

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
SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples" / "user-digits"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _eighty_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")


def run(*args):
    return runner.invoke(app, ["inspect", *map(str, args)])


def ok(*args) -> str:
    r = run(*args)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    assert "\x1b[" not in r.output                       # not a terminal: plain text
    return r.output


def js(*args) -> dict:
    r = run(*args)
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_summary(tiny_model):
    out = ok("summary", tiny_model)
    assert "784 -> 32 -> 10" in out and "25,450" in out
    assert "cost per epoch" in out and "accuracy per epoch" in out and "embedded" in out
    info = js("summary", tiny_model, "--json")
    assert info["parameters"] == 25450 and info["sizes"] == [784, 32, 10]
    assert 0.5 < info["test_accuracy"] <= 1
    assert js("summary", tiny_model, "--json", "--no-test")["test_accuracy"] is None


def test_weights_first_layer_grid_and_png(tiny_model, tmp_path):
    from PIL import Image

    out = ok("weights", tiny_model, "--neurons", "0:5")
    assert all(f"#{i} ±" in out for i in range(5)) and "#5 ±" not in out
    png = tmp_path / "w.png"
    ok("weights", tiny_model, "--neurons", "0:16", "--png", png)
    with Image.open(png) as im:          # 16 pictures: a 4 × 4 grid of 28·4 px tiles, 2 px apart
        assert im.size == (4 * 112 + 3 * 2, 4 * 112 + 3 * 2) and im.mode == "RGB"
    ok("weights", tiny_model, "--neurons", "3", "--png", png)
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


def test_noise_json_and_determinism(tiny_model):
    data = js("noise", tiny_model, "--samples", "500", "--json")
    assert {"samples", "mean_confidence", "class_counts"} <= set(data)
    assert data["samples"] == 500 and sum(data["class_counts"].values()) == 500 and 0 < data["mean_confidence"] <= 1
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


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="no shared sample digits")
def test_activations_from_an_image_file(tiny_model):
    image = sorted(SAMPLES.glob("3_*.png"))[0]
    out = ok("activations", tiny_model, image)
    assert str(image.name) in out and "layer 1" in out


def test_no_inspect_path_imports_numba(tiny_model, tmp_path):
    """Every inspect command in one fresh interpreter; numba must never be imported."""
    image = next(iter(sorted(SAMPLES.glob("*.png"))), None) if SAMPLES.is_dir() else None
    code = f"""
import sys
from typer.testing import CliRunner
from digitnet.cli import app
m = {str(tiny_model)!r}
calls = [["summary", m], ["weights", m, "--png", {str(tmp_path / 'w.png')!r}], ["activations", m, "--index", "1"],
         ["noise", m, "--samples", "50"], ["dream", m, "1", "--steps", "5"], ["errors", m, "--limit", "2"]]
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
