"""The drawing page's catalog of models: its default is the one every command uses."""

from __future__ import annotations

import shutil
from pathlib import Path

from digitnet.cli.common import pick_model
from digitnet.modelfile import default_model_path
from digitnet.serve.catalog import Catalog


def _default(catalog: Catalog) -> tuple[Path, str]:
    entry = catalog.entries[catalog.default]
    return entry.path.resolve(), entry.source


def test_the_default_is_the_model_train_wrote_in_this_folder(tmp_path, monkeypatch, tiny_model):
    """After `digitnet train` in a folder (./models/digitnet.npz), the page starts on that
    model, as predict and evaluate do, not on the shipped one."""
    monkeypatch.delenv("DIGITNET_MODEL", raising=False)
    (tmp_path / "models").mkdir()
    shutil.copy(tiny_model, tmp_path / "models" / "digitnet.npz")
    monkeypatch.chdir(tmp_path)
    catalog = Catalog.discover()
    assert _default(catalog) == ((tmp_path / "models" / "digitnet.npz").resolve(), "default")
    assert _default(catalog)[0] == pick_model().resolve()


def test_the_default_follows_digitnet_model_then_falls_back_to_the_shipped_one(tmp_path, monkeypatch, tiny_model):
    mine = tmp_path / "mine.npz"
    shutil.copy(tiny_model, mine)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIGITNET_MODEL", str(mine))
    assert _default(Catalog.discover()) == (mine.resolve(), "default")
    monkeypatch.delenv("DIGITNET_MODEL")
    assert _default(Catalog.discover()) == (default_model_path().resolve(), "default")
