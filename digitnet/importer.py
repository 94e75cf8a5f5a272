"""Turning a folder of the user's own images into a data set digitnet trains on.

The folder holds one sub-folder per class (``0/``, ``1/``, … or any class names); each image
in it, of any size and either polarity, is preprocessed exactly as ``digitnet predict`` does
(``preprocess.load_image`` then ``preprocess.to_mnist``: white ink on black, 20 px box,
centre of mass centred, 28×28) and stored as uint8. Class folders named by whole numbers keep
their number as the label (``7/`` is label 7, class names ``0``…``max``), so a folder of
digits lines up with MNIST models; other names are sorted and numbered from 0.

The result is an ``.npz`` in the layout ``digitnet.datasets`` reads (train_images,
train_labels, test_images, test_labels, class_names, plus the source file names), written
atomically. ``--test-split`` holds out a stratified, seeded share of each class.

Imported sets are remembered in ``user_data_dir()/imported.json`` (path, classes, counts) so
``digitnet data list`` can show them; sets written without ``--out`` go to
``user_data_dir()/imported/NAME.npz``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitnet.atomic import atomic_write, locked
from digitnet.datasets import MAX_CLASSES, user_data_dir
from digitnet.errors import DataError, UsageError
from digitnet.inputs import IMAGE_SUFFIXES   # the image files predict reads

INDEX_NAME = "imported.json"
LOCK_WAIT = 60.0          # seconds an import waits for another one to update the index


@dataclass
class ImportResult:
    """What an import produced: counts per split and class, the files it skipped and why."""

    out: Path
    class_names: tuple[str, ...]
    train_counts: list[int]
    test_counts: list[int]
    skipped: list[tuple[str, str]]

    def as_json(self) -> dict:
        return {"out": str(self.out), "class_names": list(self.class_names), "train": sum(self.train_counts),
                "test": sum(self.test_counts), "train_per_class": self.train_counts, "test_per_class": self.test_counts,
                "skipped": [{"file": f, "reason": r} for f, r in self.skipped]}


def imported_dir() -> Path:
    """Where imports go when no ``--out`` is given: ``user_data_dir()/imported``."""
    return user_data_dir() / "imported"


def scan_classes(directory: Path) -> tuple[tuple[str, ...], list[tuple[Path, int]]]:
    """Find the class folders of ``directory`` and their image files.

    Returns (class_names, [(path, label)…]) with files sorted by name within a class. Whole-
    number folder names keep their number as the label; otherwise names are sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: no such folder" if not directory.exists() else f"{directory}: not a folder")
    folders = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = {f.name: sorted(p for p in f.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                            and not p.name.startswith(".")) for f in folders}
    files = {name: paths for name, paths in files.items() if paths}
    if not files:
        loose = [p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        hint = f" ({len(loose)} images lie loose in it: sort them into class folders such as 0/, 1/ …)" if loose else ""
        raise DataError(f"{directory}: no class folders with images (expected one folder per class, e.g. 0/ … 9/){hint}")
    if len(files) < 2:
        raise DataError(f"{directory}: only one class folder with images ({next(iter(files))}/); a classifier needs at least two")
    if all(name.isdigit() for name in files):
        top = max(int(name) for name in files)
        if top >= MAX_CLASSES:
            raise DataError(f"{directory}: class folder {top}/ is beyond the {MAX_CLASSES}-class limit")
        class_names = tuple(str(i) for i in range(top + 1))
        label_of = {name: int(name) for name in files}
    else:
        class_names = tuple(sorted(files))
        label_of = {name: i for i, name in enumerate(class_names)}
    pairs = [(path, label_of[name]) for name in sorted(files, key=lambda n: label_of[n]) for path in files[name]]
    return class_names, pairs


def stratified_split(labels: np.ndarray, test_split: float, seed: int) -> np.ndarray:
    """Boolean mask (N,) of the test samples: round(test_split × n_c) of each class c, drawn
    with a seeded Generator, but never a class's last training sample."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), bool)
    if test_split <= 0:
        return test
    for c in np.unique(labels):      # a loop over classes, not samples
        members = np.flatnonzero(labels == c)
        k = min(int(round(test_split * len(members))), len(members) - 1)
        if k > 0:
            test[rng.choice(members, size=k, replace=False)] = True
    return test


def write_npz_atomic(path: Path, arrays: dict[str, np.ndarray], replace: bool = True) -> None:
    """Write ``arrays`` as a compressed .npz: a temporary file beside ``path``, then published
    (``replace=False``: FileExistsError rather than replace a file that appeared meanwhile)."""
    with atomic_write(path, replace=replace) as f:
        np.savez_compressed(f, **arrays)


def import_folder(directory: Path, out: Path | None = None, test_split: float = 0.0, seed: int = 0,
                  skip_bad: bool = False, force: bool = False, on_image=None) -> ImportResult:
    """Read ``directory`` (a folder per class), preprocess every image as predict does, split,
    and write the data set to ``out`` (default ``imported_dir()/<folder name>.npz``).

    An image that cannot be read or holds no digit raises DataError naming it, unless
    ``skip_bad`` (then it is listed in ``skipped``). ``on_image(done, total)`` reports progress.
    """
    from digitnet.preprocess import load_image, to_mnist

    if not 0 <= test_split < 1:
        raise UsageError(f"--test-split must lie in [0, 1), not {test_split}")
    directory = Path(directory)
    class_names, pairs = scan_classes(directory)
    out = Path(out) if out is not None else imported_dir() / f"{directory.resolve().name}.npz"
    if out.suffix != ".npz":
        raise UsageError(f"--out {out}: the data set file must end in .npz")
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; give a file name such as {out / 'my-digits.npz'}")
    if out.exists() and not force:
        raise UsageError(f"{out} exists; pass --force to overwrite it or choose another --out")
    if not out.parent.is_dir():
        if out.parent == imported_dir():
            out.parent.mkdir(parents=True, exist_ok=True)
        else:
            raise DataError(f"{out.parent}: no such folder for --out")

    images = np.zeros((len(pairs), 28, 28), np.uint8)
    keep = np.zeros(len(pairs), bool)
    skipped = []
    for i, (path, _) in enumerate(pairs):   # one file read per image: I/O bound, not a numeric loop
        try:
            gray = to_mnist(load_image(path))
        except DataError as e:
            message = str(e).removeprefix(f"{path}: ")
            if not skip_bad:
                raise DataError(f"{path}: {message} (pass --skip-bad to leave such images out)") from None
            skipped.append((str(path.relative_to(directory)), message))
        else:
            images[i] = np.rint(gray * 255)
            keep[i] = True
        if on_image:
            on_image(i + 1, len(pairs))
    labels = np.array([label for _, label in pairs], np.int64)[keep]
    names = np.array([str(p.relative_to(directory)) for p, _ in pairs], dtype=str)[keep]
    images = images[keep]
    if len(np.unique(labels)) < 2:
        raise DataError(f"{directory}: fewer than two classes have a readable image")
    test = stratified_split(labels, test_split, seed)
    try:
        write_npz_atomic(out, {
            "train_images": images[~test], "train_labels": labels[~test],
            "test_images": images[test], "test_labels": labels[test],
            "class_names": np.array(class_names, dtype=str),
            "train_files": names[~test], "test_files": names[test],
        }, replace=force)
    except FileExistsError:
        raise DataError(f"{out} was created by someone else while this import ran; it is kept "
                        "(pass --force to replace it, or choose another --out)") from None
    except OSError as e:
        raise DataError(f"{out}: could not write the data set ({e.strerror})") from None
    n = len(class_names)
    result = ImportResult(out, class_names, np.bincount(labels[~test], minlength=n).tolist(),
                          np.bincount(labels[test], minlength=n).tolist(), skipped)
    remember(result, directory)
    return result


def _index_path() -> Path:
    return user_data_dir() / INDEX_NAME


def read_index() -> list[dict]:
    """The imported sets remembered in ``user_data_dir()/imported.json`` (an unreadable index
    reads as empty: it is a convenience, never a reason to fail)."""
    try:
        entries = json.loads(_index_path().read_text())
    except (OSError, ValueError):
        return []
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("path"), str)] if isinstance(entries, list) else []


def remember(result: ImportResult, source: Path) -> bool:
    """Record an import in the index (replacing an older entry for the same path), atomically
    and under a lock: two imports at once both end up in it (read, change and write the index
    as one step). Returns False, without raising, when the data directory cannot be written."""
    path = str(result.out.resolve())
    index = _index_path()
    try:
        index.parent.mkdir(parents=True, exist_ok=True)
        with locked(index.with_name(INDEX_NAME + ".lock"), time.monotonic() + LOCK_WAIT):
            entries = [e for e in read_index() if e.get("path") != path]
            entries.append({"path": path, "source": str(Path(source).resolve()), "classes": list(result.class_names),
                            "train": sum(result.train_counts), "test": sum(result.test_counts),
                            "imported": time.strftime("%Y-%m-%dT%H:%M:%S")})
            with atomic_write(index) as f:
                f.write(json.dumps(entries, indent=1).encode())
    except OSError:               # TimeoutError included: a lock held for minutes is someone else's problem
        return False
    return True


def imported_sets() -> list[dict]:
    """Imported sets to list: the index's entries plus any .npz in ``imported_dir()`` it does
    not name, each with ``present`` (the file still exists) and ``size`` in bytes."""
    entries = {e["path"]: dict(e) for e in read_index()}
    if imported_dir().is_dir():
        for p in sorted(imported_dir().glob("*.npz")):
            entries.setdefault(str(p.resolve()), {"path": str(p.resolve())})
    out = []
    for path, e in entries.items():
        p = Path(path)
        e["present"] = p.is_file()
        e["size"] = p.stat().st_size if e["present"] else 0
        e["name"] = p.stem
        out.append(e)
    return out
