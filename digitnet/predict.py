"""Prediction over any inputs: read them in batches, run the NumPy forward pass, yield one row each.

The library behind ``digitnet predict``. Rows come out in input order, one per image (an
array or IDX file gives one row per image in it), as soon as their batch is predicted, so a
caller can stream them. A bad input is a row with ``error`` set, never an exception.
Nothing here imports numba: only the model file and ``Model.scores``.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from digitnet.errors import ModelError, UsageError
from digitnet.inputs import ARRAY_CHUNK, IMAGE_CHUNK, entry_name, iter_batches
from digitnet.modelfile import Model

# Below this confidence an answer is flagged: the network's top score is not a guarantee
# (it is confidently wrong on noise), but a low one is a sure sign of doubt.
LOW_CONFIDENCE = 0.6


@dataclass
class Row:
    """One prediction: the input it came from, its ``index`` in that input (a row of an
    array, IDX or CSV file; None for an image file), the label, its class name, its
    confidence, the top-k (label, score) pairs; ``probs`` (n_classes,) and ``image`` (the
    H×W input the network saw) when asked for; ``warning``, the reasons to doubt the answer
    (``digitnet.doubt``), or None; or ``error`` (and nothing else) when the input failed."""

    input: str
    index: int | None = None
    label: int | None = None
    name: str | None = None
    confidence: float | None = None
    top: list[tuple[int, float]] = field(default_factory=list)
    probs: np.ndarray | None = None
    image: np.ndarray | None = None
    steps: list | None = None      # the preprocessing's steps, (title, picture), for --show
    error: str | None = None
    warning: str | None = None      # why the answer is doubtful (digitnet.doubt), or None

    @property
    def entry(self) -> str:
        """``input``, or ``input[index]`` for a row of a file: how messages name it."""
        return entry_name(self.input, self.index)

    @property
    def low_confidence(self) -> bool:
        """True when the top score is below LOW_CONFIDENCE."""
        return self.confidence is not None and self.confidence < LOW_CONFIDENCE


def preprocessor(model: Model, preprocess: bool = True):
    """The function (gray (H, W) -> model input (h, w)) for image files: the model's own
    preprocessing (its metadata names it), or a plain resize when ``preprocess`` is False."""
    from digitnet.preprocess import PREPROCESSORS, resize_plain

    h, w = model.input_shape
    if h != w:
        raise ModelError(f"{model.path}: input shape {h}×{w} is not square; image preprocessing needs a square input")
    if not preprocess:
        return functools.partial(resize_plain, size=h)
    fn = PREPROCESSORS.get(model.preprocessing)
    if fn is None:
        raise ModelError(f"{model.path}: unknown preprocessing {model.preprocessing!r} (known: {', '.join(PREPROCESSORS)})")
    return functools.partial(fn, size=h)


def predict_inputs(model: Model, inputs: Iterable[str], *, preprocess: bool = True, top_k: int = 3,
                   keep_probs: bool = False, keep_images: bool = False, keep_steps: bool = False, stdin=None,
                   image_chunk: int = IMAGE_CHUNK, array_chunk: int = ARRAY_CHUNK) -> Iterator[Row]:
    """Predict every input (paths, directories, ``-``, .npy, IDX, CSV: see digitnet.inputs)
    and yield one Row per image, in input order, batch by batch.

    ``top_k`` pairs are kept per row (1 ≤ top_k ≤ n_classes); ``keep_probs`` keeps the score
    vector, ``keep_images`` the input the network saw, ``keep_steps`` the preprocessing's
    steps before it for an image (``preprocess.panels_of``, made as the image is prepared:
    no second read; for ``--show``).
    """
    n_classes = len(model.class_names)
    if not 1 <= top_k <= n_classes:
        raise UsageError(f"--top-k must be between 1 and {n_classes}, got {top_k}")
    from digitnet.doubt import warnings
    from digitnet.preprocess import panels_of

    prep = preprocessor(model, preprocess)
    pending: collections.deque = collections.deque()   # the preprocessing's notes, one per image decoded

    def prep_noting(gray):
        notes: dict = {}
        steps: dict | None = {} if keep_steps else None
        x = prep(gray, notes=notes, steps=steps)
        if keep_steps:                  # small pictures now: the steps themselves may be photo-sized
            notes["panels"] = panels_of(gray, steps, x)[:-1]
        pending.append(notes)
        return x

    for batch in iter_batches(inputs, model.input_shape, prep_noting, stdin=stdin,
                              image_chunk=image_chunk, array_chunk=array_chunk):
        with np.errstate(over="ignore", invalid="ignore"):
            p = model.scores(batch.images)                                # (k, n_classes)
        finite = np.isfinite(p).all(axis=1)                               # (k,): a NaN score is never an answer
        p = np.where(finite[:, None], p, 0)
        notes = _batch_notes(batch, pending)
        panels = [n.pop("panels", None) if n else None for n in notes]
        warning = warnings(model, batch.images, p, notes)
        order = np.argsort(-p, axis=1, kind="stable")[:, :top_k]          # (k, top_k)
        top_p = np.take_along_axis(p, order, axis=1)                      # (k, top_k)
        labels, conf = order[:, 0].tolist(), top_p[:, 0].tolist()
        order_l, top_l = order.tolist(), top_p.tolist()
        for i, (source, index) in enumerate(zip(batch.sources, batch.indices)):
            if batch.errors[i] is not None or not finite[i]:
                yield Row(source, index, error=batch.errors[i] or "the model's scores for it are not finite numbers "
                                                                   "(its weights overflow on this input)")
                continue
            yield Row(source, index, labels[i], model.class_names[labels[i]], conf[i],
                      list(zip(order_l[i], top_l[i])),
                      p[i] if keep_probs else None, batch.images[i] if keep_images else None, panels[i],
                      warning=warning[i])


def _batch_notes(batch, pending: collections.deque) -> list[dict | None]:
    """The preprocessing's notes per entry of ``batch``: a dict for each image file decoded
    (``iter_batches`` preprocesses them in order and yields them in that order, so the notes
    queued since the last batch are this batch's), None for array rows and failed entries."""
    decoded = [i for i, (index, error) in enumerate(zip(batch.indices, batch.errors)) if index is None and error is None]
    notes: list[dict | None] = [None] * len(batch.errors)
    if len(pending) != len(decoded):            # never expected: rather no notes than another image's
        pending.clear()
        pending.extend({} for _ in decoded)
    for i in decoded:
        notes[i] = pending.popleft()
    return notes
