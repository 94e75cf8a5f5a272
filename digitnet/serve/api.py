"""The JSON API behind the drawing page, apart from HTTP: one call ``handle(...)`` takes a
method, a path, the query, a content type and a body, and returns (status, JSON object).

    GET  /api/models                         the offered models and the default one's id
    GET  /api/models/ID                      one model: architecture and the page's columns
    GET  /api/models/ID/weights?layer=L&unit=U   what feeds unit U of column L
    POST /api/predict[?model=ID]             an image (PNG, JPEG, …) or {"pixels": [784 numbers]}
    POST /api/noise   {"model": ID, "seed": N}   random pixels, and what the network says
    POST /api/dream   {"model": ID, "digit": D}  gradient ascent on the pixels for class D

An image goes through the same loader and the model's own preprocessing as ``digitnet
predict``; pixels are taken as they are (values 0-1, white ink on black), as predict takes
arrays. Every failure is an ``ApiError`` with a 4xx status and a one-line message. Models
are chosen by id only (see ``catalog``): nothing in a request names a file.
"""

from __future__ import annotations

import io
import json
import threading
import warnings

import numpy as np

from digitnet.errors import DigitnetError
from digitnet.serve.catalog import Catalog, Entry
from digitnet.serve.views import class_token_attention, incoming_weights, strongest_links, view_values

# Decoding is refused above this many pixels (from the header, before decoding): a PNG of a
# few kilobytes can declare 100 megapixels, and the page sends 280×280.
MAX_IMAGE_PIXELS = 16_000_000
NOISE_SAMPLES = 256
DREAM = {"steps": 200, "restarts": 4}       # inspect dream's defaults
DECIMALS = 4                                # activations and scores in responses

_dreaming = threading.Lock()                # one gradient ascent at a time: it keeps a core busy for ~0.5 s


class ApiError(Exception):
    """A request the API refuses: ``status`` (4xx) and a one-line ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------------------------------
# Describing models

def _kind(net) -> str:
    types = {layer.type for layer in net.layers}
    if types & {"patch", "block"}:
        return "attention"
    if "conv" in types:
        return "conv"
    return "dense" if types <= {"flatten", "dense", "activation", "dropout"} else "other"


def _architecture(net) -> str:
    from digitnet.nn.spec import describe_layers

    mlp = net.mlp()
    if mlp is not None:
        sizes, hidden, output = mlp
        return "-".join(map(str, sizes)) + (f", {hidden}" if len(sizes) > 2 else "") + f", {output} output"
    return f"{describe_layers(net.layers)} → {net.n_outputs}, {net.output} output"


def summary(entry: Entry, default: bool) -> dict:
    """One model as ``GET /api/models`` lists it (its file's name, never its path)."""
    out = {"id": entry.id, "file": entry.path.name, "source": entry.source, "default": default,
           "loaded": entry.model is not None, "error": entry.error}
    m = entry.model
    if m is not None:
        acc = m.meta.get("test_accuracy")
        out.update(architecture=_architecture(m.network), kind=_kind(m.network), parameters=m.network.n_params,
                   preset=m.meta.get("preset"), dataset=m.data_spec,
                   test_accuracy=acc if isinstance(acc, (int, float)) and not isinstance(acc, bool) else None)
    return out


def describe(entry: Entry, default: bool) -> dict:
    """One model as ``GET /api/models/ID`` gives it: the summary, class names, input shape,
    preprocessing, and the columns the page draws (``layers``, the input first)."""
    m = entry.model
    return {**summary(entry, default), "classes": list(m.class_names), "input_shape": list(m.input_shape),
            "preprocessing": m.preprocessing, "output": m.network.output,
            "layers": [v.to_json() for v in entry.views]}


# ---------------------------------------------------------------------------------------------
# Predicting

def _floats(a: np.ndarray) -> list:
    return np.round(np.asarray(a, np.float64).reshape(-1), DECIMALS).tolist()


def run(entry: Entry, x: np.ndarray, activations: bool = True) -> dict:
    """The network's answer for one input x (H, W) in [0, 1]: label, class name, confidence,
    the class scores (``Model.scores``, what predict shows), the input itself, and with
    ``activations`` every column's values, the strongest links between columns and, for a
    transformer, where its class token looks (``views.class_token_attention``). One forward
    pass either way."""
    model, net = entry.model, entry.model.network
    row = np.ascontiguousarray(x, np.float32).reshape(1, -1)
    outs = net.feedforward(row) if activations else None                  # [a_0 = x, a_1, …, a_L]
    scores = (net.scores_from(outs[-1].copy()) if activations else model.scores(row))[0]   # (n_classes,)
    label = int(np.argmax(scores))
    out = {"model": entry.id, "label": label, "name": model.class_names[label],
           "confidence": round(float(scores[label]), 6), "scores": _floats(scores),
           "input": _floats(row), "input_shape": list(model.input_shape)}
    if activations:
        out["activations"] = [{"layer": i, "name": v.name, "shape": list(v.shape), "values": _floats(a)}
                              for i, (v, a) in enumerate(zip(entry.views, view_values(entry.views, outs)))]
        out["links"] = strongest_links(net, entry.views, outs)
        attention = class_token_attention(net, outs)
        if attention is not None:
            out["attention"] = attention
    return out


def _check_size(data: bytes) -> None:
    """Refuse an image whose header declares more than MAX_IMAGE_PIXELS (nothing is decoded)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
    except Image.DecompressionBombError:
        w = h = MAX_IMAGE_PIXELS
    except Exception:       # not an image Pillow recognises: load_image says so in its words
        return
    if w * h >= MAX_IMAGE_PIXELS:
        raise ApiError(413, f"a {w}×{h} image is too large to decode here "
                            f"(at most {MAX_IMAGE_PIXELS // 1_000_000} megapixels; scale it down first)")


def image_input(entry: Entry, data: bytes) -> np.ndarray:
    """An uploaded image as the network's input: predict's loader (``inputs.load_image_bytes``,
    after the size check here), then the model's own preprocessing."""
    from digitnet.inputs import load_image_bytes
    from digitnet.predict import preprocessor

    if not data:
        raise ApiError(400, "the request body is empty: send the image's bytes")
    _check_size(data)
    try:
        return preprocessor(entry.model)(load_image_bytes(data))
    except DigitnetError as e:
        raise ApiError(422, str(e)) from None


def pixel_input(entry: Entry, pixels) -> np.ndarray:
    """``pixels`` from JSON (H·W numbers, or H rows of W) as the network's input (H, W), as they are."""
    h, w = entry.model.input_shape
    if pixels is None:
        raise ApiError(400, f'send {{"pixels": [{h * w} numbers from 0 to 1]}} as JSON, or an image\'s bytes with its Content-Type')
    try:
        a = np.asarray(pixels, np.float64)
    except (ValueError, TypeError):
        raise ApiError(400, f"pixels must be {h * w} numbers (or {h} rows of {w})") from None
    if a.size != h * w or a.shape not in ((h * w,), (h, w)):
        raise ApiError(400, f"pixels must be {h * w} numbers (or {h} rows of {w}), got shape {list(a.shape)}")
    if not np.isfinite(a).all():
        raise ApiError(400, "pixels must be finite numbers")
    if a.min() < 0 or a.max() > 1:
        raise ApiError(400, "pixels must be from 0 to 1 (white ink on black); divide 0-255 values by 255")
    return a.reshape(h, w).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The video's experiments

def noise(entry: Entry, seed: int) -> dict:
    """One image of uniform noise and the network's answer for it, with the tally over
    NOISE_SAMPLES such images (``analysis.noise_experiment``): it answers anyway, often confidently."""
    from digitnet.analysis import noise_experiment

    report = noise_experiment(entry.model, samples=NOISE_SAMPLES, seed=seed, keep=1)
    counts = report.class_counts
    top = int(np.argmax(counts))
    return {**run(entry, report.images[0]),
            "noise": {"samples": report.samples, "seed": seed, "mean_confidence": round(report.mean_confidence, 6),
                      "class_counts": counts.tolist(), "most_often": top,
                      "most_often_name": entry.model.class_names[top]}}


def dream(entry: Entry, digit: int) -> dict:
    """The image gradient ascent finds for ``digit`` (``analysis.dream``, inspect dream's
    settings) and the network's answer for it. Dreams are deterministic, so each is kept."""
    from digitnet.analysis import dream as find_dream

    with _dreaming:
        if digit not in entry.dreams:
            d = find_dream(entry.model, digit, **DREAM)
            entry.dreams[digit] = (d.image, {"digit": digit, "name": entry.model.class_names[digit],
                                             "probability": round(d.probability, 6),
                                             "start_probability": round(d.start_probability, 6), "steps": d.steps})
        image, info = entry.dreams[digit]
    return {**run(entry, image), "dream": info}


# ---------------------------------------------------------------------------------------------
# Requests

def _int(value, name: str, low: int, high: int) -> int:
    if isinstance(value, str):
        try:
            value = int(value, 10)
        except ValueError:
            raise ApiError(400, f"{name} must be a whole number, got {value[:40]!r}") from None
    if type(value) is not int or not low <= value <= high:
        raise ApiError(400, f"{name} must be a whole number from {low} to {high}, got {str(value)[:40]}")
    return value


def _json_body(content_type: str, body: bytes, required: bool) -> dict:
    if not body and not required:
        return {}
    if content_type != "application/json":
        raise ApiError(415, f"send JSON with Content-Type: application/json (got {content_type or 'none'})")
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ApiError(400, "the JSON body must be an object, such as {\"pixels\": [...]}")
    return obj


def _entry(catalog: Catalog, mid) -> Entry:
    if mid is not None and not isinstance(mid, str):
        raise ApiError(400, "model must be a model id (a string) from GET /api/models")
    entry = catalog.get(mid)
    if entry is None:
        raise ApiError(404, f"no model {mid[:60]!r}; choose one of: {', '.join(catalog.ids())}")
    if entry.model is None:
        raise ApiError(422, f"model {entry.id!r} cannot be used: {entry.error}")
    return entry


def _flag(query: dict, name: str, default: bool) -> bool:
    v = query.get(name)
    if v is None:
        return default
    if v.lower() in ("1", "true", "yes"):
        return True
    if v.lower() in ("0", "false", "no"):
        return False
    raise ApiError(400, f"{name} must be 1 or 0, got {v[:20]!r}")


ROUTES = ("/api/models", "/api/predict", "/api/noise", "/api/dream")


def handle(catalog: Catalog, method: str, path: str, query: dict[str, str], content_type: str,
           body: bytes) -> tuple[int, dict]:
    """Answer one API request: (HTTP status, JSON object). ``content_type`` is the media type
    alone, lower case; ``query`` maps each parameter to its last value."""
    parts = path.rstrip("/").split("/")
    if path == "/api/models" or path.startswith("/api/models/"):
        if method != "GET":
            raise ApiError(405, f"{path} answers GET only")
        if len(parts) == 3:
            return 200, {"models": [summary(e, e.id == catalog.default) for e in catalog.entries.values()],
                         "default": catalog.default}
        entry = _entry(catalog, parts[3])
        if len(parts) == 4:
            return 200, describe(entry, entry.id == catalog.default)
        if len(parts) == 5 and parts[4] == "weights":
            layer = _int(query.get("layer"), "layer", 0, 10_000)
            unit = _int(query.get("unit"), "unit", 0, 1 << 20)
            try:
                return 200, incoming_weights(entry.model.network, entry.views, layer, unit)
            except LookupError as e:
                raise ApiError(400, str(e.args[0])) from None
        raise ApiError(404, f"no such address: {path[:80]}")
    if path not in ROUTES:
        raise ApiError(404, f"no such address: {path[:80]} (the API: {', '.join(ROUTES)})")
    if method != "POST":
        raise ApiError(405, f"{path} answers POST only")
    if path == "/api/predict":
        if content_type.startswith("image/") or content_type == "application/octet-stream":
            entry = _entry(catalog, query.get("model"))
            x = image_input(entry, body)
        elif content_type == "application/json":
            obj = _json_body(content_type, body, required=True)
            entry = _entry(catalog, obj.get("model", query.get("model")))
            x = pixel_input(entry, obj.get("pixels"))
        else:
            raise ApiError(415, "send an image (Content-Type: image/png, image/jpeg, …) or JSON "
                                f'{{"pixels": [...]}} (Content-Type: application/json), not {content_type or "no type"}')
        return 200, run(entry, x, _flag(query, "activations", True))
    obj = _json_body(content_type, body, required=False)
    entry = _entry(catalog, obj.get("model", query.get("model")))
    if path == "/api/noise":
        return 200, noise(entry, _int(obj.get("seed", query.get("seed", 0)), "seed", 0, 2**32 - 1))
    n = len(entry.model.class_names)
    return 200, dream(entry, _int(obj.get("digit", query.get("digit")), "digit", 0, n - 1))
