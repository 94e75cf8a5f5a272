"""The numba kernels of the vision transformer: the transformer block's forward and backward
(LayerNorm, the q/k/v, output and MLP products, attention, GELU) and the patch embedding, as
the compiled stand-ins ``Network.trace``/``backward`` take through ``fast=FAST`` — the same
results as the NumPy layers of ``digitnet.nn.attention``, to float32 rounding. Only training
imports this module; predict and inspect run the NumPy layers.

How a block runs. The batch is cut into chunks of samples (``prange`` over chunks; one chunk
on one thread, else up to four a thread, handed to whichever thread is free): a chunk owns its
samples' rows of every activation and input gradient, and its own partial of the block's
parameter gradient; the partials are summed in chunk order at the end (the bits depend on the
thread count, never on timing). A chunk is walked a few samples at a time — R = n·T rows — so
the rows stay in the core's cache, and each product is one call of NumPy's OpenBLAS sgemm from
that thread (held to one thread, as in ``conv_kernels``):

    forward (R rows)                          backward
    xn1 = LN1(x)                 (R, D)       dW_2 += doutᵀ hg        dhg  = dout W_2
    qkv = xn1 W_qkvᵀ + b_qkv     (R, 3D)      dh = dhg ⊙ gelu'(h)
    y   = attention(qkv)         (R, D)       dW_1 += dhᵀ xn2         dxn2 = dh W_1
    x1  = x + y W_oᵀ + b_o       (R, D)       dx1 = dout + LN2'(dxn2)
    xn2 = LN2(x1)                (R, D)       dW_o += dx1ᵀ y          dy   = dx1 W_o
    h   = xn2 W_1ᵀ + b_1         (R, F)       dqkv = attention'(dy)
    hg  = gelu(h)                (R, F)       dW_qkv += dqkvᵀ xn1     dxn1 = dqkv W_qkv
    out = x1 + hg W_2ᵀ + b_2     (R, D)       dx = dx1 + LN1'(dxn1)

The forward keeps x1, qkv, att, y, gelu'(h), gelu(h) and each LayerNorm's mean and 1/σ
(llm.c's buffers) in arrays that are reused once nothing holds them (``_Pool``); backward
recomputes xn1 and xn2. When only the class token's rows of ``dout`` are non-zero — the last
block, under the class-token read-out — the other tokens' rows contribute nothing to the MLP,
the output product and the queries, so backward runs those on the class token's rows alone
(strided rows, the same sgemm): exact, and a third of the time of a full backward.

Two functions numba would otherwise call one value at a time: ``_exp`` (2ⁿ·e^r with |r| ≤ ln2/2,
a degree-7 polynomial, 2ⁿ built from its bits; within ~2 ulp) and ``_tanh`` = 1 − 2/(e^{2u} + 1);
both vectorise. ``error_model="numpy"`` lets the divisions vectorise too (no ZeroDivisionError
checks), and sums over a row use ``fastmath={"reassoc", "contract"}`` — reordering only: NaN and
inf behave as without it, so divergence is still seen.
"""

from __future__ import annotations

import functools
import math
from contextlib import contextmanager

import numpy as np

from digitnet.conv_kernels import _blas_one_thread, _Buffers, set_threads  # noqa: F401  (also sets NUMBA_CACHE_DIR)
from digitnet.kernels import NO_TRANS, ROW_MAJOR, TRANS, _sgemm
from digitnet.nn.attention import layernorm_backward

import numba  # noqa: E402
from numba import njit, prange  # noqa: E402

REDUCE = {"reassoc", "contract"}                   # see the module docstring

_LOG2E, _LN2_HI, _LN2_LO = np.float32(1.4426950408889634), np.float32(0.693359375), np.float32(-2.12194440e-4)
_EXP_LO, _EXP_HI = np.float32(-87.0), np.float32(88.0)
_GELU_C, _GELU_A, _GELU_3A = np.float32(0.7978845608028654), np.float32(0.044715), np.float32(3 * 0.044715)
_LN_EPS = np.float32(1e-5)
_ONE, _HALF, _ZERO = np.float32(1.0), np.float32(0.5), np.float32(0.0)

# the block's parameters, in ``Block.param_shapes`` order (their offsets come in ``off``)
LN1G, LN1B, WQKV, BQKV, WO, BO, LN2G, LN2B, W1, B1, W2, B2 = range(12)
BLOCK_PARAMS = ("ln1_gamma", "ln1_beta", "W_qkv", "b_qkv", "W_o", "b_o", "ln2_gamma", "ln2_beta",
                "W_1", "b_1", "W_2", "b_2")


# --- exp and tanh that vectorise -------------------------------------------------------------
if numba.config.DISABLE_JIT:
    def _f32_from_bits(i):
        """The float32 whose bits are the int32 ``i``."""
        return np.array(i, np.int64).astype(np.int32).view(np.float32)[()]
else:
    from llvmlite import ir
    from numba.core import types
    from numba.extending import intrinsic

    @intrinsic
    def _f32_from_bits(typingctx, i):
        """The float32 whose bits are the integer ``i`` (its low 32 bits): a bitcast, which
        vectorises where an array view would not."""
        if not isinstance(i, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            v = args[0]
            if i.bitwidth > 32:
                v = builder.trunc(v, ir.IntType(32))
            elif i.bitwidth < 32:
                v = builder.sext(v, ir.IntType(32))
            return builder.bitcast(v, ir.FloatType())

        return types.float32(i), codegen


@njit(cache=True, error_model="numpy")
def _exp(x):
    """e^x for a float32 x (clamped to [−87, 88], NaN kept): e^x = 2ⁿ e^r, n = round(x/ln 2),
    r = x − n ln 2 (in two parts, so r is exact), e^r by its Taylor series to r⁷/7!."""
    x = _EXP_LO if x < _EXP_LO else x
    x = _EXP_HI if x > _EXP_HI else x
    n = np.floor(x * _LOG2E + _HALF)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = np.float32(1 / 5040)
    p = p * r + np.float32(1 / 720)
    p = p * r + np.float32(1 / 120)
    p = p * r + np.float32(1 / 24)
    p = p * r + np.float32(1 / 6)
    p = p * r + _HALF
    p = p * r + _ONE
    p = p * r + _ONE
    return p * _f32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))


@njit(cache=True, error_model="numpy")
def _tanh(u):
    """tanh u = 1 − 2/(e^{2u} + 1) (absolute error ~1e-7: near 0 as good as float32's 1 allows)."""
    return _ONE - np.float32(2.0) / (_exp(np.float32(2.0) * u) + _ONE)


# --- LayerNorm over rows -----------------------------------------------------------------------
@njit(cache=True, error_model="numpy", fastmath=REDUCE)
def _layernorm_rows(x, r0, nr, st, P, og, ob, xn, mean, rstd, keep):
    """xn[k·st] = γ ⊙ (x[r0 + k·st] − μ)/σ + β for k < nr; with ``keep`` also μ and 1/σ into
    mean, rstd (global rows). x (rows, D); xn (local rows, D)."""
    D = x.shape[1]
    inv_D = np.float32(1.0 / D)
    for k in range(nr):
        r = k * st
        row = x[r0 + r]
        s = _ZERO
        for j in range(D):
            s += row[j]
        mu = s * inv_D
        v = _ZERO
        for j in range(D):
            c = row[j] - mu
            v += c * c
        rs = _ONE / np.sqrt(v * inv_D + _LN_EPS)
        out = xn[r]
        for j in range(D):
            out[j] = (row[j] - mu) * rs * P[og + j] + P[ob + j]
        if keep:
            mean[r0 + r] = mu
            rstd[r0 + r] = rs


@njit(cache=True, error_model="numpy", fastmath=REDUCE)
def _layernorm_rows_backward(dxn, x, r0, nr, st, mean, rstd, P, og, base, out, part, pg, pb):
    """LayerNorm's backward for rows k·st, k < nr: with xhat = (x − μ)/σ and g = dxn ⊙ γ,
    out[r] = base[r] + (g − mean(g) − xhat · mean(g ⊙ xhat))/σ; ∂C/∂γ += dxn ⊙ xhat and
    ∂C/∂β += dxn into the thread's partial (at pg, pb). dxn, base, out: local rows (D wide);
    x, mean, rstd: global rows (r0 + local row)."""
    D = x.shape[1]
    inv_D = np.float32(1.0 / D)
    for k in range(nr):
        r = k * st
        row, d = x[r0 + r], dxn[r]
        mu, rs = mean[r0 + r], rstd[r0 + r]
        a = _ZERO
        b = _ZERO
        for j in range(D):
            xh = (row[j] - mu) * rs
            gj = d[j] * P[og + j]
            part[pg + j] += d[j] * xh
            part[pb + j] += d[j]
            a += gj
            b += gj * xh
        a *= inv_D
        b *= inv_D
        o, bs = out[r], base[r]
        for j in range(D):
            xh = (row[j] - mu) * rs
            o[j] = bs[j] + rs * (d[j] * P[og + j] - a - xh * b)


# --- small pieces ------------------------------------------------------------------------------
@njit(cache=True)
def _rows_plus_bias(dst, r0, nr, st, src, P, ob, add):
    """dst[r0 + k·st] = (src[r0 + k·st] if add else 0) + b, b = P[ob:ob + width], k < nr."""
    n = dst.shape[1]
    for k in range(nr):
        d = dst[r0 + k * st]
        if add:
            s = src[r0 + k * st]
            for j in range(n):
                d[j] = s[j] + P[ob + j]
        else:
            for j in range(n):
                d[j] = P[ob + j]


@njit(cache=True, error_model="numpy")
def _gelu_rows(h, hg, r0, R):
    """For rows r0 … r0+R−1, in place: h <- gelu'(h), and hg = gelu(h) (tanh approximation):
    with t = tanh(√(2/π)(v + 0.044715 v³)), gelu(v) = ½ v (1 + t) and
    gelu'(v) = ½(1 + t) + ½ v (1 − t²) √(2/π) (1 + 3·0.044715 v²). The forward needs gelu(h);
    backward needs only gelu'(h), made here from the same t."""
    F = h.shape[1]
    for r in range(r0, r0 + R):
        for j in range(F):
            v = h[r, j]
            t = _tanh(_GELU_C * (v + _GELU_A * v * v * v))
            hg[r, j] = _HALF * v * (_ONE + t)
            h[r, j] = _HALF * (_ONE + t) + _HALF * v * (_ONE - t * t) * _GELU_C * (_ONE + _GELU_3A * v * v)


@njit(cache=True)
def _times_rows(dh, g, r0, nr, st):
    """In place: dh[k·st] *= g[r0 + k·st] (δ = ∂C/∂gelu ⊙ gelu'), k < nr."""
    F = g.shape[1]
    for k in range(nr):
        for j in range(F):
            dh[k * st, j] *= g[r0 + k * st, j]


@njit(cache=True, fastmath=REDUCE)
def _column_sums(a, nr, st, part, o):
    """part[o + j] += Σ_k a[k·st, j] (a bias gradient into the thread's partial)."""
    n = a.shape[1]
    for k in range(nr):
        row = a[k * st]
        for j in range(n):
            part[o + j] += row[j]


# --- attention, one sample at a time -------------------------------------------------------------
# Per head the products are tiny (T×d by d×T): OpenBLAS's small-matrix sgemm does them on the
# strided q, k, v columns of qkv directly. The maps are kept transposed, keys × (heads ·
# queries), attᵀ[j, h·T + i] = att[h, i, j], so the softmax over the keys runs down columns
# and its loops go along rows H·T long: here LLVM's vector loop takes 64 iterations at a time
# (16 lanes, 4 deep) and shorter loops run one value at a time, as a row over the T keys (17
# for 7×7 patches) would.
@njit(cache=True, error_model="numpy")
def _softmax_columns(A, n):
    """Each of the first n columns of A (T, ·) <- softmax over its T rows, in place."""
    T = A.shape[0]
    top = np.empty(n, np.float32)
    tot = np.zeros(n, np.float32)
    for c in range(n):
        top[c] = A[0, c]
    for j in range(1, T):
        for c in range(n):
            v = A[j, c]
            top[c] = v if v > top[c] else top[c]
    for j in range(T):
        for c in range(n):
            e = _exp(A[j, c] - top[c])
            A[j, c] = e
            tot[c] += e
    for c in range(n):
        tot[c] = _ONE / tot[c]
    for j in range(T):
        for c in range(n):
            A[j, c] *= tot[c]


@njit(cache=True)
def _attention_sample(qkv_a, s, T, H, D, attT, attT_a, y_a, ly0):
    """Sample s's attention. Per head h: sᵀ = k (q/√d)ᵀ (keys × queries) into attT's columns
    h·T … h·T+T−1, softmax over the keys, then y_h = att v into y's columns of head h.
    qkv_a, y_a: addresses of qkv (m·T, 3D) and y (its row ly0 on, D wide); attT (T, H·T)
    this sample's maps at address attT_a."""
    d = D // H
    HT = H * T
    scale = np.float32(1.0 / np.sqrt(d))
    q_a = qkv_a + 4 * s * T * 3 * D
    for hh in range(H):
        # sᵀ (T, T) = k (T, d) qᵀ (d, T) / √d: q, k are d columns of qkv's rows (row stride 3D)
        _sgemm(ROW_MAJOR, NO_TRANS, TRANS, T, T, d, scale, q_a + 4 * (D + hh * d), 3 * D, q_a + 4 * hh * d, 3 * D,
               _ZERO, attT_a + 4 * hh * T, HT)
    _softmax_columns(attT, HT)
    for hh in range(H):
        # y_h (T, d) = att (T, T) v (T, d), att = (attᵀ)ᵀ
        _sgemm(ROW_MAJOR, TRANS, NO_TRANS, T, d, T, _ONE, attT_a + 4 * hh * T, HT, q_a + 4 * (2 * D + hh * d), 3 * D,
               _ZERO, y_a + 4 * (ly0 * D + hh * d), D)


@njit(cache=True, error_model="numpy")
def _attention_sample_backward(qkv_a, s, T, H, D, attT, attT_a, nq, dy_a, dqkv, dqkv_a, l0, dPT, dPT_a):
    """∂C/∂qkv of sample s into its local rows l0 … l0+T−1 of dqkv, from ∂C/∂y (dy_a: local
    rows, D wide); only the first ``nq`` queries carry a gradient (T, or 1 for the class token
    alone). Per head, transposed like the maps: ∂attᵀ = v dyᵀ, ∂v = attᵀ dy,
    ∂sᵀ = attᵀ ⊙ (∂attᵀ − Σ_keys ∂attᵀ ⊙ attᵀ), ∂q = ∂s k/√d, ∂k = ∂sᵀ q/√d.
    attT (T, H·T) the sample's maps; dPT (T, H·T) scratch."""
    d = D // H
    HT = H * T
    scale = np.float32(1.0 / np.sqrt(d))
    q_a = qkv_a + 4 * s * T * 3 * D
    dq_a = dqkv_a + 4 * l0 * 3 * D
    for hh in range(H):
        g_a = dy_a + 4 * (l0 * D + hh * d)
        # ∂attᵀ (T, nq) = v (T, d) dyᵀ (d, nq);  ∂v (T, d) = attᵀ (T, nq) dy (nq, d)
        _sgemm(ROW_MAJOR, NO_TRANS, TRANS, T, nq, d, _ONE, q_a + 4 * (2 * D + hh * d), 3 * D, g_a, D, _ZERO,
               dPT_a + 4 * hh * T, HT)
        _sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, T, d, nq, _ONE, attT_a + 4 * hh * T, HT, g_a, D, _ZERO,
               dq_a + 4 * (2 * D + hh * d), 3 * D)
    # through the softmax, down each query's column: ∂s = att ⊙ (∂att − Σ_keys ∂att ⊙ att)
    if nq == T:
        dot = np.zeros(HT, np.float32)
        for j in range(T):
            for c in range(HT):
                dot[c] += dPT[j, c] * attT[j, c]
        for j in range(T):
            for c in range(HT):
                dPT[j, c] = attT[j, c] * (dPT[j, c] - dot[c])
    else:
        for hh in range(H):
            for i in range(nq):
                c = hh * T + i
                dt = _ZERO
                for j in range(T):
                    dt += dPT[j, c] * attT[j, c]
                for j in range(T):
                    dPT[j, c] = attT[j, c] * (dPT[j, c] - dt)
    for hh in range(H):
        # ∂q (nq, d) = ∂s (nq, T) k (T, d)/√d;  ∂k (T, d) = ∂sᵀ (T, nq) q (nq, d)/√d
        _sgemm(ROW_MAJOR, TRANS, NO_TRANS, nq, d, T, scale, dPT_a + 4 * hh * T, HT, q_a + 4 * (D + hh * d), 3 * D,
               _ZERO, dq_a + 4 * hh * d, 3 * D)
        _sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, T, d, nq, scale, dPT_a + 4 * hh * T, HT, q_a + 4 * hh * d, 3 * D,
               _ZERO, dq_a + 4 * (D + hh * d), 3 * D)
        for i in range(nq, T):                        # queries without a gradient
            for c in range(d):
                dqkv[l0 + i, hh * d + c] = _ZERO


@njit(cache=True, parallel=True)
def _sum_partials(part, n_chunks, G):
    """G = Σ_t part[t] over the chunks, in chunk order (the same bits whichever thread ran
    which chunk); the threads split G into blocks."""
    n_p = G.shape[0]
    n_blocks = max(1, min(n_chunks, n_p // 4096))
    for b in prange(n_blocks):
        for k in range((n_p * b) // n_blocks, (n_p * (b + 1)) // n_blocks):
            acc = part[0, k]
            for t in range(1, n_chunks):
                acc += part[t, k]
            G[k] = acc


# --- the block --------------------------------------------------------------------------------
@njit(cache=True)
def _chunk(m, n_chunks, t):
    """Samples [lo, hi) of chunk t when m samples are cut into n_chunks near-equal chunks."""
    return (m * t) // n_chunks, (m * (t + 1)) // n_chunks


@njit(cache=True, parallel=True)
def block_forward(x, P, off, H, n_chunks, sub, out, x1, stats, qkv, att, y, h, hg, xn):
    """A transformer block's forward for a batch (see the module docstring). x, out, x1, y
    (m·T, D); qkv (m·T, 3D); att (m, T, H·T) the maps transposed; h (m·T, F) gets gelu'(h)
    and hg gelu(h); stats (4, m·T): μ and 1/σ of
    LN1 and LN2; P the block's parameters flat, ``off`` their offsets. Scratch per chunk:
    xn (n_chunks, sub·T, D)."""
    m, T = att.shape[0], att.shape[1]
    D = x.shape[1]
    F = h.shape[1]
    one = np.float32(1.0)
    Pa = np.int64(P.ctypes.data)
    qkv_a, y_a, x1_a = np.int64(qkv.ctypes.data), np.int64(y.ctypes.data), np.int64(x1.ctypes.data)
    h_a, hg_a, out_a = np.int64(h.ctypes.data), np.int64(hg.ctypes.data), np.int64(out.ctypes.data)
    xn_a, att_a = np.int64(xn.ctypes.data), np.int64(att.ctypes.data)
    for t in prange(n_chunks):
        lo, hi = _chunk(m, n_chunks, t)
        xn_t = xn[t]
        xn_ta = xn_a + 4 * t * xn.shape[1] * D
        for s0 in range(lo, hi, sub):
            n = min(sub, hi - s0)
            r0, R = s0 * T, n * T
            # xn1 = LN1(x);  qkv = xn1 W_qkvᵀ + b_qkv                              (R, 3D)
            _layernorm_rows(x, r0, R, 1, P, off[LN1G], off[LN1B], xn_t, stats[0], stats[1], True)
            _rows_plus_bias(qkv, r0, R, 1, qkv, P, off[BQKV], False)
            _sgemm(ROW_MAJOR, NO_TRANS, TRANS, R, 3 * D, D, one, xn_ta, D, Pa + 4 * off[WQKV], D, one,
                   qkv_a + 4 * r0 * 3 * D, 3 * D)
            for s in range(s0, s0 + n):
                _attention_sample(qkv_a, s, T, H, D, att[s], att_a + 4 * s * H * T * T, y_a, s * T)
            # x1 = x + y W_oᵀ + b_o                                                 (R, D)
            _rows_plus_bias(x1, r0, R, 1, x, P, off[BO], True)
            _sgemm(ROW_MAJOR, NO_TRANS, TRANS, R, D, D, one, y_a + 4 * r0 * D, D, Pa + 4 * off[WO], D, one,
                   x1_a + 4 * r0 * D, D)
            # h = LN2(x1) W_1ᵀ + b_1 (R, F);  hg = gelu(h), h <- gelu'(h);  out = x1 + hg W_2ᵀ + b_2
            _layernorm_rows(x1, r0, R, 1, P, off[LN2G], off[LN2B], xn_t, stats[2], stats[3], True)
            _rows_plus_bias(h, r0, R, 1, h, P, off[B1], False)
            _sgemm(ROW_MAJOR, NO_TRANS, TRANS, R, F, D, one, xn_ta, D, Pa + 4 * off[W1], D, one,
                   h_a + 4 * r0 * F, F)
            _gelu_rows(h, hg, r0, R)
            _rows_plus_bias(out, r0, R, 1, x1, P, off[B2], True)
            _sgemm(ROW_MAJOR, NO_TRANS, TRANS, R, D, F, one, hg_a + 4 * r0 * F, F, Pa + 4 * off[W2], F, one,
                   out_a + 4 * r0 * D, D)


@njit(cache=True, parallel=True)
def block_backward(x, P, off, H, n_chunks, sub, only0, dout, x1, stats, qkv, att, y, h, hg,
                   dx, G, part, xn, dA, dx1, dy, dqkv, dxn, dP):
    """A transformer block's backward for a batch: G (the block's gradient, flat like P) and
    dx (m·T, D) written. ``only0``: dout is zero but for each sample's token 0, so the MLP,
    W_o and the queries run on those rows alone. The forward's buffers as
    in ``block_forward``. Scratch per chunk: part (n_chunks, len(P)) the partial gradients;
    xn, dx1, dy, dxn (n_chunks, sub·T, D); dA (n_chunks, sub·T, F); dqkv (n_chunks, sub·T, 3D);
    dP (n_chunks, T, H·T)."""
    m, T = att.shape[0], att.shape[1]
    D = x.shape[1]
    F = h.shape[1]
    one, zero = np.float32(1.0), np.float32(0.0)
    Pa, part_a = np.int64(P.ctypes.data), np.int64(part.ctypes.data)
    y_a, h_a, hg_a, dout_a = np.int64(y.ctypes.data), np.int64(h.ctypes.data), np.int64(hg.ctypes.data), \
        np.int64(dout.ctypes.data)
    xn_a, dA_a, dx1_a = np.int64(xn.ctypes.data), np.int64(dA.ctypes.data), np.int64(dx1.ctypes.data)
    dy_a, dqkv_a, dxn_a = np.int64(dy.ctypes.data), np.int64(dqkv.ctypes.data), np.int64(dxn.ctypes.data)
    qkv_a, att_a, dP_a = np.int64(qkv.ctypes.data), np.int64(att.ctypes.data), np.int64(dP.ctypes.data)
    L = xn.shape[1]                                   # local rows of a chunk's scratch
    n_p = P.shape[0]
    st = T if only0 else 1                            # the rows that carry dout: every st-th
    nq = 1 if only0 else T
    for t in prange(n_chunks):
        lo, hi = _chunk(m, n_chunks, t)
        pt = part[t]
        pt[:] = zero
        pa = part_a + 4 * t * n_p
        xn_t, dA_t, dx1_t, dy_t, dqkv_t, dxn_t = xn[t], dA[t], dx1[t], dy[t], dqkv[t], dxn[t]
        xn_ta, dA_ta, dx1_ta = xn_a + 4 * t * L * D, dA_a + 4 * t * L * F, dx1_a + 4 * t * L * D
        dy_ta, dqkv_ta, dxn_ta = dy_a + 4 * t * L * D, dqkv_a + 4 * t * L * 3 * D, dxn_a + 4 * t * L * D
        for s0 in range(lo, hi, sub):
            n = min(sub, hi - s0)
            r0, R = s0 * T, n * T
            nr = n if only0 else R                    # rows of the MLP/W_o part, every st-th of R
            # out = x1 + hg W_2ᵀ + b_2:  dW_2 += doutᵀ hg (D, F);  db_2;  dhg = dout W_2 (nr, F)
            _sgemm(ROW_MAJOR, TRANS, NO_TRANS, D, F, nr, one, dout_a + 4 * r0 * D, st * D, hg_a + 4 * r0 * F,
                   st * F, one, pa + 4 * off[W2], F)
            _column_sums(dout[r0:r0 + R], nr, st, pt, off[B2])
            _sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, nr, F, D, one, dout_a + 4 * r0 * D, st * D, Pa + 4 * off[W2], F,
                   zero, dA_ta, st * F)
            # dh = dhg ⊙ gelu'(h);  dW_1 += dhᵀ xn2 (F, D);  db_1;  dxn2 = dh W_1 (nr, D)
            _times_rows(dA_t, h, r0, nr, st)
            _layernorm_rows(x1, r0, nr, st, P, off[LN2G], off[LN2B], xn_t, stats[2], stats[3], False)
            _sgemm(ROW_MAJOR, TRANS, NO_TRANS, F, D, nr, one, dA_ta, st * F, xn_ta, st * D, one, pa + 4 * off[W1], D)
            _column_sums(dA_t, nr, st, pt, off[B1])
            _sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, nr, D, F, one, dA_ta, st * F, Pa + 4 * off[W1], D,
                   zero, dxn_ta, st * D)
            # x1 = x + y W_oᵀ + b_o:  dx1 = dout + LN2'(dxn2);  dW_o += dx1ᵀ y;  dy = dx1 W_o
            if only0:
                dx1_t[:R] = zero                      # the other tokens' rows: no gradient
            _layernorm_rows_backward(dxn_t, x1, r0, nr, st, stats[2], stats[3], P, off[LN2G], dout[r0:r0 + R],
                                     dx1_t, pt, off[LN2G], off[LN2B])
            _sgemm(ROW_MAJOR, TRANS, NO_TRANS, D, D, nr, one, dx1_ta, st * D, y_a + 4 * r0 * D, st * D, one,
                   pa + 4 * off[WO], D)
            _column_sums(dx1_t, nr, st, pt, off[BO])
            _sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, nr, D, D, one, dx1_ta, st * D, Pa + 4 * off[WO], D,
                   zero, dy_ta, st * D)
            # y = attention(qkv): dqkv (R, 3D), every row (keys and values reach every token)
            for s in range(s0, s0 + n):
                _attention_sample_backward(qkv_a, s, T, H, D, att[s], att_a + 4 * s * H * T * T, nq, dy_ta, dqkv_t,
                                           dqkv_ta, (s - s0) * T, dP[t], dP_a + 4 * t * T * H * T)
            # qkv = xn1 W_qkvᵀ + b_qkv:  dW_qkv += dqkvᵀ xn1;  db_qkv;  dxn1 = dqkv W_qkv (R, D)
            _layernorm_rows(x, r0, R, 1, P, off[LN1G], off[LN1B], xn_t, stats[0], stats[1], False)
            _sgemm(ROW_MAJOR, TRANS, NO_TRANS, 3 * D, D, R, one, dqkv_ta, 3 * D, xn_ta, D, one,
                   pa + 4 * off[WQKV], D)
            _column_sums(dqkv_t, R, 1, pt, off[BQKV])
            _sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, R, D, 3 * D, one, dqkv_ta, 3 * D, Pa + 4 * off[WQKV], D,
                   zero, dxn_ta, D)
            # dx = dx1 + LN1'(dxn1)
            _layernorm_rows_backward(dxn_t, x, r0, R, 1, stats[0], stats[1], P, off[LN1G], dx1_t,
                                     dx[r0:r0 + R], pt, off[LN1G], off[LN1B])
    # the chunks' partials, summed in chunk order
    _sum_partials(part, n_chunks, G)


# --- the patch embedding --------------------------------------------------------------------------
@njit(cache=True, parallel=True)
def patch_forward(a, P, patch, n_chunks, out, cols, z):
    """out (m, T, D) = [cls; patches Wᵀ + b] + pos for images a (m, C, H, W). P: W (D, C·p·p),
    b, cls (D,), pos (T, D), flat. cols (m·(T − 1), C·p·p): the patches in reading order,
    kept for backward; z (m·(T − 1), D) scratch."""
    m, C, Hh, Ww = a.shape
    T, D = out.shape[1], out.shape[2]
    nx = Ww // patch
    K = C * patch * patch
    n_q = T - 1
    o_b, o_cls, o_pos = D * K, D * K + D, D * K + 2 * D
    one, zero = np.float32(1.0), np.float32(0.0)
    Pa, cols_a, z_a = np.int64(P.ctypes.data), np.int64(cols.ctypes.data), np.int64(z.ctypes.data)
    for t in prange(n_chunks):
        lo, hi = _chunk(m, n_chunks, t)
        for s in range(lo, hi):
            for q in range(n_q):
                py, px = q // nx, q % nx
                row = cols[s * n_q + q]
                for c in range(C):
                    for i in range(patch):
                        src = a[s, c, py * patch + i]
                        for j in range(patch):
                            row[(c * patch + i) * patch + j] = src[px * patch + j]
        # z (n·(T − 1), D) = patches (n·(T − 1), C·p·p) Wᵀ
        _sgemm(ROW_MAJOR, NO_TRANS, TRANS, (hi - lo) * n_q, D, K, one, cols_a + 4 * lo * n_q * K, K, Pa, K,
               zero, z_a + 4 * lo * n_q * D, D)
        for s in range(lo, hi):
            o = out[s]
            for j in range(D):
                o[0, j] = P[o_cls + j] + P[o_pos + j]
            for q in range(1, T):
                zr = z[s * n_q + q - 1]
                for j in range(D):
                    o[q, j] = zr[j] + P[o_b + j] + P[o_pos + q * D + j]


@njit(cache=True, parallel=True)
def patch_backward(cols, grad, n_chunks, G, part, dz):
    """The patch embedding's gradient, G flat like P: ∂W = Σ δᵀ patches, ∂b = Σ δ over the
    patch tokens, ∂cls = Σ δ[:, 0], ∂pos = Σ δ over the samples (its input's gradient is never
    needed: it reads the image). grad (m, T, D); cols as ``patch_forward`` kept them;
    part (n_chunks, len(G)) the threads' partials; dz (m·(T − 1), D) scratch."""
    m, T, D = grad.shape
    K = cols.shape[1]
    n_q = T - 1
    o_b, o_cls, o_pos = D * K, D * K + D, D * K + 2 * D
    one = np.float32(1.0)
    n_p = G.shape[0]
    cols_a, dz_a, part_a = np.int64(cols.ctypes.data), np.int64(dz.ctypes.data), np.int64(part.ctypes.data)
    for t in prange(n_chunks):
        lo, hi = _chunk(m, n_chunks, t)
        pt = part[t]
        pt[:] = np.float32(0.0)
        for s in range(lo, hi):
            g = grad[s]
            for q in range(T):
                for j in range(D):
                    pt[o_pos + q * D + j] += g[q, j]
            for j in range(D):
                pt[o_cls + j] += g[0, j]
            for q in range(1, T):
                dzr = dz[s * n_q + q - 1]
                for j in range(D):
                    pt[o_b + j] += g[q, j]
                    dzr[j] = g[q, j]
        # ∂W (D, C·p·p) += δᵀ (D, n·(T − 1)) patches (n·(T − 1), C·p·p)
        _sgemm(ROW_MAJOR, TRANS, NO_TRANS, D, K, (hi - lo) * n_q, one, dz_a + 4 * lo * n_q * D, D,
               cols_a + 4 * lo * n_q * K, K, one, part_a + 4 * t * n_p, K)
    _sum_partials(part, n_chunks, G)


# --- the stand-ins Network takes as fast= ------------------------------------------------------------
def _f32(x: np.ndarray) -> np.ndarray:
    """x as a C-contiguous float32 array (no copy when it already is one)."""
    return np.ascontiguousarray(x, np.float32)


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _span(views: dict) -> np.ndarray | None:
    """A layer's arrays as one flat float32 array, when they lie back to back in one flat
    buffer in their order (as ``Network.views_of`` lays them out: the view shares memory);
    else None."""
    arrays = list(views.values())
    first = arrays[0]
    base = first.base
    if base is None or base.ndim != 1 or base.dtype != np.float32 or not base.flags.c_contiguous:
        return None
    start = pos = _address(first)
    for v in arrays:
        if v.base is not base or v.dtype != np.float32 or not v.flags.c_contiguous or _address(v) != pos:
            return None
        pos += v.nbytes
    offset = (start - _address(base)) // 4
    return base[offset:offset + (pos - start) // 4]


_PARAMS: dict[int, tuple[dict, np.ndarray]] = {}


def _params_flat(p: dict) -> np.ndarray:
    """A layer's parameters as one flat float32 array: the network's own memory when they lie
    back to back (remembered per dict: a network hands its layers the same one every batch),
    else a gathered copy."""
    hit = _PARAMS.get(id(p))
    if hit is not None and hit[0] is p:
        return hit[1]
    flat = _span(p)
    if flat is None:
        return np.concatenate([_f32(v).reshape(-1) for v in p.values()])
    if len(_PARAMS) > 256:
        _PARAMS.clear()
    _PARAMS[id(p)] = (p, flat)
    return flat


def _write_grads(g: dict, flat_target, G: np.ndarray) -> None:
    """Copy the gradient G into the views g, unless G already is their memory."""
    if flat_target is not None:
        return
    pos = 0
    for v in g.values():
        v[...] = G[pos:pos + v.size].reshape(v.shape)
        pos += v.size


def _Pool() -> _Buffers:
    """Arrays reused from batch to batch (``conv_kernels._Buffers``), one name for all of a
    layer's outputs: a forward's outputs and caches live until backward has used them, then
    the next batch takes them back (fresh arrays of a few MB would fault in every page on every
    batch, which costs more than a block's arithmetic here); up to 64 of one shape (4 blocks ×
    a few each)."""
    return _Buffers(per_key=64)


def _n_chunks(m: int, per_chunk: int = 8) -> int:
    """Chunks to cut m samples into: one when training on one thread; else up to four per
    thread, of at least ``per_chunk`` samples, handed out as threads come free (dynamic
    scheduling, ``_dynamic``): on a shared machine a thread that loses its core for a while
    then holds up the batch by one small chunk, not by half of it."""
    threads = numba.get_num_threads()
    if threads == 1 or m < 2:
        return 1
    return max(min(threads, m), min(4 * threads, m // per_chunk))


@contextmanager
def _dynamic(n_chunks: int):
    """The kernels' ``prange`` over chunks hands one chunk at a time to a free thread, and
    OpenBLAS runs each product on the thread that calls it."""
    with _blas_one_thread(n_chunks), numba.parallel_chunksize(1 if n_chunks > 1 else 0):
        yield


class _BlockCache:
    """What the compiled forward keeps for backward (see ``block_forward``)."""

    __slots__ = ("x", "x1", "stats", "qkv", "att", "y", "h", "hg")

    def __init__(self, x, x1, stats, qkv, att, y, h, hg):
        self.x, self.x1, self.stats, self.qkv, self.att, self.y, self.h, self.hg = x, x1, stats, qkv, att, y, h, hg


class BlockOp:
    """``Block``'s stand-in: the same output, parameter gradients and ∂C/∂x (float32 networks;
    other dtypes go to the NumPy layer)."""

    ROWS = 256                  # rows a thread takes at a time (sub-batch of samples × tokens)

    def __init__(self):
        self.pool = _Pool()

    @staticmethod
    def offsets(layer) -> np.ndarray:
        """Where each of the block's arrays starts in its flat parameters (``BLOCK_PARAMS`` order)."""
        shapes = layer.param_shapes()
        assert tuple(shapes) == BLOCK_PARAMS, tuple(shapes)
        sizes = [math.prod(s) for s in shapes.values()]
        return np.array([sum(sizes[:i]) for i in range(len(sizes))], np.int64)

    def _plan(self, layer, m):
        T, D = layer.in_shape
        n_chunks = _n_chunks(m)
        sub = max(1, min(-(-m // n_chunks), self.ROWS // T))
        return T, D, layer.mlp * D, layer.heads, n_chunks, sub

    def forward(self, layer, p, a, train=False, rng=None):
        if a.dtype != np.float32 or p["W_qkv"].dtype != np.float32:
            return layer.forward(p, a, train, rng)
        a = _f32(a)
        m = len(a)
        T, D, F, H, n_chunks, sub = self._plan(layer, m)
        P = _params_flat(p)
        x = a.reshape(m * T, D)
        get = functools.partial(self.pool.take, "out")
        out, x1, y = get((m * T, D)), get((m * T, D)), get((m * T, D))
        qkv, att, stats = get((m * T, 3 * D)), get((m, T, H * T)), get((4, m * T))
        h, hg = get((m * T, F)), get((m * T, F))
        S = self.pool
        xn = S.scratch("xn", (n_chunks, sub * T, D))
        with _dynamic(n_chunks):
            block_forward(x, P, self.offsets(layer), H, n_chunks, sub, out, x1, stats, qkv, att, y, h, hg, xn)
        return out.reshape(m, T, D), _BlockCache(x, x1, stats, qkv, att, y, h, hg)

    def backward(self, layer, p, cache, grad, g, need_dx=True):
        if not isinstance(cache, _BlockCache):
            return layer.backward(p, cache, grad, g, need_dx)
        grad = _f32(grad)
        m = len(grad)
        T, D, F, H, n_chunks, sub = self._plan(layer, m)
        P = _params_flat(p)
        target = _span(g)
        G = target if target is not None else np.empty(P.shape, np.float32)
        only0 = T > 1 and not grad[:, 1:].any()
        S = self.pool
        L = sub * T
        dx = self.pool.take("out", (m * T, D)) if need_dx else S.scratch("no_dx", (m * T, D))
        with _dynamic(n_chunks):
            block_backward(cache.x, P, self.offsets(layer), H, n_chunks, sub, only0, grad.reshape(m * T, D),
                           cache.x1, cache.stats, cache.qkv, cache.att, cache.y, cache.h, cache.hg, dx, G,
                           S.scratch("part", (n_chunks, P.size)), S.scratch("xn", (n_chunks, L, D)),
                           S.scratch("dA", (n_chunks, L, F)), S.scratch("dx1", (n_chunks, L, D)),
                           S.scratch("dy", (n_chunks, L, D)), S.scratch("dqkv", (n_chunks, L, 3 * D)),
                           S.scratch("dxn", (n_chunks, L, D)), S.scratch("dP", (n_chunks, T, H * T)))
        _write_grads(g, target, G)
        return dx.reshape(m, T, D) if need_dx else None


class PatchOp:
    """``PatchEmbed``'s stand-in (float32 networks; others go to the NumPy layer). It never
    computes ∂C/∂image: a patch embedding is the first layer (``need_dx`` False); when asked
    (the input gradient of dream, say), the NumPy layer answers."""

    def __init__(self):
        self.pool = _Pool()

    def forward(self, layer, p, a, train=False, rng=None):
        if a.dtype != np.float32 or p["W"].dtype != np.float32:
            return layer.forward(p, a, train, rng)
        a = _f32(a)
        m = len(a)
        T, D = layer.out_shape
        K = layer.in_shape[0] * layer.patch ** 2
        out, cols = self.pool.take("out", (m, T, D)), self.pool.take("out", (m * (T - 1), K))
        n_chunks = _n_chunks(m)
        with _dynamic(n_chunks):
            patch_forward(a, _params_flat(p), layer.patch, n_chunks, out, cols,
                          self.pool.scratch("z", (m * (T - 1), D)))
        return out, ("fast", cols)

    def backward(self, layer, p, cache, grad, g, need_dx=True):
        if not (isinstance(cache, tuple) and cache[0] == "fast"):
            return layer.backward(p, cache, grad, g, need_dx)
        cols = cache[1]
        if need_dx:                                      # the NumPy layer's cache is the patches, (m, T − 1, K)
            return layer.backward(p, cols.reshape(len(grad), -1, cols.shape[1]), grad, g, need_dx)
        grad = _f32(grad)
        m, T, D = grad.shape
        n_chunks = _n_chunks(m)
        target = _span(g)
        G = target if target is not None else np.empty(sum(v.size for v in g.values()), np.float32)
        with _dynamic(n_chunks):
            patch_backward(cols, grad, n_chunks, G, self.pool.scratch("part", (n_chunks, G.size)),
                           self.pool.scratch("dz", (m * (T - 1), D)))
        _write_grads(g, target, G)
        return None


class ClassTokenOp:
    """``ClassToken``'s stand-in: the NumPy layer's own arithmetic (a LayerNorm of m rows),
    with ∂C/∂tokens — zero but for token 0 — written into a reused array rather than a fresh
    one each batch."""

    def __init__(self):
        self.pool = _Pool()

    def forward(self, layer, p, a, train=False, rng=None):
        return layer.forward(p, a, train, rng)

    def backward(self, layer, p, cache, grad, g, need_dx=True):
        if not need_dx or grad.dtype != np.float32:
            return layer.backward(p, cache, grad, g, need_dx)
        ln, shape = cache
        d0, g["gamma"][...], g["beta"][...] = layernorm_backward(grad, ln, p["gamma"])
        dx = self.pool.take("out", shape)
        dx[:, 1:] = 0
        dx[:, 0] = d0
        return dx


# layer type -> stand-in (merged into the training's fast map beside conv_kernels.FAST)
FAST: dict[str, object] = {"block": BlockOp(), "patch": PatchOp(), "cls": ClassTokenOp()}
