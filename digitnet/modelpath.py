"""Which model file: the one shipped with digitnet, where ``digitnet train`` writes, and the
one rule for the model used when none is named, by every command and the drawing page alike.

Imports nothing heavy (no numpy), so the CLI can state the rule in ``--help`` and apply it
before a command loads anything.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "DIGITNET_MODEL"
# Where `digitnet train` writes by default, relative to the current folder: the model the
# other commands then use.
TRAIN_OUT = Path("models") / "digitnet.npz"
RULE = f"${ENV}, else ./{TRAIN_OUT.as_posix()} (where train writes) if it exists, else the shipped model"


def shipped_model() -> Path:
    """The default model shipped with digitnet: inside the installed package, or in
    ``models/`` of a checkout (that path, even if missing, so the load error names it)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "models" / "digitnet.npz", here.parent / "models" / "digitnet.npz"):
        if candidate.is_file():
            return candidate
    return here.parent / "models" / "digitnet.npz"


def default_model() -> Path:
    """The model used when none is named: ``$DIGITNET_MODEL`` (if set and not empty), else
    ``./models/digitnet.npz`` in the current folder if it exists (what ``digitnet train``
    just wrote), else the shipped model."""
    env = os.environ.get(ENV)
    if env:
        return Path(env)
    if TRAIN_OUT.is_file():
        return TRAIN_OUT
    return shipped_model()
