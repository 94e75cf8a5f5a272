"""Evaluating a model on labelled inputs: a data set split, a folder of class folders (as
``data import`` reads), or a CSV whose first column is the true label. The library behind
``digitnet evaluate``.

Every source is read in batches and scored batch by batch (``metrics.Tally``), so memory does
not grow with the number of samples; only the ``keep`` most confidently wrong samples are kept
(for ``--show``). Images of a folder go through predict's reader and the model's own
preprocessing (``inputs.iter_batches`` with ``predict.preprocessor``): an image that cannot be
read is a failure listed with its reason, never the end of the run. Nothing here imports numba.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitnet.errors import DataError, UsageError
from digitnet.inputs import ARRAY_CHUNK, IMAGE_CHUNK, csv_rows, entry_name, iter_batches
from digitnet.metrics import Tally


@dataclass
class Mistake:
    """A wrong answer: where it came from, the true and predicted labels, the model's
    confidence in its answer (its class score) and the image it saw (H, W) in [0, 1]."""

    input: str
    index: int | None
    true: int
    predicted: int
    confidence: float
    image: np.ndarray

    @property
    def entry(self) -> str:
        return entry_name(self.input, self.index)


@dataclass
class Evaluation:
    """A report (see ``metrics.report``), what was evaluated (``data``, ``kind``: "dataset",
    "folder" or "csv", ``description`` for a title), the ``keep`` most confident mistakes
    (most confident first), the inputs that could not be read as (name, index, reason), and
    warnings worth a line (the data's classes are not the model's, …)."""

    report: dict
    data: str
    kind: str
    description: str
    mistakes: list[Mistake] = field(default_factory=list)
    failures: list[tuple[str, int | None, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Batch:
    sources: list[str]
    indices: list[int | None]
    images: np.ndarray            # (k, H, W) float32 in [0, 1]
    labels: np.ndarray            # (k,) int64, model class indices; -1 where the entry failed
    errors: list[str | None]


def source_kind(spec: str) -> str:
    """"folder" for a folder of class folders, "csv" for a .csv(.gz) file, else "dataset"
    (a data set name, a folder of IDX files or an .npz: whatever ``--data`` takes)."""
    from digitnet.datasets import KNOWN, find_idx_files

    path = Path(spec).expanduser()
    if spec in KNOWN or spec in ("embedded", "fonts"):
        return "dataset"
    name = path.name.lower()
    if path.is_file() and (name.endswith(".csv") or name.endswith(".csv.gz")):
        return "csv"
    if path.is_dir() and not find_idx_files(path):
        return "folder"
    return "dataset"


def _dataset_batches(model, spec: str, split: str, chunk: int, warnings: list[str]):
    from digitnet.analysis import load_split
    from digitnet.nn.functions import to_unit_float

    images, labels, ds = load_split(model, spec, split)
    if tuple(ds.class_names) != tuple(model.class_names):
        warnings.append(f"{spec}: its classes ({', '.join(ds.class_names[:4])}, …) are not the model's "
                        f"({', '.join(model.class_names[:4])}, …): the labels are compared by number")
    source = f"{ds.name}:{split}"

    def batches():
        for i in range(0, len(labels), chunk):
            k = len(labels[i:i + chunk])
            yield _Batch([source] * k, list(range(i, i + k)), to_unit_float(images[i:i + chunk]),
                         labels[i:i + chunk].astype(np.int64), [None] * k)

    return batches(), f"the {split} split of {ds.name} ({len(labels):,} images)"


def _folder_labels(directory: Path, model) -> tuple[list[tuple[Path, int]], str]:
    """(path, model class index) for every image of a folder of class folders: folders named
    by whole numbers are that label; other names must be one of the model's class names
    (letter case aside)."""
    from digitnet.importer import scan_classes

    names, pairs = scan_classes(directory)
    n = len(model.class_names)
    by_name = {c.lower(): i for i, c in enumerate(model.class_names)}
    to_model = {}
    for label in sorted({lab for _, lab in pairs}):
        folder = names[label]
        if folder.isdigit():
            to_model[label] = int(folder)
        elif folder.lower() in by_name:
            to_model[label] = by_name[folder.lower()]
        else:
            raise DataError(f"{directory}: class folder {folder}/ is not one of the model's classes "
                            f"({', '.join(model.class_names)}); name folders by class number or class name")
        if to_model[label] >= n:
            raise DataError(f"{directory}: class folder {folder}/ is beyond the model's {n} classes (0 to {n - 1})")
    return [(p, to_model[lab]) for p, lab in pairs], f"{len(pairs):,} image files in {len(to_model)} class folders"


def _folder_batches(model, directory: Path, preprocess: bool, chunk: int):
    from digitnet.predict import preprocessor

    pairs, what = _folder_labels(directory, model)
    prep = preprocessor(model, preprocess)

    def batches():
        labels = iter([lab for _, lab in pairs])
        for b in iter_batches([str(p) for p, _ in pairs], model.input_shape, prep, image_chunk=chunk):
            yield _Batch(b.sources, b.indices, b.images, np.fromiter(itertools.islice(labels, len(b.sources)), np.int64),
                         b.errors)

    return batches(), what


def _csv_batches(model, path: Path, chunk: int):
    n = len(model.class_names)

    def batches():
        start = 0
        for images, errors, labels in csv_rows(path, model.input_shape, chunk, labels=True):
            k = len(images)
            errors = list(errors)
            for i in np.flatnonzero((labels < 0) | (labels >= n)):
                if errors[i] is None:
                    errors[i] = f"its label is not a class of the model (a whole number from 0 to {n - 1})"
            yield _Batch([str(path)] * k, list(range(start, start + k)), images.reshape(k, *model.input_shape),
                         labels, errors)
            start += k

    return batches(), "labelled rows"


def evaluate_on(model, data: str | None = None, split: str = "test", keep: int = 0, preprocess: bool = True,
                chunk: int | None = None) -> Evaluation:
    """Evaluate ``model`` on ``data`` (default: its own data set; see source_kind) and keep
    its ``keep`` most confident mistakes. A data set's ``split`` is used; a folder or CSV is
    evaluated whole. Inputs that cannot be read are listed in ``failures`` and left out of
    the report; when nothing at all could be read, DataError."""
    if split not in ("test", "train"):
        raise UsageError(f"--split must be test or train, not {split!r}")
    spec = data or model.data_spec
    kind = source_kind(spec)
    warnings: list[str] = []
    if kind == "dataset":
        batches, description = _dataset_batches(model, spec, split, chunk or ARRAY_CHUNK * 2, warnings)
    elif kind == "folder":
        batches, description = _folder_batches(model, Path(spec), preprocess, chunk or IMAGE_CHUNK)
    else:
        batches, description = _csv_batches(model, Path(spec), chunk or ARRAY_CHUNK)
    tally = Tally(model.network, len(model.class_names))
    failures: list[tuple[str, int | None, str]] = []
    heap: list[tuple[float, int, Mistake]] = []        # the `keep` most confident mistakes (a min-heap)
    counter = itertools.count()
    for b in batches:
        ok = np.array([e is None for e in b.errors], bool)
        failures += [(s, i, e) for s, i, e, good in zip(b.sources, b.indices, b.errors, ok) if not good]
        if not ok.any():
            continue
        x, y = b.images[ok], b.labels[ok]
        with np.errstate(over="ignore", invalid="ignore"):
            a_L = model.predict_proba(x)                                   # (k, n_classes)
        finite = np.isfinite(a_L).all(axis=1)
        if not finite.all():
            where = np.flatnonzero(ok)[~finite]
            failures += [(b.sources[j], b.indices[j], "the model's scores for it are not finite numbers") for j in where]
            x, y, a_L, where_ok = x[finite], y[finite], a_L[finite], np.flatnonzero(ok)[finite]
        else:
            where_ok = np.flatnonzero(ok)
        if not len(y):
            continue
        predicted = tally.add(a_L, y)
        wrong = np.flatnonzero(predicted != y)
        if keep and len(wrong):
            confidence = model.scores(x[wrong])[np.arange(len(wrong)), predicted[wrong]]
            for w, c in zip(wrong, confidence.tolist()):
                j = where_ok[w]
                item = (c, -next(counter))
                if len(heap) < keep or item > heap[0][:2]:
                    m = Mistake(b.sources[j], b.indices[j], int(y[w]), int(predicted[w]), c, x[w].copy())
                    (heapq.heappush if len(heap) < keep else heapq.heapreplace)(heap, (*item, m))
    if tally.cm.sum() == 0:
        why = f"; the first: {entry_name(*failures[0][:2])}: {failures[0][2]}" if failures else ""
        raise DataError(f"{spec}: nothing to evaluate ({len(failures):,} inputs could not be read{why})")
    mistakes = [m for _, _, m in sorted(heap, key=lambda t: (-t[0], -t[1]))]
    return Evaluation(tally.report(model.class_names), spec, kind, description, mistakes, failures, warnings)

