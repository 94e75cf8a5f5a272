"""A vision transformer's layers, in NumPy: patch embedding, the pre-norm transformer block
(LayerNorm, multi-head self-attention, an MLP with GELU, two residuals) and the class-token
read-out ("But what is a GPT?" and "Attention in transformers", on 28×28 digits).

The math is written as llm.c's ``train_gpt2.c`` writes it: each piece a pair of functions,
``X_forward`` returning its output and what its backward needs (LayerNorm's ``xhat``/``rstd``,
attention's probabilities ``att``), ``X_backward`` right after it. The layers compose them.
Unlike llm.c, backward *returns* its gradients (the layers then write them into ``g``).

Shapes in comments: m samples, T tokens (the patches and the class token, which is token 0),
D the token width, H heads of d = D/H values each, F = r·D the MLP's hidden width.

    PatchEmbed  (m, C, H, W) -> (m, T, D)    each P×P patch through one linear map, the class
                                             token in front, learned position embeddings added
    Block       (m, T, D) -> (m, T, D)       x1 = x + MHSA(LN1(x));  out = x1 + MLP(LN2(x1))
    ClassToken  (m, T, D) -> (m, D)          the final LayerNorm of the class token

GELU is the tanh approximation (GPT-2's, llm.c's). Only NumPy here: predict and inspect run
these forwards without numba; ``digitnet.attention_kernels`` holds the compiled stand-ins.
"""

from __future__ import annotations

import math

import numpy as np

from digitnet.nn.layers import Layer, _fill_normal

LN_EPS = 1e-5                           # inside LayerNorm's square root, as PyTorch and llm.c
GELU_C = math.sqrt(2.0 / math.pi)


# --- the pieces, forward and backward side by side -----------------------------------------
def linear_forward(x, W, b):
    """out = x Wᵀ + b over the last axis. x (..., n_in); W (n_out, n_in); b (n_out,). The rows
    of every sample go through one product (a 3-D ``@`` would make one per sample)."""
    out = x.reshape(-1, x.shape[-1]) @ W.T                              # (rows, n_out)
    out += b
    return out.reshape(*x.shape[:-1], len(b))                           # (..., n_out)


def linear_backward(dout, x, W):
    """(∂C/∂x, ∂C/∂W, ∂C/∂b) of ``linear_forward`` given ∂C/∂out (..., n_out)."""
    d2, x2 = dout.reshape(-1, dout.shape[-1]), x.reshape(-1, x.shape[-1])
    dx = (d2 @ W).reshape(x.shape)                                      # (..., n_in)
    return dx, d2.T @ x2, d2.sum(axis=0)                                # (n_out, n_in), (n_out,)


def layernorm_forward(x, gamma, beta):
    """Each row normalised to mean 0 and variance 1, then scaled and shifted:
    out = γ ⊙ (x − μ)/σ + β over the last axis. x (..., D); γ, β (D,).
    Returns (out, (xhat, rstd)) with xhat = (x − μ)/σ (..., D) and rstd = 1/σ (..., 1)."""
    mean = x.mean(axis=-1, keepdims=True)                               # (..., 1)
    xc = x - mean
    rstd = 1.0 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + LN_EPS)   # (..., 1)
    xhat = xc * rstd                                                    # (..., D)
    return xhat * gamma + beta, (xhat, rstd)


def layernorm_backward(dout, cache, gamma):
    """(∂C/∂x, ∂C/∂γ, ∂C/∂β) of ``layernorm_forward``. With g = ∂C/∂xhat = dout ⊙ γ, and xhat
    depending on every value of its row through μ and σ:
    ∂C/∂x = (g − mean(g) − xhat · mean(g ⊙ xhat)) / σ   (means over the row)."""
    xhat, rstd = cache
    D = xhat.shape[-1]
    dgamma = (dout * xhat).reshape(-1, D).sum(axis=0)                   # (D,)
    dbeta = dout.reshape(-1, D).sum(axis=0)                             # (D,)
    g = dout * gamma                                                    # (..., D)
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    return dx, dgamma, dbeta


def attention_forward(qkv, heads):
    """Multi-head scaled dot-product self-attention, no mask: every token looks at every token.
    qkv (m, T, 3D) holds each token's query, key and value side by side, each D wide and cut
    into ``heads`` heads of d values. Per head: att = softmax(q kᵀ / √d) over the keys
    (m, H, T, T), y = att v. Returns (y (m, T, D), the heads concatenated again;
    (q, k, v, att)), q, k, v (m, H, T, d)."""
    m, T, D3 = qkv.shape
    d = D3 // 3 // heads
    q, k, v = qkv.reshape(m, T, 3, heads, d).transpose(2, 0, 3, 1, 4)   # each (m, H, T, d)
    s = (q @ k.transpose(0, 1, 3, 2)) * d ** -0.5                       # (m, H, T, T): query row, key column
    s -= s.max(axis=-1, keepdims=True)
    att = np.exp(s)
    att /= att.sum(axis=-1, keepdims=True)                              # each query's weights sum to 1
    y = att @ v                                                         # (m, H, T, d)
    return y.transpose(0, 2, 1, 3).reshape(m, T, D3 // 3), (q, k, v, att)


def attention_backward(dy, cache):
    """∂C/∂qkv (m, T, 3D) of ``attention_forward`` given ∂C/∂y (m, T, D). Through y = att v:
    ∂C/∂att = dy vᵀ and ∂C/∂v = attᵀ dy; through the softmax (each row):
    ∂C/∂s = att ⊙ (∂C/∂att − Σ_keys ∂C/∂att ⊙ att); through s = q kᵀ/√d:
    ∂C/∂q = ∂C/∂s k/√d and ∂C/∂k = ∂C/∂sᵀ q/√d."""
    q, k, v, att = cache
    m, H, T, d = q.shape
    dy = dy.reshape(m, T, H, d).transpose(0, 2, 1, 3)                   # (m, H, T, d)
    datt = dy @ v.transpose(0, 1, 3, 2)                                 # (m, H, T, T)
    dv = att.transpose(0, 1, 3, 2) @ dy                                 # (m, H, T, d)
    ds = att * (datt - (datt * att).sum(axis=-1, keepdims=True))        # (m, H, T, T)
    ds *= d ** -0.5
    dq = ds @ k                                                         # (m, H, T, d)
    dk = ds.transpose(0, 1, 3, 2) @ q                                   # (m, H, T, d)
    return np.stack([dq, dk, dv], axis=2).transpose(0, 3, 2, 1, 4).reshape(m, T, 3 * H * d)


def _gelu_tanh(h):
    """t = tanh(√(2/π) (h + 0.044715 h³)), in one array (in place: these arrays are large)."""
    t = np.asarray(h * h)                   # an array even for a 0-d h
    t *= 0.044715
    t += 1.0
    t *= h
    t *= GELU_C
    return np.tanh(t, out=t)


def gelu_forward(h):
    """GELU, tanh approximation: 0.5 h (1 + tanh(√(2/π) (h + 0.044715 h³))). Backward needs h."""
    g = _gelu_tanh(h)
    g += 1.0
    g *= h
    g *= 0.5
    return g


def gelu_backward(dout, h):
    """∂C/∂h of ``gelu_forward``: dout ⊙ [0.5 (1 + t) + 0.5 h (1 − t²) √(2/π) (1 + 3·0.044715 h²)],
    t = tanh(√(2/π) (h + 0.044715 h³))."""
    t = _gelu_tanh(h)
    return dout * (0.5 * (1.0 + t) + 0.5 * h * (1.0 - t * t) * GELU_C * (1.0 + 3 * 0.044715 * h * h))


# --- the layers ----------------------------------------------------------------------------
def _tokens(layer, in_shape):
    if len(in_shape) != 2:
        raise ValueError(f"{layer.describe()} needs tokens (T, D) from a patch embedding, got shape {in_shape}")
    return in_shape


class PatchEmbed(Layer):
    """The image cut into P×P patches (T − 1 of them, in reading order), each flattened and
    mapped to a D-wide token: e = W patch + b, W (D, C, P, P); then a learned class token
    ``cls`` (D,) in front (token 0) and a learned position embedding ``pos`` (T, D) added to
    every token. This is a convolution with kernel = stride = P; W's rows are its filters."""

    type = "patch"
    SETTINGS = {"patch": (int, 1, 28), "dim": (int, 1, 1024)}

    def __init__(self, patch: int, dim: int):
        self.patch, self.dim = patch, dim

    def output_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ValueError(f"{self.describe()} needs images (channels, height, width), got shape {in_shape}")
        c, h, w = in_shape
        if h % self.patch or w % self.patch:
            raise ValueError(f"{self.describe()}: {self.patch}×{self.patch} patches do not tile {h}×{w} images "
                             f"(for 28×28: patch 4, 7 or 14)")
        return ((h // self.patch) * (w // self.patch) + 1, self.dim)

    def param_shapes(self):
        c, P = self.in_shape[0], self.patch
        T = self.out_shape[0]
        return {"W": (self.dim, c, P, P), "b": (self.dim,), "cls": (self.dim,), "pos": (T, self.dim)}

    def init_params(self, p, rng, gain):
        c, P = self.in_shape[0], self.patch
        _fill_normal(p["W"], rng, c * P * P, self.dim, "xavier")
        p["cls"][...] = rng.normal(0.0, 0.02, p["cls"].shape)
        p["pos"][...] = rng.normal(0.0, 0.02, p["pos"].shape)

    def patches(self, a):
        """Images (m, C, H, W) as rows of patches (m, T − 1, C·P·P), in reading order."""
        m, (c, h, w), P = len(a), self.in_shape, self.patch
        return a.reshape(m, c, h // P, P, w // P, P).transpose(0, 2, 4, 1, 3, 5).reshape(m, -1, c * P * P)

    def forward(self, p, a, train=False, rng=None):
        x = self.patches(a)                                             # (m, T − 1, C·P·P)
        e = linear_forward(x, p["W"].reshape(self.dim, -1), p["b"])     # (m, T − 1, D)
        out = np.empty((len(a), *self.out_shape), e.dtype)
        out[:, 0] = p["cls"]                                            # token 0: the class token
        out[:, 1:] = e
        out += p["pos"]                                                 # (m, T, D)
        return out, x

    def backward(self, p, x, grad, g, need_dx=True):
        D, (c, h, w), P = self.dim, self.in_shape, self.patch
        np.sum(grad, axis=0, out=g["pos"])                              # ∂C/∂pos: every sample's (T, D)
        np.sum(grad[:, 0], axis=0, out=g["cls"])                        # (D,)
        dx, dW, db = linear_backward(grad[:, 1:], x, p["W"].reshape(D, -1))
        g["W"][...] = dW.reshape(g["W"].shape)
        g["b"][...] = db
        if not need_dx:
            return None
        m = len(grad)
        return dx.reshape(m, h // P, w // P, c, P, P).transpose(0, 3, 1, 4, 2, 5).reshape(m, c, h, w)

    def macs(self):
        return (self.out_shape[0] - 1) * self.dim * self.in_shape[0] * self.patch ** 2

    def scratch(self):
        T, D = self.out_shape                       # output, the patch rows and their embedding
        return T * D + (T - 1) * (self.in_shape[0] * self.patch ** 2 + D)

    def describe(self):
        return f"patch{self.patch}x{self.dim}"


class Block(Layer):
    """A pre-norm transformer block on (m, T, D) tokens, ``heads`` heads, an MLP r·D wide:

        x1  = x  + (MHSA(LN1(x)))     attention: tokens exchange information
        out = x1 + MLP(LN2(x1))        MLP: each token alone, W_2 gelu(W_1 · + b_1) + b_2

    MHSA(u) = concat_h(softmax(q_h k_hᵀ/√d) v_h) W_oᵀ + b_o with [q k v] = u W_qkvᵀ + b_qkv."""

    type = "block"
    SETTINGS = {"heads": (int, 1, 64), "dim": (int, 1, 1024), "mlp": (int, 1, 16)}

    def __init__(self, heads: int, dim: int, mlp: int = 4):
        self.heads, self.dim, self.mlp = heads, dim, mlp

    def output_shape(self, in_shape):
        T, D = _tokens(self, in_shape)
        if D != self.dim:
            raise ValueError(f"{self.describe()} takes {self.dim}-wide tokens, got {D}-wide ones")
        if D % self.heads:
            raise ValueError(f"{self.describe()}: {self.heads} heads do not divide the token width {D}")
        return in_shape

    def param_shapes(self):
        D, F = self.dim, self.mlp * self.dim
        return {"ln1_gamma": (D,), "ln1_beta": (D,), "W_qkv": (3 * D, D), "b_qkv": (3 * D,),
                "W_o": (D, D), "b_o": (D,), "ln2_gamma": (D,), "ln2_beta": (D,),
                "W_1": (F, D), "b_1": (F,), "W_2": (D, F), "b_2": (D,)}

    def init_params(self, p, rng, gain):
        for name in ("ln1_gamma", "ln2_gamma"):
            p[name][...] = 1.0
        for name in ("W_qkv", "W_o", "W_1", "W_2"):
            n_out, n_in = p[name].shape
            _fill_normal(p[name], rng, n_in, n_out, "xavier")

    def forward(self, p, x, train=False, rng=None):
        xn1, ln1 = layernorm_forward(x, p["ln1_gamma"], p["ln1_beta"])  # (m, T, D)
        qkv = linear_forward(xn1, p["W_qkv"], p["b_qkv"])               # (m, T, 3D)
        y, att = attention_forward(qkv, self.heads)                     # (m, T, D)
        x1 = x + linear_forward(y, p["W_o"], p["b_o"])                  # (m, T, D) the first residual
        xn2, ln2 = layernorm_forward(x1, p["ln2_gamma"], p["ln2_beta"])
        h = linear_forward(xn2, p["W_1"], p["b_1"])                     # (m, T, F)
        hg = gelu_forward(h)
        out = x1 + linear_forward(hg, p["W_2"], p["b_2"])               # (m, T, D) the second residual
        return out, (xn1, ln1, att, y, xn2, ln2, h, hg)

    def backward(self, p, cache, dout, g, need_dx=True):
        xn1, ln1, att, y, xn2, ln2, h, hg = cache
        # out = x1 + mlp: ∂C/∂x1 gets dout straight through the residual, plus the MLP's path
        dhg, g["W_2"][...], g["b_2"][...] = linear_backward(dout, hg, p["W_2"])      # (m, T, F)
        dh = gelu_backward(dhg, h)
        dxn2, g["W_1"][...], g["b_1"][...] = linear_backward(dh, xn2, p["W_1"])      # (m, T, D)
        dx1, g["ln2_gamma"][...], g["ln2_beta"][...] = layernorm_backward(dxn2, ln2, p["ln2_gamma"])
        dx1 += dout
        # x1 = x + attention: the same again
        dy, g["W_o"][...], g["b_o"][...] = linear_backward(dx1, y, p["W_o"])         # (m, T, D)
        dqkv = attention_backward(dy, att)                                            # (m, T, 3D)
        dxn1, g["W_qkv"][...], g["b_qkv"][...] = linear_backward(dqkv, xn1, p["W_qkv"])
        dx, g["ln1_gamma"][...], g["ln1_beta"][...] = layernorm_backward(dxn1, ln1, p["ln1_gamma"])
        return dx + dx1 if need_dx else None                                          # (m, T, D)

    def macs(self):
        T, D = self.in_shape
        F = self.mlp * D
        return T * D * (3 * D + D + 2 * F) + 2 * T * T * D

    def scratch(self):
        T, D = self.in_shape                        # what forward keeps (see its cache) and out
        return T * (9 * D + 2 * self.mlp * D) + 2 * self.heads * T * T

    def describe(self):
        return f"block{self.heads}x{self.dim}" + (f"m{self.mlp}" if self.mlp != 4 else "")


class ClassToken(Layer):
    """The transformer's read-out: the final LayerNorm of the class token (token 0), the one
    row the dense head sees. (m, T, D) -> (m, D); the other tokens get no gradient here."""

    type = "cls"

    def output_shape(self, in_shape):
        return (_tokens(self, in_shape)[1],)

    def param_shapes(self):
        D = self.in_shape[1]
        return {"gamma": (D,), "beta": (D,)}

    def init_params(self, p, rng, gain):
        p["gamma"][...] = 1.0

    def forward(self, p, x, train=False, rng=None):
        out, ln = layernorm_forward(x[:, 0], p["gamma"], p["beta"])     # (m, D)
        return out, (ln, x.shape)

    def backward(self, p, cache, grad, g, need_dx=True):
        ln, shape = cache
        d0, g["gamma"][...], g["beta"][...] = layernorm_backward(grad, ln, p["gamma"])
        if not need_dx:
            return None
        dx = np.zeros(shape, grad.dtype)
        dx[:, 0] = d0                                                   # (m, T, D): only token 0 was read
        return dx


ATTENTION_LAYERS = (PatchEmbed, Block, ClassToken)


# --- looking inside --------------------------------------------------------------------------
def attention_maps(layer: Block, p: dict, x: np.ndarray) -> np.ndarray:
    """The attention probabilities of ``layer`` for its input tokens x (m, T, D):
    (m, H, T, T), row i = where token i looks (sums to 1), token 0 the class token."""
    xn1, _ = layernorm_forward(x, p["ln1_gamma"], p["ln1_beta"])
    _, (_, _, _, att) = attention_forward(linear_forward(xn1, p["W_qkv"], p["b_qkv"]), layer.heads)
    return att


def network_attention(net, x: np.ndarray) -> list[np.ndarray]:
    """Every block's attention maps for images x, in order: [(m, H, T, T), …] (NumPy only)."""
    a = net._input(x)
    maps = []
    for layer, p in zip(net.layers, net.views):
        if isinstance(layer, Block):
            maps.append(attention_maps(layer, p, a))
        a = layer.forward(p, a)[0]
    return maps
