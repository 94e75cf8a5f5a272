"""How the drawing page shows a network: which layers it draws, their values for one input,
the connections that carry the most signal, and a neuron's incoming weights.

A *view* is one column of the page's picture of the network: the input image, then the
output of every activation or pooling layer (the values the video lights up). A weight
layer (dense, conv) is not a column of its own: it is what connects the column before it to
the column after it, so each view records the weight layer that feeds it (``weights``) and
the view that layer reads (``source``), when its input is a view's values merely flattened.

Views are "image" (the input, H × W), "maps" (C, H, W: feature maps), "tokens" (T, D: a
transformer's tokens, drawn as one picture) or "neurons" (n,). For a transformer the page
also shows where the class token looks in each block (``class_token_attention``). NumPy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from digitnet.nn.layers import Activation, Dropout, Flatten
from digitnet.nn.network import Network

LINKS = 160          # connections drawn between two columns: the strongest |w·a| of the input


@dataclass(frozen=True)
class View:
    """One column: ``output`` indexes ``Network.feedforward``'s list (0 = the input),
    ``weights`` the weight layer feeding it (index into ``net.layers``) or None, ``source``
    the view that weight layer reads, when its input is that view's values flattened."""

    output: int
    kind: str
    shape: tuple[int, ...]
    name: str
    title: str
    weights: int | None = None
    source: int | None = None

    def to_json(self) -> dict:
        return {"kind": self.kind, "shape": list(self.shape), "name": self.name, "title": self.title,
                "has_weights": self.weights is not None, "source": self.source}


def _kind(shape: tuple[int, ...]) -> str:
    return {1: "neurons", 2: "tokens", 3: "maps"}.get(len(shape), "neurons")


def _title(layer, weight_layer, shape: tuple[int, ...], last: bool) -> str:
    """A caption such as "16 neurons · dense + sigmoid" or "6 maps 28×28 · conv 5×5 + relu"."""
    if last:
        size = f"output: {shape[0]} classes"
    elif len(shape) == 1:
        size = f"{shape[0]} neurons"
    elif len(shape) == 2:
        size = f"{shape[0]} tokens × {shape[1]}"
    elif len(shape) == 3:
        size = f"{shape[0]} maps {shape[1]}×{shape[2]}"
    else:
        size = "×".join(map(str, shape))
    how = []
    if weight_layer is not None:
        k = getattr(weight_layer, "kernel", 0)
        how.append({"dense": "dense", "conv": f"conv {k}×{k}"}.get(weight_layer.type, weight_layer.describe()))
    if isinstance(layer, Activation):
        how.append(layer.function)
    elif layer is not None and layer.type == "maxpool":
        how.append(f"max pool {layer.size}×{layer.size}")
    elif layer is not None:
        how.append(layer.describe())
    return f"{size} · {' + '.join(how)}" if how else size


def network_views(net: Network) -> list[View]:
    """The columns the page draws for ``net``: the input, then every activation or pooling
    layer's output (and a weight layer's output when no activation follows it)."""
    c, h, w = net.input_shape
    views = [View(0, "image" if c == 1 else "maps", (h, w) if c == 1 else (c, h, w), "input",
                  f"input: {h}×{w} pixels")]
    source: int | None = 0          # the view whose values the current tensor holds (up to a reshape)
    pending: int | None = None      # a weight layer whose output is not shown yet
    pending_source: int | None = None
    last = len(net.layers) - 1

    def add(i: int, layer, weight: int | None, src: int | None) -> None:
        nonlocal source
        shape = net.shapes[i + 1]
        wl = net.layers[weight] if weight is not None else None
        shown = weight if wl is not None and wl.type in ("dense", "conv") else None   # the page can picture these
        views.append(View(i + 1, _kind(shape), shape, layer.describe() if layer is not None else wl.describe(),
                          _title(layer, wl, shape, i == last), shown, src if shown is not None else None))
        source = len(views) - 1

    for i, layer in enumerate(net.layers):
        if isinstance(layer, (Flatten, Dropout)):
            continue                                   # same values, another shape: no column
        if "W" in net.views[i]:
            if pending is not None:                    # a weight layer with no activation after it
                add(pending, None, pending, pending_source)
            pending, pending_source, source = i, source, None
            continue
        add(i, layer, pending, pending_source)
        pending = pending_source = None
    if pending is not None:
        add(pending, None, pending, pending_source)
    return views


def view_values(views: list[View], outs: list[np.ndarray]) -> list[np.ndarray]:
    """Each view's values (its shape) for one input, from ``feedforward``'s outputs (batch of 1)."""
    return [outs[v.output][0].reshape(v.shape) for v in views]


def largest(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest of ``values`` (1-D), largest first. Exact, and fast on
    large arrays: an order statistic of a strided sample gives a threshold that keeps a few
    times k candidates (at least k, else all are used), and only those are partitioned."""
    n = values.size
    k = min(k, n)
    if k <= 0:
        return np.empty(0, np.intp)
    candidates = None
    if n > 64 * k:
        step = n // (64 * k)
        sample = values[::step]
        m = min(sample.size, -(-4 * k // step))                # ~4k values of the whole lie above it
        cut = np.partition(sample, sample.size - m)[sample.size - m]
        above = np.flatnonzero(values > cut)                   # strict first: a cut at a tied value (0) keeps less
        if above.size < k:
            above = np.flatnonzero(values >= cut)
        if above.size >= k:                                   # then the k largest are all among them
            candidates = above
    sub = values if candidates is None else values[candidates]
    top = np.argpartition(sub, sub.size - k)[sub.size - k:]
    top = top[np.argsort(-sub[top], kind="stable")]
    return top if candidates is None else candidates[top]


def strongest_links(net: Network, views: list[View], outs: list[np.ndarray], k: int = LINKS) -> list[dict]:
    """For each view fed by a dense layer that reads another view: the ``k`` connections
    (source unit j, neuron i) with the largest |W[i, j] · a_j| for this input — how much of
    neuron i's weighted sum z_i = Σ_j W[i, j] a_j + b_i flows along each edge."""
    links = []
    for to, v in enumerate(views):
        if v.weights is None or v.source is None or net.layers[v.weights].type != "dense":
            continue
        W = net.views[v.weights]["W"]                                  # (n_out, n_in)
        a = outs[v.weights][0].reshape(-1)                             # (n_in,) the layer's input
        lit = np.flatnonzero(a)                                        # inputs at 0 carry nothing (most pixels)
        contrib = W[:, lit] * a[lit]                                   # (n_out, n_lit): W[i, j] a_j
        flat = np.abs(contrib).ravel()
        top = largest(flat, min(k, int(np.count_nonzero(flat))))
        dst, col = np.divmod(top, len(lit))
        src = lit[col]
        links.append({"from": v.source, "to": to,
                      "links": [[int(s), int(d), round(float(c), 4)] for s, d, c in zip(src, dst, contrib.ravel()[top])]})
    return links


def incoming_weights(net: Network, views: list[View], view: int, unit: int) -> dict:
    """What feeds one unit of a view: a dense neuron's weights W[unit] laid out like the view
    it reads (a 28×28 image for the first hidden layer), or a conv map's filter (C, k, k).
    Raises LookupError (with a message) when the view has no weights or the unit is out of range."""
    if not 0 <= view < len(views):
        raise LookupError(f"layer {view} does not exist (the page shows layers 0 to {len(views) - 1})")
    v = views[view]
    if v.weights is None:
        what = "the input" if view == 0 else f"{v.name} has no weights of its own (it takes the largest value of each window)"
        raise LookupError(f"{what}: nothing to show" if view == 0 else what)
    n_units = v.shape[0]
    if not 0 <= unit < n_units:
        raise LookupError(f"unit {unit} does not exist ({v.name} has units 0 to {n_units - 1})")
    layer, p = net.layers[v.weights], net.views[v.weights]
    w = p["W"][unit]
    if layer.type == "dense":
        shape = views[v.source].shape if v.source is not None else w.shape
        over = "pixels" if v.source == 0 else (f"layer {v.source}" if v.source is not None else "its inputs")
    else:
        shape, over = w.shape, "filter"
    bias = float(p["b"][unit]) if "b" in p else 0.0
    return {"layer": view, "unit": unit, "shape": list(shape), "over": over, "bias": round(bias, 6),
            "values": np.round(w.astype(np.float64).reshape(-1), 5).tolist()}


def class_token_attention(net: Network, outs: list[np.ndarray]) -> dict | None:
    """Where a transformer's class token looks, for one input, from ``feedforward``'s outputs
    (batch of 1; the attention is recomputed from each block's input, not by another pass):
    per block, its attention row over the patches for each head and the mean over heads, in
    reading order of the patch grid; ``self`` is the weight it keeps on itself (the rest of
    the row). Also the rollout through every block (``attention_analysis.rollout``). None for
    a network without transformer blocks."""
    from digitnet.attention_analysis import block_layers, patch_grid, rollout
    from digitnet.nn.attention import attention_maps

    blocks = block_layers(net)
    if not blocks:
        return None
    patch, rows, cols = patch_grid(net)
    maps = [attention_maps(net.layers[i], net.views[i], outs[i])[0] for i in blocks]      # (H, T, T) each

    def r6(a):
        return np.round(np.asarray(a, np.float64), 6).tolist()

    out = []
    for b, att in enumerate(maps):
        cls = att[:, 0]                                                                    # (H, T): token 0's rows
        mean = cls.mean(axis=0)                                                            # (T,)
        out.append({"block": b + 1, "heads": int(att.shape[0]), "mean": r6(mean[1:]), "self": round(float(mean[0]), 6),
                    "per_head": r6(cls[:, 1:])})
    return {"patch": patch, "grid": [rows, cols], "blocks": out, "rollout": r6(rollout(maps)[0, 1:])}
