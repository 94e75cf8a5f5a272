"""The layers a network stacks, and the registry that names them.

Every layer is a small object of settings (what ``config()`` returns and ``from_config``
reads back, as Keras layers do) plus two functions written side by side:

- ``forward(p, a, train, rng) -> (out, cache)``: the layer's output for a batch ``a`` and
  what its backward needs;
- ``backward(p, cache, grad, g, need_dx) -> dx``: given ∂C/∂out, write the gradient of each
  parameter into ``g`` (views of the network's flat gradient, same names as ``p``) and
  return ∂C/∂a (skipped, returning None, when ``need_dx`` is False: the first layer).

Parameters are not stored in the layer: ``p`` maps names ("W", "b") to views into the
network's one flat parameter vector, so a float64 copy for gradient checks, the optimizers
and the model file all see one buffer. A batch is a stack of rows, so the book's
``z = W a + b`` for one column ``a`` becomes ``z = a @ W.T + b`` for all rows at once.

A new kind of layer is one class here (or in its own module, as ``conv.py``) and one entry
in ``LAYERS``.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import numpy as np

from digitnet.nn.functions import ACTIVATIONS

MAX_UNITS = 1 << 16            # neurons in one dense layer, and values one layer may output


class Layer:
    """The base: settings in ``SETTINGS`` (name -> (type, low, high)), shapes set by ``build``."""

    type: ClassVar[str] = ""
    SETTINGS: ClassVar[dict[str, tuple[type, Any, Any]]] = {}

    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()

    def build(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Fix the per-sample input shape; return the output shape (ValueError if it cannot take it)."""
        self.in_shape = tuple(in_shape)
        self.out_shape = self.output_shape(self.in_shape)
        if int(np.prod(self.out_shape)) > MAX_UNITS * 4:
            raise ValueError(f"{self.describe()} would output {int(np.prod(self.out_shape)):,} values per image "
                             f"(at most {MAX_UNITS * 4:,})")
        return self.out_shape

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The output shape for ``in_shape`` (the default: unchanged)."""
        return in_shape

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the learned arrays, in the order they sit in the flat vector."""
        return {}

    def init_params(self, p: dict[str, np.ndarray], rng: np.random.Generator, gain: str) -> None:
        """Fill ``p`` for a new network: seeded He ("he") or Xavier ("xavier") weights, zero biases."""

    def forward(self, p: dict, a: np.ndarray, train: bool = False, rng: np.random.Generator | None = None):
        raise NotImplementedError

    def backward(self, p: dict, cache, grad: np.ndarray, g: dict, need_dx: bool = True):
        raise NotImplementedError

    def macs(self) -> int:
        """Multiply-adds of one sample's forward pass (for GFLOP/s figures)."""
        return 0

    def scratch(self) -> int:
        """float values one sample's forward pass holds at once (its output and temporaries):
        what sizes the chunks of inference so memory stays bounded."""
        return int(np.prod(self.out_shape))

    def config(self) -> dict:
        """The settings as a JSON-ready dict, ``type`` first."""
        return {"type": self.type, **{k: getattr(self, k) for k in self.SETTINGS}}

    @classmethod
    def from_config(cls, d: dict) -> Layer:
        """Build a layer from ``config()``'s dict, checking every setting's type and range
        (ValueError naming the bad one); unknown settings are refused."""
        extra = set(d) - set(cls.SETTINGS) - {"type"}
        if extra:
            raise ValueError(f"{cls.type} layer: unknown setting {sorted(extra)[0]!r}")
        kwargs = {}
        for name, (kind, low, high) in cls.SETTINGS.items():
            if name not in d:
                continue
            v = d[name]
            if kind is float and type(v) is int:
                v = float(v)
            if type(v) is not kind or (kind is str and v not in low) \
                    or (kind is not str and not (low <= v <= high)):
                allowed = ", ".join(low) if kind is str else f"{kind.__name__} from {low} to {high}"
                raise ValueError(f"{cls.type} layer: {name} must be {allowed}, got {v!r}")
            kwargs[name] = v
        missing = [n for n, q in inspect.signature(cls.__init__).parameters.items()
                   if n != "self" and q.default is q.empty and n not in kwargs
                   and q.kind in (q.POSITIONAL_OR_KEYWORD, q.KEYWORD_ONLY)]
        if missing:
            raise ValueError(f"{cls.type} layer: missing setting {missing[0]!r}")
        return cls(**kwargs)

    def describe(self) -> str:
        """A short name such as ``dense256`` or ``conv32x5``: the spec grammar's token."""
        return self.type

    def __repr__(self) -> str:
        return f"<{self.describe()}>"


def _fill_normal(W: np.ndarray, rng: np.random.Generator, fan_in: int, fan_out: int, gain: str) -> None:
    std = np.sqrt(2.0 / fan_in) if gain == "he" else np.sqrt(2.0 / (fan_in + fan_out))
    W[...] = rng.normal(0.0, std, W.shape)


class Dense(Layer):
    """Fully connected: z = W a + b with W (n_out, n_in), b (n_out,)."""

    type = "dense"
    SETTINGS = {"units": (int, 1, MAX_UNITS)}

    def __init__(self, units: int):
        self.units = units

    def output_shape(self, in_shape):
        if len(in_shape) != 1:
            raise ValueError(f"dense{self.units} needs a flat input, got shape {in_shape} (add flatten)")
        return (self.units,)

    def param_shapes(self):
        return {"W": (self.units, self.in_shape[0]), "b": (self.units,)}

    def init_params(self, p, rng, gain):
        _fill_normal(p["W"], rng, self.in_shape[0], self.units, gain)

    def forward(self, p, a, train=False, rng=None):
        z = a @ p["W"].T + p["b"]                           # (m, n_out) = (m, n_in) (n_in, n_out)
        return z, a

    def backward(self, p, a, delta, g, need_dx=True):
        np.matmul(delta.T, a, out=g["W"])                   # ∂C/∂W = δ aᵀ        (n_out, n_in)
        np.sum(delta, axis=0, out=g["b"])                   # ∂C/∂b = δ           (n_out,)
        return delta @ p["W"] if need_dx else None          # ∂C/∂a = Wᵀ δ        (m, n_in)

    def macs(self):
        return self.units * self.in_shape[0]

    def describe(self):
        return f"dense{self.units}"


class Activation(Layer):
    """a = σ(z), element-wise (softmax: over the last axis); no parameters."""

    type = "activation"
    SETTINGS = {"function": (str, tuple(ACTIVATIONS), None)}

    def __init__(self, function: str):
        self.function = function

    def forward(self, p, z, train=False, rng=None):
        a = ACTIVATIONS[self.function].fn(z)
        return a, a

    def backward(self, p, a, grad, g, need_dx=True):
        return ACTIVATIONS[self.function].backward(a, grad)     # δ = ∂C/∂a ⊙ σ'(z)

    def describe(self):
        return self.function


class Flatten(Layer):
    """Feature maps (m, C, H, W) to rows (m, C·H·W)."""

    type = "flatten"

    def output_shape(self, in_shape):
        return (int(np.prod(in_shape)),)

    def forward(self, p, a, train=False, rng=None):
        return a.reshape(len(a), -1), a.shape

    def backward(self, p, shape, grad, g, need_dx=True):
        return grad.reshape(shape) if need_dx else None


class Dropout(Layer):
    """Inverted dropout: in training each value is zeroed with probability ``rate`` and the rest
    scaled by 1/(1 − rate), so evaluation is the identity."""

    type = "dropout"
    SETTINGS = {"rate": (float, 0.0, 0.95)}

    def __init__(self, rate: float = 0.5):
        self.rate = rate

    def forward(self, p, a, train=False, rng=None):
        if not train or self.rate == 0:
            return a, None
        mask = (rng.random(a.shape, dtype=np.float32) >= self.rate).astype(a.dtype)
        mask *= a.dtype.type(1.0 / (1.0 - self.rate))
        return a * mask, mask

    def backward(self, p, mask, grad, g, need_dx=True):
        return (grad if mask is None else grad * mask) if need_dx else None

    def describe(self):
        return f"dropout{self.rate:g}"


from digitnet.nn.conv import Conv, MaxPool  # noqa: E402  (conv.py builds on Layer above)
from digitnet.nn.attention import ATTENTION_LAYERS  # noqa: E402  (so does attention.py)

LAYERS: dict[str, type[Layer]] = {cls.type: cls for cls in (Dense, Activation, Flatten, Dropout, Conv, MaxPool,
                                                            *ATTENTION_LAYERS)}


def layer_from_config(d) -> Layer:
    """A layer from its config dict, through the registry; ValueError for unknown types."""
    if not isinstance(d, dict) or not isinstance(d.get("type"), str):
        raise ValueError(f"a layer must be an object with a 'type', got {d!r:.60}")
    cls = LAYERS.get(d["type"])
    if cls is None:
        raise ValueError(f"unknown layer type {d['type']!r} (known: {', '.join(LAYERS)})")
    return cls.from_config(d)
