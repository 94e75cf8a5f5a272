"""The network: a stack of layers, one flat parameter vector, and the one chain rule that
walks the stack for training, gradient checks and the input gradient (dream).

Notation follows the backpropagation chapter (Nielsen; 3Blue1Brown ch. 3-4): each layer
maps its input activations a to its output; backprop carries ∂C/∂a down the stack, each
layer turning it into the gradients of its own parameters and ∂C/∂a of its input. For a
dense layer followed by an activation that is the book's δ_l = (W_{l+1}ᵀ δ_{l+1}) ⊙ σ'(z_l),
split over the two layers that make it.

The output activation belongs to the network (its last layer: softmax or sigmoid), and
``scores`` is the one function that turns images into class scores for predict, evaluate,
inspect and the drawing page. Nothing here imports numba.
"""

from __future__ import annotations

import time

import numpy as np

from digitnet.nn.functions import ACTIVATIONS, COSTS, one_hot, resolve
from digitnet.nn.layers import Activation, Dense, Flatten, Layer
from digitnet import threads


class Network:
    """Layers (each built for the shape before it), the per-sample input shape (C, H, W),
    the cost, and ``params``: one flat vector the layers' arrays are views into."""

    MAX_PARAMS = 1 << 28        # 1 GiB of float32, far above any network digitnet trains

    def __init__(self, layers: list[Layer], input_shape, cost: str = "cross-entropy", params: np.ndarray | None = None):
        self.layers = list(layers)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.cost = resolve(COSTS, cost, "cost").name
        if not self.layers or not isinstance(self.layers[-1], Activation) \
                or not ACTIVATIONS[self.layers[-1].function].output:
            raise ValueError("a network must end in an output activation (softmax or sigmoid)")
        self.shapes = [self.input_shape]                  # shapes[i]: the input of layer i; shapes[-1]: the output
        for layer in self.layers:
            self.shapes.append(layer.build(self.shapes[-1]))
        if len(self.shapes[-1]) != 1:
            raise ValueError(f"the network's output must be flat, not {self.shapes[-1]}")
        self.slots: list[dict[str, tuple[int, tuple[int, ...]]]] = []    # per layer: name -> (offset, shape)
        pos = 0
        for layer in self.layers:
            slot = {}
            for name, shape in layer.param_shapes().items():
                slot[name] = (pos, shape)
                pos += int(np.prod(shape))
            self.slots.append(slot)
        self.n_params = pos
        if pos > self.MAX_PARAMS:
            raise ValueError(f"{pos:,} parameters is more than digitnet handles ({self.MAX_PARAMS:,})")
        if params is None:
            params = np.zeros(pos, np.float32)
        if params.shape != (pos,):
            raise ValueError(f"params must have shape ({pos},), not {params.shape}")
        self.params = params
        self.views = self.views_of(params)
        self.first_learned = next((i for i, s in enumerate(self.slots) if s), len(self.layers))

    @classmethod
    def init(cls, layers, input_shape, cost="cross-entropy", seed: int = 0) -> Network:
        """A new network with seeded weights: He before ReLU, Xavier before the others; zero biases."""
        net = cls(layers, input_shape, cost)
        rng = np.random.default_rng(seed)
        for i, (layer, p) in enumerate(zip(net.layers, net.views)):
            after = net.layers[i + 1] if i + 1 < len(net.layers) else None
            gain = ACTIVATIONS[after.function].init if isinstance(after, Activation) else "xavier"
            layer.init_params(p, rng, gain)
        return net

    def views_of(self, flat: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Per layer, its named arrays as views into ``flat`` (laid out like ``params``)."""
        return [{name: flat[o:o + int(np.prod(shape))].reshape(shape) for name, (o, shape) in slot.items()}
                for slot in self.slots]

    @property
    def n_inputs(self) -> int:
        """Values per input image (H·W for one channel)."""
        return int(np.prod(self.input_shape))

    @property
    def n_outputs(self) -> int:
        """Output neurons: one per class."""
        return self.shapes[-1][0]

    @property
    def output(self) -> str:
        """The output activation's name (softmax or sigmoid)."""
        return self.layers[-1].function

    def astype(self, dtype) -> Network:
        """A copy with parameters of ``dtype`` (float64 for gradient checks and dream)."""
        return Network(self.layers, self.input_shape, self.cost, self.params.astype(dtype))

    def copy(self) -> Network:
        """A copy that shares no parameters with this network."""
        return Network(self.layers, self.input_shape, self.cost, self.params.copy())

    def decay_mask(self) -> np.ndarray:
        """1 where ``params`` holds a weight (L2 / weight decay applies), 0 for biases."""
        mask = np.zeros(self.n_params, np.float32)
        for slot in self.slots:
            for name, (o, shape) in slot.items():
                if name == "W":
                    mask[o:o + int(np.prod(shape))] = 1
        return mask

    def mlp(self) -> tuple[tuple[int, ...], str, str] | None:
        """(sizes, hidden activation, output activation) when this is a plain dense stack
        — flatten, (dense, σ)*, dense, output — the shape the fused dense kernel trains;
        else None."""
        if not isinstance(self.layers[0], Flatten) or len(self.layers) % 2 == 0:
            return None
        layers = self.layers[1:]
        dense, acts = layers[0::2], layers[1::2]
        if not all(isinstance(d, Dense) for d in dense) or not all(isinstance(a, Activation) for a in acts):
            return None
        hidden = {a.function for a in acts[:-1]}
        if len(hidden) > 1 or not all(ACTIVATIONS[h].code >= 0 for h in hidden):
            return None
        sizes = (self.n_inputs, *(d.units for d in dense))
        return sizes, (hidden.pop() if hidden else "sigmoid"), acts[-1].function

    # -- forward --------------------------------------------------------------------------

    def _input(self, x: np.ndarray) -> np.ndarray:
        """Inputs (m, n_in) or (m, H, W) as (m, *input_shape) in the parameters' dtype."""
        x = np.asarray(x, self.params.dtype)
        if x.size != len(x) * self.n_inputs:
            raise ValueError(f"inputs have {x.size // max(len(x), 1)} values each, the network takes {self.n_inputs}")
        return x.reshape((len(x), *self.input_shape))

    def trace(self, x: np.ndarray, train: bool = False, rng: np.random.Generator | None = None,
              fast: dict | None = None):
        """Forward through every layer, keeping what backward needs: (activations, caches),
        activations[0] = x and activations[i + 1] = layer i's output. ``fast`` maps a layer
        type to compiled stand-ins (``forward(layer, p, a, train, rng)``, ``backward(layer,
        p, cache, grad, g, need_dx)``) with the same results, used by training."""
        activations, caches = [self._input(x)], []
        for layer, p in zip(self.layers, self.views):
            op = (fast or {}).get(layer.type)
            a, cache = op.forward(layer, p, activations[-1], train, rng) if op else layer.forward(p, activations[-1], train, rng)
            activations.append(a)
            caches.append(cache)
        return activations, caches

    def feedforward(self, x: np.ndarray) -> list[np.ndarray]:
        """Every layer's output for a batch x, the input first: [a_0 = x, a_1, …]."""
        return self.trace(x)[0]

    def chunk_size(self, budget: int = 64 << 20) -> int:
        """Images per inference chunk so a forward pass holds about ``budget`` bytes at most
        (between 1 and 4,096): a conv stack's feature maps and im2col rows are far larger
        than a dense stack's activations."""
        per_image = sum(layer.scratch() for layer in self.layers) * self.params.dtype.itemsize
        return int(max(1, min(4096, budget // max(per_image, 1))))

    def predict_proba(self, x: np.ndarray, chunk: int | None = None) -> np.ndarray:
        """The output activations (m, n_classes) for inputs x (m, n_in), in bounded-memory chunks."""
        x = self._input(x)
        chunk = chunk or self.chunk_size()
        out = np.empty((len(x), self.n_outputs), self.params.dtype)
        governor = threads.inference() if len(x) >= threads.INFERENCE_MIN_ROWS else None
        for i in range(0, len(x), chunk):
            if governor:                         # BLAS threads chosen by measured throughput
                governor.threads()
                t = time.perf_counter()
            a = x[i:i + chunk]
            for layer, p in zip(self.layers, self.views):
                a = layer.forward(p, a)[0]
            out[i:i + chunk] = a
            if governor:
                governor.done(len(a), time.perf_counter() - t)
        return out

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Class scores (m, n_classes) that sum to 1 per row: softmax outputs as they are,
        sigmoid outputs divided by their sum. What every command shows as "confidence"."""
        return self.scores_from(self.predict_proba(x))

    def scores_from(self, out: np.ndarray) -> np.ndarray:
        """``scores`` from output activations already computed (m, n_classes), in place: what
        a caller that also wants the other layers' activations uses after one forward pass."""
        if not ACTIVATIONS[self.output].distribution:
            out /= np.maximum(out.sum(axis=1, keepdims=True), np.finfo(out.dtype).tiny)
        return out

    # -- backward -------------------------------------------------------------------------

    def backward(self, caches: list, grad: np.ndarray, top: int, g: np.ndarray | None = None,
                 need_dx: bool = False, fast: dict | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """The chain rule down the stack: ``grad`` is ∂C/∂(output of layer top − 1); each
        layer below writes its parameters' gradients into the flat ``g`` (allocated when
        None) and passes ∂C/∂(its input) down. Returns (g, ∂C/∂x when ``need_dx``).
        ``fast``: as in ``trace``."""
        if g is None:
            g = np.zeros_like(self.params)
        g_views = self.views_of(g)
        bottom = 0 if need_dx else self.first_learned
        for i in range(top - 1, bottom - 1, -1):
            layer, op = self.layers[i], (fast or {}).get(self.layers[i].type)
            args = (self.views[i], caches[i], grad, g_views[i], need_dx or i > bottom)
            grad = op.backward(layer, *args) if op else layer.backward(*args)
        return g, (grad if need_dx else None)

    def output_delta(self, a_L: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, int]:
        """Where backprop starts for cost C(a_L, y), averaged over the batch: (δ_L, the layer
        to start below). With softmax and cross-entropy the softmax's Jacobian cancels ∂C/∂a
        and δ_L = a − y at the softmax's input (no 1/a to overflow); otherwise ∂C/∂a_L goes
        through the output activation's own backward."""
        m = len(a_L)
        cost = COSTS[self.cost]
        if cost.canonical == self.output:
            return (a_L - y) / m, len(self.layers) - 1
        return cost.grad(a_L, y) / m, len(self.layers)

    def cost_and_gradient(self, x: np.ndarray, labels: np.ndarray, train: bool = False,
                          rng: np.random.Generator | None = None, g: np.ndarray | None = None,
                          fast: dict | None = None):
        """Mean cost over the batch, its gradient as a flat vector laid out like ``params``
        (into ``g`` when given), and the output activations (m, n_classes). x: (m, n_in).
        ``fast``: compiled stand-ins for some layer types (see ``trace``)."""
        activations, caches = self.trace(x, train, rng, fast)
        a_L = activations[-1]
        y = one_hot(labels, self.n_outputs, a_L.dtype)
        delta, top = self.output_delta(a_L, y)
        g, _ = self.backward(caches, delta, top, g, fast=fast)
        return float(COSTS[self.cost].value(a_L, y).mean()), g, a_L

    def input_gradient(self, x: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Output activations (m, n_classes) and the gradient of ln a_L[target] with respect
        to the input x (m, n_in): backpropagation run one step further than training runs it.
        Working with ln a keeps the gradient alive when a sigmoid output saturates."""
        activations, caches = self.trace(x)
        a_L = activations[-1]
        delta = ACTIVATIONS[self.output].dlog(a_L, one_hot(targets, self.n_outputs, a_L.dtype))
        _, dx = self.backward(caches, delta, len(self.layers) - 1, need_dx=True)
        return a_L, dx.reshape(len(x), -1)


def dense_layers(sizes, activation: str, output: str) -> list[Layer]:
    """The layers of a fully connected network with ``sizes`` (n_0 inputs … n_L outputs):
    flatten, then (dense, activation) per hidden layer, then dense and the output activation."""
    layers: list[Layer] = [Flatten()]
    for i, n in enumerate(sizes[1:], start=1):
        layers += [Dense(int(n)), Activation(activation if i < len(sizes) - 1 else output)]
    return layers

