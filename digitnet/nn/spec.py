"""The layer-list grammar of ``--layers``: a network written as comma-separated tokens.

    conv32x5,pool2,conv64x5,pool2,dense256,dropout0.5

| token | layer |
|---|---|
| ``dense256`` or ``256`` | fully connected, 256 neurons, then the activation |
| ``conv32x5`` | 32 filters of 5×5, stride 1, no padding, then the activation; suffixes ``s2`` (stride), ``p2`` (zero padding), ``same`` (padding that keeps the size) |
| ``pool2`` / ``maxpool2`` | 2×2 max pooling, stride 2 (``pool3s2``: 3×3, stride 2) |
| ``dropout0.5`` | dropout with rate 0.5 (training only) |
| ``flatten`` | feature maps to a row (inserted by itself before the first dense layer) |
| ``patch7x64`` | vision transformer input: 7×7 patches (4, 7 or 14 tile 28×28) each mapped to a 64-wide token, a learned class token in front, learned position embeddings |
| ``block4`` | pre-norm transformer block on the tokens: LayerNorm → 4-head self-attention → residual, LayerNorm → MLP (GELU, 4× the token width) → residual; ``block4x64`` also states the width (checked), ``block4m2`` makes the MLP 2× wide |
| ``cls`` | the final LayerNorm of the class token, the row the head reads (inserted by itself after the tokens' last layer) |

``:relu``, ``:tanh``, ``:sigmoid`` or ``:linear`` after a dense or conv token sets its
activation (default: ``--activation``). The output layer — dense with one neuron per class
and the output activation — is added by itself. A vision transformer:
``patch7x64,block4,block4,block4,block4`` (the ``attention`` preset).
"""

from __future__ import annotations

import re

from digitnet.errors import UsageError
from digitnet.nn.functions import ACTIVATIONS, HIDDEN_ACTIVATIONS
from digitnet.nn.attention import Block, ClassToken, PatchEmbed
from digitnet.nn.layers import Activation, Conv, Dense, Dropout, Flatten, Layer, MaxPool

_ACT = r"(?::(?P<act>[a-z]+))?$"
_TOKENS = [
    ("dense", re.compile(r"^(?:dense)?(?P<units>\d+)" + _ACT)),
    ("conv", re.compile(r"^conv(?P<filters>\d+)x(?P<kernel>\d+)(?P<opts>(?:s\d+|p\d+|same)*)" + _ACT)),
    ("pool", re.compile(r"^(?:max)?pool(?P<size>\d+)(?:s(?P<stride>\d+))?$")),
    ("dropout", re.compile(r"^dropout(?P<rate>\d*\.?\d+)$")),
    ("flatten", re.compile(r"^flatten$")),
    ("patch", re.compile(r"^patch(?P<patch>\d+)x(?P<dim>\d+)$")),
    ("block", re.compile(r"^block(?P<heads>\d+)(?:x(?P<dim>\d+))?(?:m(?P<mlp>\d+))?$")),
    ("cls", re.compile(r"^cls$")),
]
EXAMPLE = "conv32x5,pool2,conv64x5,pool2,dense256,dropout0.5"


def _token(token: str, activation: str, width: int | None) -> tuple[Layer, str | None]:
    """One token -> (layer, its activation or None); ``width``: the tokens' width so far
    (a block without ``x<dim>`` takes it), None before a patch embedding."""
    for kind, rx in _TOKENS:
        m = rx.match(token)
        if not m:
            continue
        d = m.groupdict()
        act = d.get("act") or (activation if kind in ("dense", "conv") else None)
        if act is not None and act != "linear" and act not in HIDDEN_ACTIVATIONS:
            raise UsageError(f"--layers: {token!r}: unknown activation {act!r}; choose one of: "
                             f"{', '.join(HIDDEN_ACTIVATIONS)}, linear")
        try:
            if kind == "dense":
                layer = Dense.from_config({"units": int(d["units"])})
            elif kind == "conv":
                k = int(d["kernel"])
                opts = dict(re.findall(r"([sp])(\d+)", d["opts"]))
                padding = (k - 1) // 2 if "same" in d["opts"] else int(opts.get("p", 0))
                layer = Conv.from_config({"filters": int(d["filters"]), "kernel": k,
                                          "stride": int(opts.get("s", 1)), "padding": padding})
            elif kind == "pool":
                layer = MaxPool.from_config({"size": int(d["size"]), "stride": int(d["stride"] or d["size"])})
            elif kind == "dropout":
                layer = Dropout.from_config({"rate": float(d["rate"])})
            elif kind == "patch":
                layer = PatchEmbed.from_config({"patch": int(d["patch"]), "dim": int(d["dim"])})
            elif kind == "block":
                if width is None:
                    raise ValueError("a block works on tokens: put a patch embedding such as patch7x64 before it")
                layer = Block.from_config({"heads": int(d["heads"]), "dim": int(d["dim"] or width),
                                           "mlp": int(d["mlp"] or 4)})
            elif kind == "cls":
                layer = ClassToken()
            else:
                layer = Flatten()
        except ValueError as e:
            raise UsageError(f"--layers: {token!r}: {e}") from None
        return layer, (None if act == "linear" else act)
    raise UsageError(f"--layers: {token!r} is not a layer; write tokens such as {EXAMPLE}")


def parse_layers(text: str, activation: str = "relu") -> list[Layer]:
    """The hidden layers a ``--layers`` text describes (activations as their own layers,
    flatten — or, after a patch embedding, the class-token read-out — inserted before the
    first dense layer, and the read-out after the tokens' last layer). UsageError names the
    bad token."""
    tokens = [t.strip().lower() for t in text.split(",")]
    if not any(tokens):
        raise UsageError(f"--layers is empty; write e.g. {EXAMPLE}")
    layers: list[Layer] = []
    flat = False
    width = None                        # the tokens' width after a patch embedding
    for token in tokens:
        if not token:
            raise UsageError(f"--layers {text!r}: an empty token between commas")
        layer, act = _token(token, activation, None if flat else width)
        if isinstance(layer, (Conv, MaxPool)) and (flat or width):
            raise UsageError(f"--layers: {token!r} comes after a dense layer or a patch embedding; "
                             "convolution and pooling need feature maps")
        if isinstance(layer, PatchEmbed):
            if flat or width or layers:
                raise UsageError(f"--layers: {token!r} must come first: a patch embedding reads the image")
            width = layer.dim
        if isinstance(layer, Flatten) and width and not flat:
            raise UsageError(f"--layers: {token!r}: tokens are read out by cls, not flattened")
        if isinstance(layer, ClassToken) and not width:
            raise UsageError(f"--layers: {token!r} reads the class token: put a patch embedding such as patch7x64 first")
        if isinstance(layer, Dense) and not flat:
            layers.append(ClassToken() if width else Flatten())
            flat = True
        if isinstance(layer, (Flatten, ClassToken)):
            if flat:
                continue
            flat = True
        layers.append(layer)
        if act:
            layers.append(Activation(act))
    if width and not flat:
        layers.append(ClassToken())
    return layers


def architecture(hidden: list[Layer], input_shape, n_classes: int, output: str) -> list[Layer]:
    """``hidden`` plus the output layers (flatten when the last hidden layer's output is not
    flat, dense n_classes, ``output``), built once for ``input_shape`` so a layer that does
    not fit is refused here, in one line."""
    if not ACTIVATIONS[output].output:
        raise UsageError(f"{output!r} cannot be an output activation")
    layers, shape = [], tuple(input_shape)
    for layer in [*hidden, None, Dense(n_classes), Activation(output)]:
        if layer is None:                        # between the hidden layers and the head
            if len(shape) == 1:
                continue
            layer = Flatten()
        try:
            shape = layer.build(shape)
        except ValueError as e:
            raise UsageError(f"--layers: {e}") from None
        layers.append(layer)
    return layers


def describe_layers(layers: list[Layer]) -> str:
    """The tokens of the hidden layers of ``layers`` (the inverse of ``parse_layers``, with
    each activation written out): e.g. ``conv32x5:relu,pool2,dense256:relu``. The flatten
    and the output layers are left out, and the class-token read-out where ``parse_layers``
    puts it by itself (last, or before a dense layer)."""
    out: list[str] = []
    body = layers[:-2] if len(layers) >= 2 else layers
    for i, layer in enumerate(body):
        if isinstance(layer, Activation) and out:
            out[-1] += f":{layer.function}"
        elif isinstance(layer, ClassToken) and (i + 1 == len(body) or isinstance(body[i + 1], Dense)):
            continue
        elif not isinstance(layer, Flatten):
            out.append(layer.describe())
            if isinstance(layer, (Dense, Conv)) and not (i + 1 < len(body) and isinstance(body[i + 1], Activation)):
                out[-1] += ":linear"
    return ",".join(out)
