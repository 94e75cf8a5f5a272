"""One training step of a whole layer stack in one compiled call: the fast path for conv nets.

``conv_kernels`` gives each heavy layer a compiled stand-in, called one layer at a time from
Python. On 2 cores that costs more than the layers do for small nets: every parallel launch
hands work to the pool's threads (70-90 µs each with numba's workqueue pool on this VM, 1-2 µs
with OpenMP's), and Python walks ~25 layer calls a batch between them (LeNet-5 at batch 32,
workqueue: 8.4k samples/s on 2 threads layer by layer, 18.1k with this step, same run).
Here a batch is cut into one chunk of samples per thread, and each thread runs its chunk
through the whole step with no hand-off in between:

    forward   a_0 = x → conv → ReLU → pool → … → dense → softmax      (its own rows of each a_l)
    cost      C = −ln a_L[y] per sample;  δ_L = (a_L − y)/m            (softmax with cross-entropy)
    backward  the chain rule down the stack: each layer turns ∂C/∂(its output) into its
              parameters' gradient (the thread's partial sum) and ∂C/∂(its input)

then the partial gradients are summed in chunk order (the same bits for the same thread
count). One launch a batch instead of one per layer, and each layer's rows stay in the core
that made them. Each layer's math is the ``conv_kernels`` function its stand-in calls (the
same im2col + sgemm, pooling, ReLU and dense products), so the NumPy layers of ``digitnet.nn``
remain the reference both are tested against.

``StackStep.fits(net)`` says which networks it takes: conv, max pooling, flatten, dense,
dropout and ReLU layers, ending in softmax with cross-entropy, float32. Dropout's masks are
drawn in NumPy before the call, in the same order and from the same generator as the NumPy
layers draw them, so a step here and a step of ``Network.cost_and_gradient`` agree.
"""

from __future__ import annotations

import numpy as np

from digitnet import conv_kernels as ck
from digitnet.nn.conv import Conv, MaxPool
from digitnet.nn.layers import Activation, Dense, Dropout, Flatten

from numba import njit, prange  # noqa: E402  (conv_kernels has set numba's cache and threading layer)

# layer codes, and the columns of the plan (one int64 row per layer)
CONV, RELU, POOL, FLATTEN, DENSE, DROPOUT, SOFTMAX = range(7)
(CODE, IN, OUT, C_, H_, W_, F_, HO, WO, K, STRIDE, PAD, W_OFF, B_OFF, SUB, ROWS_DW, AUX, GIN, GOUT, NEED_DX,
 LEARNED) = range(21)
N_FIELDS = 21


@njit(cache=True)
def _rows(buf, m, n, lo):
    """buf as (m, n) rows for a thread whose samples start at lo: shifted so that its rows
    lie in buf[lo·stride, hi·stride), stride = len(buf) / m, whatever n ≤ stride is (two
    threads' rows never overlap, though the buffer is shared by layers of every width)."""
    base = lo * (buf.size // m - n)
    return buf[base:base + m * n].reshape((m, n))


@njit(cache=True)
def _forward_chunk(lo, hi, x, labels, batch, params, plan, acts, idx, masks, grads, work, losses):
    """Samples lo … hi−1 of x forward through every layer (their rows of each layer's
    output in ``acts``), then the softmax's cost per sample (``losses``) and
    δ_L = (a_L − y)/batch into the gradient buffer of the softmax's input (batch: the
    mini-batch's size, of which x may be a piece)."""
    m, n_in = x.shape
    x_flat = x.reshape(x.size)
    for q in range(lo * n_in, hi * n_in):
        acts[np.uint64(q)] = x_flat[np.uint64(q)]
    for l in range(plan.shape[0]):
        code, a_off, o_off = plan[l, CODE], plan[l, IN], plan[l, OUT]
        C, H, W, F, Ho, Wo = plan[l, C_], plan[l, H_], plan[l, W_], plan[l, F_], plan[l, HO], plan[l, WO]
        n_a, n_o = C * H * W, F * Ho * Wo                       # values a sample, in and out
        a2 = acts[a_off:a_off + m * n_a].reshape((m, n_a))
        o2 = acts[o_off:o_off + m * n_o].reshape((m, n_o))
        if code == CONV:
            k, sub = plan[l, K], plan[l, SUB]
            ckk, S = C * k * k, sub * Ho * Wo
            Wm = params[plan[l, W_OFF]:plan[l, W_OFF] + F * ckk].reshape((F, ckk))
            b = params[plan[l, B_OFF]:plan[l, B_OFF] + F]
            cols, z = work[:ckk * S].reshape((ckk, S)), work[ckk * S:(ckk + F) * S].reshape((F, S))
            ck._conv_forward_chunk(a2.reshape((m, C, H, W)), Wm, b, o2.reshape((m, F, Ho, Wo)), k,
                                   plan[l, STRIDE], plan[l, PAD], lo, hi, sub, cols, z)
        elif code == RELU:
            ck._relu_forward_rows(a2, o2, lo, hi)
        elif code == POOL:
            ix = idx[plan[l, AUX]:plan[l, AUX] + m * n_o].reshape((m, F, Ho, Wo))
            a4, o4 = a2.reshape((m, C, H, W)), o2.reshape((m, F, Ho, Wo))
            for s in range(lo, hi):
                ck._maxpool_forward_sample(a4, plan[l, K], plan[l, STRIDE], o4, ix, s)
        elif code == DENSE:
            Wm = params[plan[l, W_OFF]:plan[l, W_OFF] + F * n_a].reshape((F, n_a))
            b = params[plan[l, B_OFF]:plan[l, B_OFF] + F]
            ck._dense_forward_rows(a2, Wm, b, o2, lo, hi)
        elif code == DROPOUT:
            mk = masks[plan[l, AUX]:plan[l, AUX] + m * n_a]
            for q in range(lo * n_a, hi * n_a):
                acts[np.uint64(o_off + q)] = acts[np.uint64(a_off + q)] * mk[np.uint64(q)]
        elif code == SOFTMAX:
            # a = softmax(z); C = −ln max(a_y, 1e-12); δ = (a − e_y)/m at the softmax's input
            d2 = _rows(grads[plan[l, GOUT]], m, n_o, lo)
            for s in range(lo, hi):
                top = a2[s, 0]
                for j in range(1, n_o):
                    top = max(top, a2[s, j])
                total = np.float32(0.0)
                for j in range(n_o):
                    e = np.exp(a2[s, j] - top)
                    o2[s, j] = e
                    total += e
                for j in range(n_o):
                    o2[s, j] /= total
                y = labels[s]
                losses[s] = -np.log(max(np.float64(o2[s, y]), 1e-12))
                for j in range(n_o):
                    d2[s, j] = (o2[s, j] - (np.float32(1.0) if j == y else np.float32(0.0))) / batch
        # FLATTEN: its output is its input (the plan gives both the same place)


@njit(cache=True)
def _backward_chunk(lo, hi, m, params, plan, acts, idx, masks, grads, wt, work, pw, pb, gsum):
    """Samples lo … hi−1 back down the stack from δ_L: each learned layer adds nothing but
    writes its parameters' gradient summed over these samples into ``gsum`` (laid out like
    ``params``), and ∂C/∂(its input) for the layer below. ``wt``: each conv's Wᵀ."""
    for l in range(plan.shape[0] - 2, -1, -1):                 # the softmax (last) is done
        if not plan[l, LEARNED]:
            break
        code, a_off, o_off = plan[l, CODE], plan[l, IN], plan[l, OUT]
        C, H, W, F, Ho, Wo = plan[l, C_], plan[l, H_], plan[l, W_], plan[l, F_], plan[l, HO], plan[l, WO]
        n_a, n_o = C * H * W, F * Ho * Wo
        need_dx = plan[l, NEED_DX] != 0
        g_out = _rows(grads[plan[l, GIN]], m, n_o, lo)             # ∂C/∂(output)
        g_in = _rows(grads[plan[l, GOUT]], m, n_a, lo)             # ∂C/∂(input), written
        a2 = acts[a_off:a_off + m * n_a].reshape((m, n_a))
        if code == CONV:
            k, sub, rows_dW = plan[l, K], plan[l, SUB], plan[l, ROWS_DW] != 0
            ckk, S = C * k * k, sub * Ho * Wo
            WT = wt[plan[l, AUX]:plan[l, AUX] + ckk * F].reshape((ckk, F))
            cols, dcols = work[:ckk * S].reshape((ckk, S)), work[ckk * S:2 * ckk * S].reshape((ckk, S))
            d = work[2 * ckk * S:(2 * ckk + F) * S].reshape((F, S))
            dt = work[(2 * ckk + F) * S:2 * (ckk + F) * S].reshape((S, F))
            part_W, part_b = pw[:ckk * F], pb[:F]
            ck._conv_backward_chunk(a2.reshape((m, C, H, W)), WT, g_out.reshape((m, F, Ho, Wo)),
                                    g_in.reshape((m, C, H, W)), need_dx, rows_dW, k, plan[l, STRIDE],
                                    plan[l, PAD], lo, hi, sub, cols, d, dt, dcols, part_W, part_b)
            w_off, b_off = plan[l, W_OFF], plan[l, B_OFF]
            for f in range(F):
                for r in range(ckk):
                    gsum[w_off + f * ckk + r] = part_W[r * F + f] if rows_dW else part_W[f * ckk + r]
                gsum[b_off + f] = part_b[f]
        elif code == RELU:                                         # δ = ∂C/∂a ⊙ (a > 0), a its output
            ck._relu_backward_rows(acts[o_off:o_off + m * n_o].reshape((m, n_o)), g_out, g_in, lo, hi)
        elif code == POOL:
            ix = idx[plan[l, AUX]:plan[l, AUX] + m * n_o].reshape((m, F, Ho, Wo))
            g4, d4 = g_out.reshape((m, F, Ho, Wo)), g_in.reshape((m, C, H, W))
            for s in range(lo, hi):
                ck._maxpool_backward_sample(g4, ix, d4, plan[l, K], plan[l, STRIDE], s)
        elif code == DENSE:
            Wm = params[plan[l, W_OFF]:plan[l, W_OFF] + F * n_a].reshape((F, n_a))
            _dense_backward_rows(a2, Wm, g_out, gsum, plan[l, W_OFF], plan[l, B_OFF], g_in, need_dx, lo, hi)
        elif code == DROPOUT:
            mk = masks[plan[l, AUX]:plan[l, AUX] + m * n_a].reshape((m, n_a))
            for s in range(lo, hi):
                for j in range(n_a):
                    g_in[s, j] = g_out[s, j] * mk[s, j]
        # FLATTEN: ∂C/∂(input) is ∂C/∂(output) (the plan gives both the same buffer)


@njit(cache=True)
def _dense_backward_rows(a, W, delta, gsum, w_off, b_off, dx, need_dx, lo, hi):
    """Rows lo … hi−1 of a dense layer's gradients: gsum[W] (n_out, n_in) = δ[lo:hi]ᵀ a[lo:hi],
    gsum[b] = Σ δ[lo:hi], and dx[lo:hi] = δ[lo:hi] W when need_dx."""
    n_out, n_in = W.shape
    one, zero = np.float32(1.0), np.float32(0.0)
    r = hi - lo
    if r == 0:
        gsum[w_off:w_off + n_out * n_in] = 0.0
        gsum[b_off:b_off + n_out] = 0.0
        return
    d_addr = np.int64(delta.ctypes.data) + 4 * lo * n_out
    # ∂C/∂W (n_out, n_in) = δᵀ (n_out, r) @ a (r, n_in)
    ck._sgemm(ck.ROW_MAJOR, ck.TRANS, ck.NO_TRANS, n_out, n_in, r, one, d_addr, n_out,
              np.int64(a.ctypes.data) + 4 * lo * n_in, n_in, zero, np.int64(gsum.ctypes.data) + 4 * w_off, n_in)
    for u in range(n_out):
        acc = 0.0
        for i in range(lo, hi):
            acc += delta[i, u]
        gsum[b_off + u] = acc
    if need_dx:
        # ∂C/∂a (r, n_in) = δ (r, n_out) @ W (n_out, n_in)
        ck._sgemm(ck.ROW_MAJOR, ck.NO_TRANS, ck.NO_TRANS, r, n_in, n_out, one, d_addr, n_out,
                  np.int64(W.ctypes.data), n_in, zero, np.int64(dx.ctypes.data) + 4 * lo * n_in, n_in)


@njit(cache=True)
def _transpose_weights(params, plan, wt):
    """Each conv layer's Wᵀ (C·k·k, F) into ``wt`` at its place (backward's ∂C/∂cols = Wᵀ δ)."""
    for l in range(plan.shape[0]):
        if plan[l, CODE] == CONV and plan[l, LEARNED] and plan[l, NEED_DX]:
            F, ckk = plan[l, F_], plan[l, C_] * plan[l, K] * plan[l, K]
            w, t = plan[l, W_OFF], plan[l, AUX]
            for f in range(F):
                for r in range(ckk):
                    wt[t + r * F + f] = params[w + f * ckk + r]


@njit(cache=True, parallel=True)
def train_step(n_chunks, x, labels, batch, params, plan, acts, idx, masks, grads, wt, work, pw, pb, losses, g, part):
    """The gradient of the mean cost over a mini-batch of ``batch`` samples, of which x
    (m, n_in) is all or a piece, into g (laid out like params); losses (m,) get each sample's
    cost. The rows are cut into n_chunks, one per thread: chunk 0 sums its gradient into g,
    chunk t > 0 into part[t − 1], then g += part[0] + part[1] + … in order. The other arrays
    are the plan's buffers.

    One entry point for every thread count: on OpenMP's pool a launch costs 1-2 µs, and a
    second, serial entry point made the cold compile 42 s instead of 27 s. (On numba's workqueue
    pool, where no OpenMP runtime loads, a launch costs 70-90 µs: a few % of a small net's
    batch at one thread.)"""
    m = x.shape[0]
    _transpose_weights(params, plan, wt)
    for t in prange(n_chunks):
        lo, hi = ck._chunk(m, n_chunks, t)
        _forward_chunk(lo, hi, x, labels, batch, params, plan, acts, idx, masks, grads, work[t], losses)
        _backward_chunk(lo, hi, m, params, plan, acts, idx, masks, grads, wt, work[t], pw[t], pb[t],
                        g if t == 0 else part[t - 1])
    n = g.size
    for c in prange(n_chunks):                  # each thread sums its range of the vector
        lo, hi = ck._chunk(n, n_chunks, c)
        for t in range(n_chunks - 1):
            p = part[t]
            for j in range(lo, hi):
                g[np.uint64(j)] += p[np.uint64(j)]


class _Plan:
    """The plan and buffers of one batch size and thread count."""

    def __init__(self, net, m: int, n_chunks: int):
        layers, shapes = net.layers, net.shapes
        rows = np.zeros((len(layers), N_FIELDS), np.int64)
        size = [int(np.prod(s)) for s in shapes]                 # values a sample, per layer input
        act_at = [0]                                             # where each layer's input lives in acts
        idx_at = mask_at = wt_at = 0
        work = pw = pb = 1
        per_chunk = -(-m // n_chunks)
        for i, layer in enumerate(layers):
            r = rows[i]
            cin = shapes[i] if len(shapes[i]) == 3 else (size[i], 1, 1)
            cout = shapes[i + 1] if len(shapes[i + 1]) == 3 else (size[i + 1], 1, 1)
            r[C_], r[H_], r[W_] = cin
            r[F_], r[HO], r[WO] = cout
            r[IN] = act_at[i]
            r[LEARNED] = i >= net.first_learned
            r[NEED_DX] = i > net.first_learned
            if isinstance(layer, Flatten):
                r[CODE], r[OUT] = FLATTEN, act_at[i]
                act_at.append(act_at[i])
                continue
            r[OUT] = act_at[i] + m * size[i]
            act_at.append(int(r[OUT]))
            slot = net.slots[i]
            if slot:
                r[W_OFF], r[B_OFF] = slot["W"][0], slot["b"][0]
            if isinstance(layer, Conv):
                c, k, f = cin[0], layer.kernel, cout[0]
                P, ckk = cout[1] * cout[2], c * k * k
                sub = max(1, min(per_chunk, ck.ConvOp.COLUMNS // P, ck.ConvOp.CACHE_BYTES // (8 * P * (ckk + f))))
                r[CODE], r[K], r[STRIDE], r[PAD], r[SUB] = CONV, k, layer.stride, layer.padding, sub
                r[ROWS_DW] = ckk >= ck.ConvOp.ROWS_DW_FROM
                r[AUX], wt_at = wt_at, wt_at + ckk * f
                work = max(work, 2 * (ckk + f) * sub * P)
                pw, pb = max(pw, ckk * f), max(pb, f)
            elif isinstance(layer, MaxPool):
                r[CODE], r[K], r[STRIDE] = POOL, layer.size, layer.stride
                r[AUX], idx_at = idx_at, idx_at + m * size[i + 1]
            elif isinstance(layer, Dense):
                r[CODE] = DENSE
            elif isinstance(layer, Dropout):
                r[CODE] = DROPOUT
                r[AUX], mask_at = mask_at, mask_at + m * size[i]
            elif isinstance(layer, Activation) and layer.function == "relu":
                r[CODE] = RELU
            elif isinstance(layer, Activation) and layer.function == "softmax" and i == len(layers) - 1:
                r[CODE] = SOFTMAX
            else:
                raise ValueError(f"the fused step does not take {layer.describe()}")
        # ∂C/∂(output of layer i) alternates between the two gradient buffers going down;
        # a flatten passes its gradient on in the same buffer
        g_at = 0
        for i in range(len(layers) - 1, -1, -1):
            rows[i, GIN] = g_at
            if rows[i, CODE] != FLATTEN:
                g_at = 1 - g_at
            rows[i, GOUT] = g_at
        self.plan = rows
        self.m, self.n_chunks = m, n_chunks
        self.acts = np.zeros(act_at[-1] + m * size[-1], np.float32)
        out = int(rows[-1, OUT])
        self.probs = self.acts[out:out + m * size[-1]].reshape(m, size[-1])
        self.idx = np.zeros(max(idx_at, 1), np.int32)
        self.masks = np.ones(max(mask_at, 1), np.float32)
        self.grads = np.zeros((2, m * max(size)), np.float32)
        self.wt = np.zeros(max(wt_at, 1), np.float32)
        self.work = np.zeros((n_chunks, work), np.float32)
        self.pw = np.zeros((n_chunks, pw), np.float32)
        self.pb = np.zeros((n_chunks, pb), np.float64)
        self.losses = np.zeros(m, np.float64)
        self.part = np.zeros((max(n_chunks - 1, 1), net.n_params), np.float32)
        self.dropouts = [(layer.rate, int(r[AUX]), size[i]) for i, (layer, r) in enumerate(zip(layers, rows))
                         if isinstance(layer, Dropout)]


class StackStep:
    """A network's training step through the fused kernels: ``cost_and_gradient`` as
    ``Network.cost_and_gradient(x, labels, train=True, rng, g)`` computes it."""

    def __init__(self, net):
        self.net = net
        self._plans: dict[tuple[int, int], _Plan] = {}

    @staticmethod
    def fits(net) -> bool:
        """True when the fused step trains this network: float32 parameters; conv, max
        pooling, flatten, dense, dropout and ReLU layers; softmax output with cross-entropy."""
        if net.params.dtype != np.float32 or net.cost != "cross-entropy":
            return False
        *hidden, last = net.layers
        if not (isinstance(last, Activation) and last.function == "softmax"):
            return False
        for layer in hidden:
            if isinstance(layer, Activation):
                if layer.function != "relu":
                    return False
            elif not isinstance(layer, (Conv, MaxPool, Flatten, Dense, Dropout)):
                return False
        return True

    def _plan(self, m: int, n_chunks: int) -> _Plan:
        key = (m, n_chunks)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) > 4:                 # a new batch size (the last batch): keep it bounded
                self._plans.clear()
            plan = self._plans[key] = _Plan(self.net, m, n_chunks)
        return plan

    # rows one call takes at most: a larger mini-batch goes through in pieces, so memory stays
    # bounded whatever --batch-size asks (the cnn net holds ~0.35 MB a sample in flight)
    PIECE = 512

    def cost_and_gradient(self, x: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                          g: np.ndarray | None = None):
        """(mean cost, gradient into g laid out like params, output activations (m, classes))
        for a training batch x (m, n_in) with integer labels (m,). The output array may be
        reused by the next call."""
        net = self.net
        if not len(x):
            raise ValueError("an empty batch has no mean cost")
        x = np.ascontiguousarray(x, np.float32).reshape(len(x), -1)
        if not np.issubdtype(np.asarray(labels).dtype, np.integer):
            raise ValueError("labels must be integers")
        labels = np.ascontiguousarray(labels, np.int64)
        if x.shape[1] != net.n_inputs or labels.shape != (len(x),):      # the kernels check no bounds
            raise ValueError(f"a batch of {net.n_inputs} values a sample and one label each, not {x.shape[1]} values "
                             f"and labels of shape {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= net.n_outputs):
            raise ValueError(f"labels must lie in 0 … {net.n_outputs - 1}")
        m = len(x)
        if g is None:
            g = np.zeros_like(net.params)
        if g.shape != net.params.shape:
            raise ValueError(f"the gradient must have shape {net.params.shape}, not {g.shape}")
        if g.dtype != np.float32 or not g.flags.c_contiguous:      # written through float32, then copied
            cost, g32, probs = self.cost_and_gradient(x, labels, rng)
            g[...] = g32
            return cost, g, probs
        if m <= self.PIECE:
            p = self._plan(m, max(1, min(ck._threads(), m)))
            for rate, at, n in p.dropouts:           # the NumPy layer's draw, in the same order
                self._mask(rng, rate, p.masks[at:at + m * n])
            self._run(x, labels, m, p, g)
            return float(p.losses.mean()), g, p.probs
        # in pieces: the masks of the whole batch first (the same draw), then each piece's
        # gradient (of the whole batch's mean cost) added in piece order
        masks = [self._mask(rng, layer.rate, np.empty(m * int(np.prod(shape)), np.float32))
                 for layer, shape in zip(net.layers, net.shapes) if isinstance(layer, Dropout)]
        probs = np.empty((m, net.n_outputs), np.float32)
        total, tmp = 0.0, None
        for s0 in range(0, m, self.PIECE):
            s1 = min(m, s0 + self.PIECE)
            p = self._plan(s1 - s0, max(1, min(ck._threads(), s1 - s0)))
            for (_, at, n), mask in zip(p.dropouts, masks):
                p.masks[at:at + (s1 - s0) * n] = mask[s0 * n:s1 * n]
            if s0 == 0:
                self._run(x[s0:s1], labels[s0:s1], m, p, g)
            else:
                tmp = np.empty_like(g) if tmp is None else tmp
                self._run(x[s0:s1], labels[s0:s1], m, p, tmp)
                g += tmp
            probs[s0:s1] = p.probs
            total += float(p.losses.sum())
        return total / m, g, probs

    @staticmethod
    def _mask(rng: np.random.Generator, rate: float, out: np.ndarray) -> np.ndarray:
        """out = inverted dropout's mask (0, or 1/(1 − rate) with probability 1 − rate), drawn
        as ``Dropout.forward`` draws it; nothing drawn when rate is 0 (out = 1)."""
        if not rate:
            out[:] = 1.0
            return out
        np.greater_equal(rng.random(out.size, dtype=np.float32), np.float32(rate), out=out, casting="unsafe")
        out *= np.float32(1.0 / (1.0 - rate))
        return out

    def _run(self, x, labels, batch: int, p: _Plan, g: np.ndarray) -> None:
        """One kernel call: x's gradient share of a batch of ``batch`` samples into g."""
        args = (x, labels, np.float32(batch), self.net.params, p.plan, p.acts, p.idx, p.masks, p.grads, p.wt, p.work,
                p.pw, p.pb, p.losses, g)
        with ck._blas_one_thread(2):             # inside the pool's threads: OpenBLAS on one
            train_step(p.n_chunks, *args, p.part)


def training_step(net, fast: dict | None):
    """The step training takes for ``net``: ``step(x, labels, rng, g) -> (cost, g, outputs)``.
    The fused step when it takes the network and compiled stand-ins are wanted (``fast``);
    else the network's own chain rule, with ``fast``'s stand-ins for the heavy layers."""
    if fast is not None and StackStep.fits(net):
        return StackStep(net).cost_and_gradient
    return lambda x, labels, rng, g: net.cost_and_gradient(x, labels, True, rng, g, fast=fast)
