"""The drawing page's catalog takes where the shipped models live from digitnet.modelpath
(the one rule), and its docstrings name functions that exist."""

from __future__ import annotations

import importlib
import inspect
import re
import shutil

from digitnet import modelpath
from digitnet.serve import catalog as catalog_module
from digitnet.serve.catalog import Catalog


def test_the_shipped_models_are_listed_from_where_modelpath_finds_the_default(tmp_path, monkeypatch, tiny_model):
    """Move the shipped default (modelpath.shipped_model) to another folder: the catalog lists
    that folder's models as shipped, and nothing from the package's own models/."""
    shipped = tmp_path / "elsewhere"
    shipped.mkdir()
    for name in ("digitnet.npz", "other.npz"):
        shutil.copy(tiny_model, shipped / name)
    monkeypatch.setattr(modelpath, "shipped_model", lambda: shipped / "digitnet.npz")
    monkeypatch.delenv("DIGITNET_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)                        # no ./models/ here
    entries = Catalog.discover().entries.values()
    assert sorted((e.path.name, e.source) for e in entries if e.source == "shipped") == [("other.npz", "shipped")]
    assert {e.path.parent.resolve() for e in entries} == {shipped.resolve()}


def test_the_catalogs_docstrings_name_functions_that_exist():
    """Every ``digitnet.module.name`` the module's docstrings mention is defined in that
    module (not merely imported there: a pointer to where the rule lives, not to a user)."""
    docs = [catalog_module.__doc__] + [inspect.getdoc(o) or "" for o in vars(catalog_module).values()
                                       if inspect.isfunction(o) or inspect.isclass(o)]
    docs += [inspect.getdoc(m) or "" for m in vars(Catalog).values() if callable(m) or isinstance(m, classmethod)]
    named = set(re.findall(r"\bdigitnet(?:\.\w+)+", "\n".join(docs)))
    assert named, "the test must see the references it checks"
    for dotted in named:
        module, _, name = dotted.rpartition(".")
        obj = getattr(importlib.import_module(module), name, None)
        assert obj is not None and getattr(obj, "__module__", module) == module, dotted
