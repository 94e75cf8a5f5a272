"""Looking inside a vision transformer ("Attention in transformers" and "How might LLMs store
facts", on digits): where each patch and the class token look, in every block and head, and
attention rollout to the class token; each MLP neuron's "question" (the test patches that
excite it most), its "answer" (the classes its output direction promotes through the final
LayerNorm and the head), and what silencing it does to each class. The library behind
``inspect attention`` and ``inspect mlp``.

Plain NumPy through ``digitnet.nn`` (nothing here imports numba). Blocks are numbered from 1,
as the CLI shows them; tokens from 0, the class token being token 0 and patch q (reading order)
token q + 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from digitnet.errors import UsageError
from digitnet.nn.attention import Block, ClassToken, PatchEmbed, layernorm_forward, network_attention
from digitnet.nn.layers import Dense
from digitnet.nn.network import Network


def block_layers(net: Network) -> list[int]:
    """Indices in ``net.layers`` of its transformer blocks (empty for other networks)."""
    return [i for i, layer in enumerate(net.layers) if isinstance(layer, Block)]


def _block_index(net: Network, block: int) -> int:
    blocks = block_layers(net)
    if not blocks:
        raise UsageError("this model has no transformer blocks (train one with --preset attention)")
    if not 1 <= block <= len(blocks):
        raise UsageError(f"--block must be from 1 to {len(blocks)}, got {block}")
    return blocks[block - 1]


def patch_grid(net: Network) -> tuple[int, int, int]:
    """(patch size, rows, columns) of the patch embedding's grid."""
    first = net.layers[0]
    if not isinstance(first, PatchEmbed):
        raise UsageError("this model does not start with a patch embedding: it is not a transformer "
                         "(train one with --preset attention)")
    _, h, w = first.in_shape
    return first.patch, h // first.patch, w // first.patch


# --- attention ----------------------------------------------------------------------------------
def rollout(maps: list[np.ndarray], residual: float = 0.5) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020) for one image: each block's attention averaged
    over its heads, mixed with the identity for the residual path that skips it (``residual``
    of it; rows still sum to 1), multiplied through the blocks in order. maps: per block
    (H, T, T). Returns (T, T): row i = how much token i at the top draws, through every path,
    on each input token."""
    T = maps[0].shape[-1]
    eye = np.eye(T)
    R = eye
    for att in maps:
        R = (residual * eye + (1 - residual) * att.mean(axis=0)) @ R
    return R


@dataclass
class AttentionView:
    """One image's attention: ``maps[b]`` (H, T, T) for block b + 1 (row i: where token i
    looks), ``mean[b]`` (T, T) over the heads, ``rollout`` (T, T), the patch grid and the
    network's scores (n_classes,) for the image."""

    maps: list[np.ndarray]
    mean: list[np.ndarray]
    rollout: np.ndarray
    patch: int
    grid: tuple[int, int]
    scores: np.ndarray

    def on_patches(self, row: np.ndarray) -> np.ndarray:
        """A token's weights over the patches (T,) as the grid (rows, columns); the weight on
        the class token is left out."""
        return row[1:].reshape(self.grid)

    def on_pixels(self, row: np.ndarray) -> np.ndarray:
        """The same, each patch's weight spread over its pixels (rows·P, columns·P), to draw
        over the digit."""
        return np.kron(self.on_patches(row), np.ones((self.patch, self.patch)))

    def class_token(self, block: int | None = None, head: int | None = None) -> np.ndarray:
        """Where the class token looks, as the patch grid: in ``block`` (1-based; None: the
        rollout), one ``head`` (0-based) or the mean over heads."""
        return self.looks(0, block, head)

    def looks(self, token: int, block: int | None = None, head: int | None = None) -> np.ndarray:
        """Where token ``token`` (0: the class token) looks, as the patch grid: in ``block``
        (1-based; None: the rollout), one ``head`` (0-based) or the mean over heads."""
        if block is None:
            return self.on_patches(self.rollout[token])
        att = self.maps[block - 1][head] if head is not None else self.mean[block - 1]
        return self.on_patches(att[token])

    def to_json(self) -> dict:
        """JSON-ready, rounded to 6 places: the patch grid, each block's maps (H, T, T) and
        their mean over heads (T, T), the rollout (T, T) and the class token's rollout as
        the patch grid. Row i of a map: where token i looks (0: the class token)."""
        def r(a):
            return np.round(np.asarray(a, np.float64), 6).tolist()

        return {"patch": self.patch, "grid": list(self.grid), "tokens": int(self.rollout.shape[0]),
                "blocks": [{"block": b + 1, "heads": int(m.shape[0]), "attention": r(m), "mean": r(mu)}
                           for b, (m, mu) in enumerate(zip(self.maps, self.mean))],
                "rollout": r(self.rollout), "class_token_rollout": r(self.class_token())}


def attention_view(net: Network, image: np.ndarray) -> AttentionView:
    """The attention of every block and head for one image (H, W) or (H·W,) in [0, 1]."""
    patch, rows, cols = patch_grid(net)
    x = np.asarray(image, net.params.dtype).reshape(1, -1)
    maps = [m[0] for m in network_attention(net, x)]
    if not maps:
        raise UsageError("this model has no transformer blocks")
    return AttentionView(maps, [m.mean(axis=0) for m in maps], rollout(maps), patch, (rows, cols),
                         net.scores(x)[0])


# --- the MLP neurons ---------------------------------------------------------------------------
def mlp_activations(net: Network, block: int, x: np.ndarray, chunk: int = 512) -> np.ndarray:
    """gelu(h) of block ``block``'s MLP (m, T, F) for images x (m, n_in): what each neuron
    says about each token."""
    target = _block_index(net, block)
    x = net._input(x)
    out = None
    for i in range(0, len(x), chunk):
        a = x[i:i + chunk]
        for layer, p in zip(net.layers[:target], net.views[:target]):
            a = layer.forward(p, a)[0]
        _, cache = net.layers[target].forward(net.views[target], a)
        hg = cache[7]                                       # Block.forward's cache: (…, h, hg)
        if out is None:
            out = np.empty((len(x), *hg.shape[1:]), hg.dtype)
        out[i:i + chunk] = hg
    return out


@dataclass
class NeuronQuestions:
    """For each neuron, the ``top`` patch tokens of the images that excite it most:
    ``sample`` and ``token`` (F, top) index the images and tokens (≥ 1), ``value`` the
    activations, best first."""

    sample: np.ndarray
    token: np.ndarray
    value: np.ndarray
    patch: int
    grid: tuple[int, int]

    def patches(self, images: np.ndarray, neuron: int) -> np.ndarray:
        """The neuron's top patches cut from ``images`` (m, H, W): (top, P, P)."""
        P, (_, cols) = self.patch, self.grid
        out = []
        for s, t in zip(self.sample[neuron], self.token[neuron]):
            r, c = divmod(int(t) - 1, cols)
            out.append(images[s, r * P:(r + 1) * P, c * P:(c + 1) * P])
        return np.array(out)


def neuron_questions(net: Network, block: int, x: np.ndarray, top: int = 9) -> NeuronQuestions:
    """Each MLP neuron of ``block``: the ``top`` (image, patch) pairs of x with its highest
    activations (the class token left out: it has no patch to show)."""
    patch, rows, cols = patch_grid(net)
    acts = mlp_activations(net, block, x)[:, 1:]            # (m, T − 1, F): patch tokens only
    m, n_q, F = acts.shape
    flat = acts.reshape(m * n_q, F)
    top = min(top, len(flat))
    best = np.argpartition(-flat, top - 1, axis=0)[:top].T  # (F, top), unordered
    vals = np.take_along_axis(flat.T, best, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    best, vals = np.take_along_axis(best, order, axis=1), np.take_along_axis(vals, order, axis=1)
    return NeuronQuestions(best // n_q, best % n_q + 1, vals, patch, (rows, cols))


def neuron_answers(net: Network, block: int) -> np.ndarray:
    """What each MLP neuron of ``block`` writes into the residual stream, read as the network
    reads the class token: its output direction W_2[:, j] through the final LayerNorm (the
    class-token read-out's, its shift β left out) and the head's weights (its biases left
    out): (F, n_classes), how far a unit of the neuron pushes each class's score. The terms
    left out are the same for every neuron."""
    p = net.views[_block_index(net, block)]
    i_cls = next(i for i, layer in enumerate(net.layers) if isinstance(layer, ClassToken))
    head = net.layers[i_cls + 1]
    if not isinstance(head, Dense):
        raise UsageError("the class token does not go straight into a dense head")
    gamma = net.views[i_cls]["gamma"]
    directions = p["W_2"].T                                 # (F, D): neuron j's output direction
    normed, _ = layernorm_forward(directions, gamma, np.zeros_like(gamma))
    return normed @ net.views[i_cls + 1]["W"].T             # (F, n_classes)


@dataclass
class Ablation:
    """Per-class accuracy (n_classes,) of the network as it is and with one MLP neuron
    silenced, and over all test images."""

    block: int
    neuron: int
    before: np.ndarray
    after: np.ndarray
    accuracy_before: float
    accuracy_after: float


def ablate(net: Network, block: int, neuron: int, x: np.ndarray, labels: np.ndarray) -> Ablation:
    """Silence neuron ``neuron`` of ``block``'s MLP — zero its outgoing weights W_2[:, neuron],
    which is the same as zeroing its activation for every token — and compare per-class
    accuracy on (x, labels)."""
    index = _block_index(net, block)
    F = net.views[index]["W_2"].shape[1]
    if not 0 <= neuron < F:
        raise UsageError(f"--ablate must be a neuron from 0 to {F - 1}, got {neuron}")
    silenced = net.copy()
    silenced.views[index]["W_2"][:, neuron] = 0
    n_classes = net.n_outputs
    labels = np.asarray(labels)

    def per_class(n):
        right = n.scores(x).argmax(axis=1) == labels
        counts = np.bincount(labels, minlength=n_classes)
        hits = np.bincount(labels, weights=right, minlength=n_classes)
        return hits / np.maximum(counts, 1), float(right.mean())

    (before, acc_b), (after, acc_a) = per_class(net), per_class(silenced)
    return Ablation(block, neuron, before, after, acc_b, acc_a)


# --- what ``inspect mlp`` shows ------------------------------------------------------------------
@dataclass
class MlpReport:
    """One block's MLP on a test set: the ``neurons`` chosen (k,) of ``n_neurons``, every
    neuron's questions and answers (F, n_classes), the test images (m, H, W) uint8 the
    questions' patches come from, the count of test images per class (n_classes,), and the
    ablation of one neuron (None unless asked)."""

    block: int
    neurons: np.ndarray
    n_neurons: int
    questions: NeuronQuestions
    answers: np.ndarray
    images: np.ndarray
    support: np.ndarray
    ablation: Ablation | None
    data: str

    def to_json(self, class_names) -> dict:
        """JSON-ready: each chosen neuron's question (test rows, tokens, patch positions and
        activations, best first) and answer (its push on each class's score), and the
        ablation per class (accuracy before, after and the change)."""
        cols = self.questions.grid[1]
        rows = []
        for j in self.neurons:
            q = [{"row": int(s), "token": int(t), "patch": list(divmod(int(t) - 1, cols)), "activation": round(float(v), 6)}
                 for s, t, v in zip(self.questions.sample[j], self.questions.token[j], self.questions.value[j])]
            ans = self.answers[j]
            rows.append({"neuron": int(j), "question": q, "answer": [round(float(v), 6) for v in ans],
                         "promotes": [int(c) for c in np.argsort(-ans, kind="stable")[:3]],
                         "demotes": [int(c) for c in np.argsort(ans, kind="stable")[:3]]})
        out = {"block": self.block, "n_neurons": self.n_neurons, "data": self.data, "split": "test",
               "images": int(len(self.images)), "top": int(self.questions.value.shape[1]), "patch": self.questions.patch,
               "grid": list(self.questions.grid), "neurons": rows, "ablation": None}
        ab = self.ablation
        if ab is not None:
            out["ablation"] = {"neuron": ab.neuron, "accuracy_before": ab.accuracy_before, "accuracy_after": ab.accuracy_after,
                               "change": ab.accuracy_after - ab.accuracy_before,
                               "classes": [{"class": i, "name": class_names[i], "support": int(n), "before": float(b),
                                            "after": float(a), "change": float(a - b)}
                                           for i, (n, b, a) in enumerate(zip(self.support, ab.before, ab.after))]}
        return out


def mlp_report(model, block: int, neurons: str | None = None, top: int = 9, ablate_neuron: int | None = None,
               data: str | None = None) -> MlpReport:
    """``inspect mlp``: block ``block``'s MLP neurons on the test split of ``data`` (default:
    the model's own data set): for the neurons ``neurons`` (a range such as 0:16, a list or
    ':'; default all, or the ablated one alone) their questions (the ``top`` test patches)
    and answers, and with ``ablate_neuron`` what zeroing that neuron does to each class."""
    from digitnet.analysis import load_split, parse_neurons
    from digitnet.nn.functions import to_unit_float

    net = model.network
    index = _block_index(net, block)
    F = net.views[index]["W_2"].shape[1]
    if top < 1:
        raise UsageError(f"--top must be at least 1, got {top}")
    if ablate_neuron is not None and not 0 <= ablate_neuron < F:       # said before the test set is read
        raise UsageError(f"--ablate must be a neuron from 0 to {F - 1}, got {ablate_neuron}")
    if neurons is None:
        neurons = ":" if ablate_neuron is None else str(ablate_neuron)
    chosen = parse_neurons(neurons, F, "--neuron")
    images, labels, dataset = load_split(model, data, "test")
    x = to_unit_float(images).reshape(len(images), -1)
    ablation = ablate(net, block, ablate_neuron, x, labels) if ablate_neuron is not None else None
    return MlpReport(block, chosen, F, neuron_questions(net, block, x, top), neuron_answers(net, block), images,
                     np.bincount(labels, minlength=net.n_outputs), ablation, data or model.data_spec)
