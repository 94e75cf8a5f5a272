"""The models the drawing page offers, each known to clients only by a short id.

They are, in this order: the model files given on the command line, the default model (the
one every command uses when none is named: ``digitnet.modelpath.default_model``), the other
shipped models, and the ``.npz`` files under ``./models/``; a file reached twice is listed
once. Clients choose by id from ``GET /api/models``, so no path ever comes from a request.
Models named on the command line are loaded (and checked) at once; the others on first use,
or by ``warm()`` in the background.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from digitnet.errors import DigitnetError, ModelError, UsageError

MAX_LISTED = 100        # .npz files taken from one folder
WARM = 12               # models loaded in the background at start-up


@dataclass
class Entry:
    """One offered model: its id, file, where it came from, and once loaded the Model and its
    views (or the one-line reason it could not be loaded)."""

    id: str
    path: Path
    source: str
    model: object | None = None
    views: list | None = None
    error: str | None = None
    dreams: dict = field(default_factory=dict)      # digit -> the dream response (dreams are deterministic)


def _slug(path: Path) -> str:
    return re.sub(r"[^a-z0-9]+", "-", path.stem.lower()).strip("-")[:40] or "model"


def _shipped_dir() -> Path:
    """The folder of the shipped models: where modelpath finds the shipped default one."""
    from digitnet.modelpath import shipped_model

    return shipped_model().parent


def _npz_files(folder: Path | None) -> list[Path]:
    if folder is None or not folder.is_dir():
        return []
    try:
        return sorted(p for p in folder.iterdir() if p.suffix == ".npz" and p.is_file() and not p.name.startswith("."))[:MAX_LISTED]
    except OSError:
        return []


class Catalog:
    """The offered models by id (insertion order is the page's order) and the default one."""

    def __init__(self, entries: list[Entry], default: str):
        self.entries = {e.id: e for e in entries}
        self.default = default
        self._lock = threading.Lock()

    @classmethod
    def discover(cls, paths=(), cwd: Path | None = None, default: Path | None = None) -> Catalog:
        """Collect the models (see the module's docstring). Models in ``paths`` are loaded now:
        a bad one raises ModelError/DataError, as any command that is given a model file does.
        ``default``: the model the other commands would use (listed after ``paths``); when not
        given, chosen by their rule, modelpath.default_model() (in the process's current folder; ``cwd``
        is only where ``models/`` is listed from)."""
        from digitnet.modelpath import default_model

        cwd = Path.cwd() if cwd is None else Path(cwd)
        found: list[tuple[Path, str]] = [(Path(p), "command line") for p in paths]
        default_path = Path(default) if default is not None else default_model()
        if default_path.is_file():
            found.append((default_path, "default"))
        found += [(p, "shipped") for p in _npz_files(_shipped_dir())]
        found += [(p, "models/") for p in _npz_files(cwd / "models")]
        entries: list[Entry] = []
        seen: set[Path] = set()
        ids: set[str] = set()
        for path, source in found:
            try:
                key = path.resolve()
            except OSError:
                key = path.absolute()
            if key in seen:
                continue
            seen.add(key)
            base = _slug(path)
            mid, n = base, 2
            while mid in ids:
                mid, n = f"{base}-{n}", n + 1
            ids.add(mid)
            entries.append(Entry(mid, path, source))
        if not entries:
            raise UsageError("no models to show: name one (digitnet draw MODEL.npz) or train one with 'digitnet train'")
        catalog = cls(entries, entries[0].id)
        for e in entries:
            if e.source == "command line":
                catalog.load(e, strict=True)
        catalog.load(entries[0])         # the page's first model answers without a wait
        return catalog

    def load(self, entry: Entry, strict: bool = False) -> Entry:
        """Load ``entry``'s model once (thread-safe). A failure is remembered as ``entry.error``;
        with ``strict`` it is raised instead."""
        from digitnet.modelfile import load_model
        from digitnet.serve.views import network_views

        if entry.model is not None or entry.error is not None:
            return entry                  # settled: no lock, so a slow load elsewhere never delays an answer
        with self._lock:
            if entry.model is None and entry.error is None:
                try:
                    model = load_model(entry.path)
                    entry.views = network_views(model.network)
                    entry.model = model
                except DigitnetError as e:
                    if strict:
                        raise
                    entry.error = str(e)
                except Exception as e:                 # a file that vanished, or a network the page cannot draw
                    if strict:
                        raise ModelError(f"{entry.path}: cannot be shown ({type(e).__name__}: {e})") from None
                    entry.error = f"{entry.path.name}: cannot be shown ({type(e).__name__}: {e})"
        return entry

    def warm(self) -> None:
        """Load the first WARM models (run in a background thread, so switching to them is
        instant); the others load when first chosen."""
        for e in list(self.entries.values())[:WARM]:
            self.load(e)

    def get(self, mid: str | None) -> Entry | None:
        """The entry for an id (the default for None), loaded; None for an unknown id."""
        entry = self.entries.get(self.default if mid is None else mid)
        return None if entry is None else self.load(entry)

    def ids(self) -> list[str]:
        return list(self.entries)
