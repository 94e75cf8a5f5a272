"""The one rule for the model used when none is named (digitnet.modelpath), and that every
caller, library, commands and help, goes through it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from digitnet import modelpath
from digitnet.modelpath import default_model, shipped_model

ROOT = Path(__file__).resolve().parents[1]
CHECKOUT_MODEL = ROOT / "models" / "digitnet.npz"


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A current folder outside the repository, with no $DIGITNET_MODEL."""
    monkeypatch.delenv("DIGITNET_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_shipped_model_does_not_depend_on_the_current_folder(elsewhere, monkeypatch):
    assert shipped_model() == CHECKOUT_MODEL and shipped_model().is_file()
    monkeypatch.setenv("DIGITNET_MODEL", str(elsewhere / "x.npz"))
    assert shipped_model() == CHECKOUT_MODEL


def test_outside_the_repository_the_shipped_model_until_train_writes_one(elsewhere, tiny_model):
    assert default_model() == CHECKOUT_MODEL
    (elsewhere / "models").mkdir()
    shutil.copy(tiny_model, elsewhere / "models" / "digitnet.npz")
    assert default_model().resolve() == (elsewhere / "models" / "digitnet.npz").resolve()


def test_digitnet_model_comes_first_and_an_empty_one_is_unset(elsewhere, tiny_model, monkeypatch):
    (elsewhere / "models").mkdir()
    shutil.copy(tiny_model, elsewhere / "models" / "digitnet.npz")
    monkeypatch.setenv("DIGITNET_MODEL", str(elsewhere / "mine.npz"))
    assert default_model() == elsewhere / "mine.npz"          # even before it exists: its load error names it
    monkeypatch.setenv("DIGITNET_MODEL", "")
    assert default_model().resolve() == (elsewhere / "models" / "digitnet.npz").resolve()


def test_the_library_and_the_commands_use_the_same_rule(elsewhere, tiny_model):
    """modelfile's older name and the CLI's default are the rule itself, not copies of it:
    with ./models/digitnet.npz present, all three choose it (the old modelfile rule did not)."""
    from digitnet.cli.common import default_model as cli_default, pick_model
    from digitnet.modelfile import default_model_path

    (elsewhere / "models").mkdir()
    shutil.copy(tiny_model, elsewhere / "models" / "digitnet.npz")
    chosen = {p().resolve() for p in (default_model, default_model_path, cli_default, pick_model)}
    assert chosen == {(elsewhere / "models" / "digitnet.npz").resolve()}


def test_only_modelpath_reads_digitnet_model():
    """One place for the rule: no other module of the package reads $DIGITNET_MODEL."""
    readers = [p.relative_to(ROOT).as_posix() for p in (ROOT / "digitnet").rglob("*.py")
               if re.search(r"environ(\.get)?[\[(]\s*['\"]DIGITNET_MODEL|getenv\(\s*['\"]DIGITNET_MODEL|\bENV\b.*DIGITNET_MODEL",
                            p.read_text(encoding="utf-8"))]
    assert readers == ["digitnet/modelpath.py"]


def _commands_taking_a_model():
    """Every command with a --model option, found in the app (so a new command is covered)."""
    import typer.main

    from digitnet.cli import app

    def walk(group, prefix=()):
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                yield from walk(cmd, prefix + (name,))
            elif any("--model" in p.opts for p in cmd.params):
                yield prefix + (name,)

    return sorted(walk(typer.main.get_command(app)))


HELP = _commands_taking_a_model()


def test_the_commands_taking_a_model_are_found():
    assert {("predict",), ("evaluate",), ("draw",), ("inspect", "summary"), ("inspect", "errors")} <= set(HELP)


@pytest.mark.parametrize("path", HELP, ids=[" ".join(p) for p in HELP])
def test_help_states_the_rule(path):
    """Every command that takes a model says, in --help, which one it uses when none is named."""
    from digitnet.cli import app

    out = " ".join(CliRunner().invoke(app, [*path, "--help"], terminal_width=80).output.split())
    assert "$DIGITNET_MODEL, else ./models/digitnet.npz" in out and "the shipped" in out, out


def test_a_missing_model_named_by_the_variable_says_where_it_came_from(tmp_path):
    """$DIGITNET_MODEL naming a file that is gone: the one error line says the variable chose
    it; a model named on the command line is reported as it is."""
    import cli_helpers

    gone = tmp_path / "gone.npz"
    for args in (["evaluate"], ["predict", str(CHECKOUT_MODEL)], ["inspect", "summary", "--no-test"]):
        r = cli_helpers.run(args, cwd=tmp_path, DIGITNET_MODEL=gone)
        assert r.returncode == 1 and r.stderr.decode() == f"digitnet: error: {gone}: no such file (the model $DIGITNET_MODEL names)\n"
    r = cli_helpers.run(["evaluate", "-m", tmp_path / "other.npz"], cwd=tmp_path, DIGITNET_MODEL=gone)
    assert r.stderr.decode() == f"digitnet: error: {tmp_path / 'other.npz'}: no such file\n"
