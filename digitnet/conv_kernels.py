"""The numba kernels of the layer stack: convolution, max pooling, ReLU and dense, as the compiled
stand-ins ``Network.trace``/``backward``/``cost_and_gradient`` take through ``fast=FAST``
(same results as the NumPy layers in ``digitnet.nn``, to float32 rounding).

Only training imports this module (numba costs ~0.3 s to import). Activations keep the
NumPy layers' layout, (m, C, H, W), so a stand-in and a NumPy layer can follow each other;
float32 arrays only (another dtype, e.g. a float64 copy for gradient checks, goes to the
NumPy layer). Dense layers run the same BLAS products as NumPy, but on numba's threads.

How the convolution runs. The batch is cut into one chunk of samples per thread (``prange``
over chunks: each thread owns its samples' outputs and input gradients, and its own partial
weight gradient; the partials are summed in a fixed order at the end). A thread walks its
chunk a few samples at a time, so the unrolled windows stay in its core's cache:

    cols (C·k·k, n·P)  = im2col of n samples         (P = H'·W' output positions a sample)
    z    (F, n·P)      = W (F, C·k·k) @ cols          -> out[s, f] = z[f, s's P columns] + b[f]
    ∂C/∂W             += δ (F, n·P) @ colsᵀ           (the thread's partial; as cols @ δᵀ
                                                        when C·k·k is large)
    dcols (C·k·k, n·P) = Wᵀ @ δ                        -> col2im adds each window back: ∂C/∂a

Each product is one call of NumPy's own OpenBLAS sgemm (``digitnet.kernels._sgemm``) made
from inside the thread, with OpenBLAS held to one thread meanwhile (``_blas_one_thread``) so
the two pools never compete for a core. Backward unrolls the windows again from the input
(the forward cache is the input itself): the copy is cheap, and a whole batch of windows
would be many MB that no cache holds.

Threads: ``set_threads(n)`` sets numba's count; training calls it with ``--threads``, as it
limits BLAS with threadpoolctl. Results depend on the thread count in the last bits (the
partial sums), as BLAS results do; never on timing. The arrays the stand-ins return are
reused from batch to batch once nothing refers to them any more (``_Buffers``).
"""

from __future__ import annotations

import ctypes
import os
import sys
from contextlib import contextmanager

import numpy as np

from digitnet.kernels import NO_TRANS, ROW_MAJOR, TRANS, _find_cblas_sgemm, _sgemm  # also sets NUMBA_CACHE_DIR

import numba  # noqa: E402  (after digitnet.kernels has pointed numba at its cache directory)
from numba import njit, prange  # noqa: E402

# OpenMP's thread pool first, numba's own (workqueue) where no OpenMP runtime loads. A
# workqueue launch wakes sleeping workers: 70-90 µs a launch on this VM, against 1-2 µs for
# OpenMP's, whose workers spin a moment after each kernel before they sleep (LeNet-5 at batch
# 32, 2 threads, fused step: 19.8k samples/s with workqueue, 25.4k with OpenMP; the
# transformer at batch 128 1.48x PyTorch with workqueue, 1.95x with OpenMP, same machine).
# The spinning is harmless only while nothing else wants the cores between kernels: every
# product inside a parallel kernel runs on OpenBLAS held to one thread (``_blas_one_thread``),
# so OpenBLAS's own pool never spins beside OpenMP's (with the layers called one by one and
# NumPy's BLAS between them, it did: 190 samples/s). An explicit NUMBA_THREADING_LAYER wins.
if not os.environ.get("NUMBA_THREADING_LAYER") and not os.environ.get("NUMBA_THREADING_LAYER_PRIORITY"):
    numba.config.THREADING_LAYER = "default"
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]


def set_threads(n: int) -> int:
    """Use ``n`` threads (at least 1, at most numba's pool size) in the parallel kernels;
    returns the count set."""
    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


# --- OpenBLAS held to one thread inside our own threads ------------------------------------
def _openblas_threads_api():
    """(get, set) for the thread count of the OpenBLAS that ``_sgemm`` calls; None when
    ``_sgemm`` is not OpenBLAS (then nothing needs holding)."""
    if os.environ.get("DIGITNET_NO_CBLAS"):
        return None
    address, path = _find_cblas_sgemm()
    if address is None:
        return None
    lib = ctypes.CDLL(path)
    for prefix in ("scipy_openblas", "openblas"):
        get = getattr(lib, f"{prefix}_get_num_threads64_", None)
        put = getattr(lib, f"{prefix}_set_num_threads64_", None)
        if get is not None and put is not None:
            get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
            return get, put
    return None


_BLAS_THREADS = _openblas_threads_api()


@contextmanager
def _blas_one_thread(n_chunks: int):
    """While our ``n_chunks`` threads each call sgemm, OpenBLAS runs each call on the calling
    thread (else every call would wake OpenBLAS's pool: 2 × 2 threads on 2 cores)."""
    if n_chunks <= 1 or _BLAS_THREADS is None:
        yield
        return
    get, put = _BLAS_THREADS
    before = get()
    put(1)
    try:
        yield
    finally:
        put(before)


# --- convolution: im2col and col2im, a few samples at a time -------------------------------
# Indexing note: every hot loop indexes flat arrays with ``np.uint64(i)``. With a signed index
# numba adds a wraparound test (i < 0: i += n) to each access, which keeps LLVM from
# vectorising the short rows these loops copy (W' values): 6-12x slower here. The indices
# are computed as int64 and cast where used, never mixed with uint64 (that promotes to float).
@njit(cache=True)
def _im2col(a, s0, n, k, stride, pad, Ho, Wo, cols):
    """cols[(c·k + i)·k + j, t·P + y·W' + x] = a[s0 + t, c, y·stride + i − pad, x·stride + j − pad]
    (0 where that falls in the padding), for t < n. a (m, C, H, W); cols (C·k·k, ≥ n·P)."""
    C, H, W = a.shape[1], a.shape[2], a.shape[3]
    P, ld = Ho * Wo, cols.shape[1]
    src = a.reshape(a.size)
    dst = cols.reshape(cols.size)
    zero = np.float32(0.0)
    if stride == 1 and pad == 0:                # every window inside the map: plain row copies
        for c in range(C):                      # (a loop of its own: 2x faster than the general one)
            for i in range(k):
                for j in range(k):
                    r = (c * k + i) * k + j
                    for t in range(n):
                        for y in range(Ho):
                            o, q = r * ld + t * P + y * Wo, (((s0 + t) * C + c) * H + y + i) * W + j
                            for x in range(Wo):
                                dst[np.uint64(o + x)] = src[np.uint64(q + x)]
        return
    for c in range(C):
        for i in range(k):
            for j in range(k):
                r = (c * k + i) * k + j
                # output columns x whose input column x·stride + j − pad lies inside the map
                x_lo = min(Wo, max(0, (pad - j + stride - 1) // stride))
                x_hi = max(x_lo, min(Wo, (W - 1 + pad - j) // stride + 1))
                for t in range(n):
                    plane = ((s0 + t) * C + c) * H
                    for y in range(Ho):
                        o = r * ld + t * P + y * Wo
                        iy = y * stride + i - pad
                        if iy < 0 or iy >= H:
                            for x in range(Wo):
                                dst[np.uint64(o + x)] = zero
                            continue
                        q = (plane + iy) * W + j - pad       # input index of x = 0, before x·stride
                        for x in range(x_lo):
                            dst[np.uint64(o + x)] = zero
                        if stride == 1:
                            for x in range(x_lo, x_hi):
                                dst[np.uint64(o + x)] = src[np.uint64(q + x)]
                        else:
                            for x in range(x_lo, x_hi):
                                dst[np.uint64(o + x)] = src[np.uint64(q + x * stride)]
                        for x in range(x_hi, Wo):
                            dst[np.uint64(o + x)] = zero


@njit(cache=True)
def _col2im(dcols, s0, n, k, stride, pad, Ho, Wo, dx):
    """The adjoint of ``_im2col``: dx[s0 + t] = Σ over windows of their gradients dcols,
    each added back where its value was read (padding dropped). dx (m, C, H, W) is written
    for samples s0 … s0+n−1 (zeroed first)."""
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    P, ld = Ho * Wo, dcols.shape[1]
    src = dcols.reshape(dcols.size)
    dst = dx.reshape(dx.size)
    zero = np.float32(0.0)
    for q in range(s0 * C * H * W, (s0 + n) * C * H * W):
        dst[np.uint64(q)] = zero
    if stride == 1 and pad == 0:
        for c in range(C):
            for i in range(k):
                for j in range(k):
                    r = (c * k + i) * k + j
                    for t in range(n):
                        for y in range(Ho):
                            o, q = r * ld + t * P + y * Wo, (((s0 + t) * C + c) * H + y + i) * W + j
                            for x in range(Wo):
                                dst[np.uint64(q + x)] += src[np.uint64(o + x)]
        return
    for c in range(C):
        for i in range(k):
            for j in range(k):
                r = (c * k + i) * k + j
                x_lo = min(Wo, max(0, (pad - j + stride - 1) // stride))
                x_hi = max(x_lo, min(Wo, (W - 1 + pad - j) // stride + 1))
                for t in range(n):
                    plane = ((s0 + t) * C + c) * H
                    for y in range(Ho):
                        iy = y * stride + i - pad
                        if iy < 0 or iy >= H:
                            continue
                        o = r * ld + t * P + y * Wo
                        q = (plane + iy) * W + j - pad
                        if stride == 1:
                            for x in range(x_lo, x_hi):
                                dst[np.uint64(q + x)] += src[np.uint64(o + x)]
                        else:
                            for x in range(x_lo, x_hi):
                                dst[np.uint64(q + x * stride)] += src[np.uint64(o + x)]


@njit(cache=True)
def _chunk(m, n_chunks, t):
    """Samples [lo, hi) of chunk t when m samples are cut into n_chunks near-equal chunks."""
    return (m * t) // n_chunks, (m * (t + 1)) // n_chunks


# Each kernel below is a serial function over a range of samples (``_…_chunk``), called
# once for the whole batch by the serial entry point, or once per chunk inside ``prange`` by
# the ``…_parallel`` one: a parallel launch costs a thread hand-off (~10-20 µs), which small
# layers and one thread do without.
@njit(cache=True)
def _conv_forward_chunk(a, W, b, out, k, stride, pad, lo, hi, sub, cols, z):
    """out[lo:hi] = conv(a[lo:hi], W) + b, ``sub`` samples per product.
    cols (C·k·k, sub·P), z (F, sub·P): this chunk's work arrays."""
    F, CKK = W.shape
    Ho, Wo = out.shape[2], out.shape[3]
    P = Ho * Wo
    ld = cols.shape[1]                               # = sub·P, the work arrays' row length
    one, zero = np.float32(1.0), np.float32(0.0)
    W_addr, out_addr = np.int64(W.ctypes.data), np.int64(out.ctypes.data)
    C_addr, Z_addr = np.int64(cols.ctypes.data), np.int64(z.ctypes.data)
    o_flat, z_flat = out.reshape(out.size), z.reshape(z.size)
    for s0 in range(lo, hi, sub):
        n = min(sub, hi - s0)
        _im2col(a, s0, n, k, stride, pad, Ho, Wo, cols)
        if n == 1:
            # one sample: z (F, P) = W (F, C·k·k) @ cols (C·k·k, P) is out[s0] itself
            _sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, F, P, CKK, one, W_addr, CKK, C_addr, ld,
                   zero, out_addr + 4 * s0 * F * P, P)
            for f in range(F):
                o, bf = (s0 * F + f) * P, b[f]
                for q in range(P):
                    o_flat[np.uint64(o + q)] += bf
            continue
        # z (F, n·P) = W @ cols (C·k·k, n·P); then out[s0 + s, f] = z[f, s's P columns] + b[f]
        _sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, F, n * P, CKK, one, W_addr, CKK, C_addr, ld, zero, Z_addr, ld)
        for s in range(n):
            for f in range(F):
                o, q0, bf = ((s0 + s) * F + f) * P, f * ld + s * P, b[f]
                for q in range(P):
                    o_flat[np.uint64(o + q)] = z_flat[np.uint64(q0 + q)] + bf


@njit(cache=True)
def conv_forward(a, W, b, out, k, stride, pad, sub, cols, z):
    """out = conv(a, W) + b for a batch, on the calling thread. a (m, C, H, W); W (F, C·k·k);
    b (F,); out (m, F, H', W'), written. Work arrays cols (1, C·k·k, sub·P), z (1, F, sub·P),
    P = H'·W'."""
    _conv_forward_chunk(a, W, b, out, k, stride, pad, 0, a.shape[0], sub, cols[0], z[0])


@njit(cache=True, parallel=True)
def conv_forward_parallel(a, W, b, out, k, stride, pad, n_chunks, sub, cols, z):
    """``conv_forward`` with the batch cut into n_chunks, one per thread; cols, z have one
    work array per chunk (n_chunks, …)."""
    m = a.shape[0]
    for t in prange(n_chunks):
        lo, hi = _chunk(m, n_chunks, t)
        _conv_forward_chunk(a, W, b, out, k, stride, pad, lo, hi, sub, cols[t], z[t])


@njit(cache=True)
def _conv_backward_chunk(a, WT, delta, dx, need_dx, rows_dW, k, stride, pad, lo, hi, sub,
                         cols, d, dt, dcols, part_W, part_b):
    """This chunk's share of a convolution's gradients: part_W (C·k·k·F,) and part_b (F,),
    written with the sums over samples lo … hi−1; dx[lo:hi] written when need_dx.
    rows_dW picks the product for ∂C/∂W: True, ∂C/∂Wᵀ (C·k·k, F) += cols @ δᵀ with δ copied
    to rows (faster when C·k·k is large); False, ∂C/∂W (F, C·k·k) += δ @ colsᵀ on δ as it is
    (no copy: small C·k·k). Work arrays: cols, dcols (C·k·k, sub·P); d (F, sub·P); dt (sub·P, F)."""
    CKK, F = WT.shape
    Ho, Wo = delta.shape[2], delta.shape[3]
    P = Ho * Wo
    ld = cols.shape[1]
    one, zero = np.float32(1.0), np.float32(0.0)
    WT_addr, delta_addr = np.int64(WT.ctypes.data), np.int64(delta.ctypes.data)
    C_addr, d_addr = np.int64(cols.ctypes.data), np.int64(d.ctypes.data)
    dt_addr, dC_addr = np.int64(dt.ctypes.data), np.int64(dcols.ctypes.data)
    pW_addr = np.int64(part_W.ctypes.data)
    delta_flat, d_flat, dt_flat = delta.reshape(delta.size), d.reshape(d.size), dt.reshape(dt.size)
    part_W[:] = 0.0
    part_b[:] = 0.0
    for s0 in range(lo, hi, sub):
        n = min(sub, hi - s0)
        _im2col(a, s0, n, k, stride, pad, Ho, Wo, cols)
        for s in range(n):                          # ∂C/∂b: δ summed over positions
            for f in range(F):
                src = ((s0 + s) * F + f) * P
                acc = 0.0
                for q in range(P):
                    acc += delta_flat[np.uint64(src + q)]
                part_b[f] += acc
        # δ of these samples as columns (F, n·P): δ itself for one sample, else a copy
        D_addr, ldD = delta_addr + 4 * s0 * F * P, P
        if n > 1 and (need_dx or not rows_dW):
            D_addr, ldD = d_addr, ld
            for s in range(n):
                for f in range(F):
                    src, col = ((s0 + s) * F + f) * P, f * ld + s * P
                    for q in range(P):
                        d_flat[np.uint64(col + q)] = delta_flat[np.uint64(src + q)]
        if rows_dW:
            # δ as rows (n·P, F); ∂C/∂Wᵀ (C·k·k, F) += cols (C·k·k, n·P) @ δᵀ
            for s in range(n):
                for f in range(F):
                    src, row = ((s0 + s) * F + f) * P, s * P * F + f
                    for q in range(P):
                        dt_flat[np.uint64(row + q * F)] = delta_flat[np.uint64(src + q)]
            _sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, CKK, F, n * P, one, C_addr, ld, dt_addr, F, one, pW_addr, F)
        else:
            # ∂C/∂W (F, C·k·k) += δ (F, n·P) @ colsᵀ
            _sgemm(ROW_MAJOR, NO_TRANS, TRANS, F, CKK, n * P, one, D_addr, ldD, C_addr, ld, one, pW_addr, CKK)
        if need_dx:
            # ∂C/∂cols (C·k·k, n·P) = Wᵀ (C·k·k, F) @ δ (F, n·P), then back to the maps
            _sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, CKK, n * P, F, one, WT_addr, F, D_addr, ldD, zero, dC_addr, ld)
            _col2im(dcols, s0, n, k, stride, pad, Ho, Wo, dx)


@njit(cache=True)
def _transpose_into(W, WT):
    """WT (C·k·k, F) = Wᵀ for W (F, C·k·k)."""
    F, CKK = W.shape
    for f in range(F):
        for r in range(CKK):
            WT[r, f] = W[f, r]


@njit(cache=True)
def _sum_partials(part_W, part_b, rows_dW, dW, db):
    """dW (F, C·k·k) and db (F,) = the chunks' partials summed in chunk order (the same bits
    for the same thread count). part_W (n_chunks, C·k·k·F), laid out as ∂C/∂Wᵀ when rows_dW."""
    F, CKK = dW.shape
    n_chunks = part_W.shape[0]
    for f in range(F):
        for r in range(CKK):
            at = r * F + f if rows_dW else f * CKK + r
            acc = part_W[0, at]
            for t in range(1, n_chunks):
                acc += part_W[t, at]
            dW[f, r] = acc
        sb = 0.0
        for t in range(n_chunks):
            sb += part_b[t, f]
        db[f] = sb


@njit(cache=True)
def conv_backward(a, W, delta, dW, db, dx, need_dx, rows_dW, k, stride, pad, sub,
                  cols, d, dt, dcols, WT, part_W, part_b):
    """Gradients of a convolution for a batch, on the calling thread: dW (F, C·k·k) and
    db (F,) written with the sums over samples and positions; dx (m, C, H, W) written when
    need_dx. a: the layer's input (m, C, H, W); W (F, C·k·k); delta = ∂C/∂out (m, F, H', W').
    Work arrays, one per chunk (here 1): cols, dcols (1, C·k·k, sub·P); d (1, F, sub·P);
    dt (1, sub·P, F); part_W (1, C·k·k·F); part_b (1, F) float64; and WT (C·k·k, F)."""
    _transpose_into(W, WT)
    _conv_backward_chunk(a, WT, delta, dx, need_dx, rows_dW, k, stride, pad, 0, a.shape[0], sub,
                         cols[0], d[0], dt[0], dcols[0], part_W[0], part_b[0])
    _sum_partials(part_W, part_b, rows_dW, dW, db)


@njit(cache=True, parallel=True)
def conv_backward_parallel(a, W, delta, dW, db, dx, need_dx, rows_dW, k, stride, pad, n_chunks, sub,
                           cols, d, dt, dcols, WT, part_W, part_b):
    """``conv_backward`` with the batch cut into n_chunks, one per thread, each summing its
    own partial gradient (never a shared one); the work arrays have one entry per chunk."""
    _transpose_into(W, WT)
    m = a.shape[0]
    for t in prange(n_chunks):
        lo, hi = _chunk(m, n_chunks, t)
        _conv_backward_chunk(a, WT, delta, dx, need_dx, rows_dW, k, stride, pad, lo, hi, sub,
                             cols[t], d[t], dt[t], dcols[t], part_W[t], part_b[t])
    _sum_partials(part_W, part_b, rows_dW, dW, db)


# --- max pooling ---------------------------------------------------------------------------
@njit(cache=True)
def _window_max(src, plane, y0, x0, size, W):
    """(max, where) of the size×size window at (y0, x0) of the map starting at src[plane]:
    the first maximum in reading order, a NaN counting as the maximum (NumPy's argmax)."""
    at = y0 * W + x0
    best = src[np.uint64(plane + at)]
    for i in range(size):
        for j in range(size):
            q = (y0 + i) * W + x0 + j
            v = src[np.uint64(plane + q)]
            if best == best and (v > best or v != v):
                best, at = v, q
    return best, at


@njit(cache=True)
def _maxpool_forward_sample(a, size, stride, out, idx, s):
    """out[s, c, y, x] = max of the size×size window at (y·stride, x·stride) of a[s, c];
    idx[s, c, y, x] (int32) = where it is in the map (row·W + column)."""
    C, H, W = a.shape[1], a.shape[2], a.shape[3]
    Ho, Wo = out.shape[2], out.shape[3]
    src, o_flat, i_flat = a.reshape(a.size), out.reshape(out.size), idx.reshape(idx.size)
    for c in range(C):
        plane, o = (s * C + c) * H * W, (s * C + c) * Ho * Wo
        for y in range(Ho):
            row = o + y * Wo
            if size == 2 and stride == 2:
                # the common case unrolled: branch-free selects, so the loop over x vectorises
                nan = False
                for x in range(Wo):
                    q = 2 * y * W + 2 * x
                    v0, v1 = src[np.uint64(plane + q)], src[np.uint64(plane + q + 1)]
                    v2, v3 = src[np.uint64(plane + q + W)], src[np.uint64(plane + q + W + 1)]
                    best, at = v0, q
                    take = v1 > best                    # strictly: of equal maxima the first stays
                    best, at = (v1 if take else best), (q + 1 if take else at)
                    take = v2 > best
                    best, at = (v2 if take else best), (q + W if take else at)
                    take = v3 > best
                    best, at = (v3 if take else best), (q + W + 1 if take else at)
                    nan |= (v0 != v0) | (v1 != v1) | (v2 != v2) | (v3 != v3)
                    o_flat[np.uint64(row + x)] = best
                    i_flat[np.uint64(row + x)] = at
                if not nan:
                    continue                            # else: the row again, NaN-aware
            for x in range(Wo):
                best, at = _window_max(src, plane, y * stride, x * stride, size, W)
                o_flat[np.uint64(row + x)] = best
                i_flat[np.uint64(row + x)] = at


@njit(cache=True)
def maxpool_forward(a, size, stride, out, idx):
    """Max pooling of a batch: out, idx (int32) (m, C, H', W') written from a (m, C, H, W);
    of tied maxima the first in reading order is the one kept (a NaN counting as the
    maximum, as NumPy's argmax has it)."""
    for s in range(a.shape[0]):
        _maxpool_forward_sample(a, size, stride, out, idx, s)


@njit(cache=True, parallel=True)
def maxpool_forward_parallel(a, size, stride, out, idx):
    """``maxpool_forward``, the samples shared among the threads."""
    for s in prange(a.shape[0]):
        _maxpool_forward_sample(a, size, stride, out, idx, s)


@njit(cache=True)
def _maxpool_backward_sample(grad, idx, dx, size, stride, s):
    """dx[s, c] = each window's gradient at its maximum, 0 elsewhere (summed where windows
    overlap). grad, idx (m, C, H', W'); dx (m, C, H, W)."""
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    Ho, Wo = grad.shape[2], grad.shape[3]
    g_flat, i_flat, d_flat = grad.reshape(grad.size), idx.reshape(idx.size), dx.reshape(dx.size)
    zero = np.float32(0.0)
    for c in range(C):
        plane, o = (s * C + c) * H * W, (s * C + c) * Ho * Wo
        for q in range(H * W):
            d_flat[np.uint64(plane + q)] = zero
        for q in range(Ho * Wo):
            d_flat[np.uint64(plane + i_flat[np.uint64(o + q)])] += g_flat[np.uint64(o + q)]


@njit(cache=True)
def maxpool_backward(grad, idx, dx, size, stride):
    """∂C/∂a of max pooling for a batch: dx (m, C, H, W) written from grad, idx (m, C, H', W')."""
    for s in range(grad.shape[0]):
        _maxpool_backward_sample(grad, idx, dx, size, stride, s)


@njit(cache=True, parallel=True)
def maxpool_backward_parallel(grad, idx, dx, size, stride):
    """``maxpool_backward``, the samples shared among the threads."""
    for s in prange(grad.shape[0]):
        _maxpool_backward_sample(grad, idx, dx, size, stride, s)


# --- ReLU ----------------------------------------------------------------------------------
@njit(cache=True)
def _relu_forward_rows(z, out, lo, hi):
    n = z.shape[1]
    z_flat, o_flat = z.reshape(z.size), out.reshape(out.size)
    zero = np.float32(0.0)
    for q in range(lo * n, hi * n):
        v = z_flat[np.uint64(q)]
        o_flat[np.uint64(q)] = zero if v <= zero else v       # NaN kept, as np.maximum keeps it


@njit(cache=True)
def relu_forward(z, out):
    """out = max(z, 0) for (m, n) views."""
    _relu_forward_rows(z, out, 0, z.shape[0])


@njit(cache=True, parallel=True)
def relu_forward_parallel(z, out, n_chunks):
    """``relu_forward``, the rows cut into n_chunks, one per thread."""
    for t in prange(n_chunks):
        lo, hi = _chunk(z.shape[0], n_chunks, t)
        _relu_forward_rows(z, out, lo, hi)


@njit(cache=True)
def _relu_backward_rows(a, grad, out, lo, hi):
    n = a.shape[1]
    a_flat, g_flat, o_flat = a.reshape(a.size), grad.reshape(grad.size), out.reshape(out.size)
    one, zero = np.float32(1.0), np.float32(0.0)
    for q in range(lo * n, hi * n):
        # a NaN in grad stays NaN, as in grad * (a > 0)
        o_flat[np.uint64(q)] = g_flat[np.uint64(q)] * (one if a_flat[np.uint64(q)] > zero else zero)


@njit(cache=True)
def relu_backward(a, grad, out):
    """out = grad ⊙ (a > 0): δ = ∂C/∂a ⊙ σ'(z) with σ' written through a = relu(z). (m, n) views."""
    _relu_backward_rows(a, grad, out, 0, a.shape[0])


@njit(cache=True, parallel=True)
def relu_backward_parallel(a, grad, out, n_chunks):
    """``relu_backward``, the rows cut into n_chunks, one per thread."""
    for t in prange(n_chunks):
        lo, hi = _chunk(a.shape[0], n_chunks, t)
        _relu_backward_rows(a, grad, out, lo, hi)


# --- dense -----------------------------------------------------------------------------------
# The products are BLAS either way; these run them on numba's threads (OpenBLAS held to one),
# so a training step of a conv net never wakes OpenBLAS's own pool, whose threads keep
# spinning for a while after each call and then take the cores the next conv kernel needs.
@njit(cache=True)
def _dense_forward_rows(a, W, b, z, lo, hi):
    """z[lo:hi] = a[lo:hi] @ Wᵀ + b. a (m, n_in); W (n_out, n_in); z (m, n_out)."""
    n_out, n_in = W.shape
    for i in range(lo, hi):
        z[i] = b
    if hi > lo:                                      # z (rows, n_out) += a (rows, n_in) @ Wᵀ
        one = np.float32(1.0)
        _sgemm(ROW_MAJOR, NO_TRANS, TRANS, hi - lo, n_out, n_in, one, np.int64(a.ctypes.data) + 4 * lo * n_in, n_in,
               np.int64(W.ctypes.data), n_in, one, np.int64(z.ctypes.data) + 4 * lo * n_out, n_out)


@njit(cache=True)
def dense_forward(a, W, b, z):
    """z = a @ Wᵀ + b (m, n_out): the book's z = W a + b for every row a."""
    _dense_forward_rows(a, W, b, z, 0, a.shape[0])


@njit(cache=True, parallel=True)
def dense_forward_parallel(a, W, b, z, n_chunks):
    """``dense_forward``, the rows cut into n_chunks, one per thread."""
    for t in prange(n_chunks):
        lo, hi = _chunk(a.shape[0], n_chunks, t)
        _dense_forward_rows(a, W, b, z, lo, hi)


@njit(cache=True)
def _dense_backward_chunk(a, W, delta, gW, gb, dx, need_dx, t, n_chunks):
    """Chunk t of n_chunks of a dense layer's gradients: rows [u0, u1) of ∂C/∂W = δᵀ a and of
    ∂C/∂b = Σ δ (its share of the units), and rows [r0, r1) of ∂C/∂a = δ W (its share of the
    samples). a (m, n_in); W (n_out, n_in); delta (m, n_out); gW, gb, dx written."""
    m, n_out = delta.shape
    n_in = W.shape[1]
    one, zero = np.float32(1.0), np.float32(0.0)
    u0, u1 = _chunk(n_out, n_chunks, t)
    if u1 > u0:
        # ∂C/∂W[u0:u1] (u, n_in) = δ[:, u0:u1]ᵀ (u, m) @ a (m, n_in)
        _sgemm(ROW_MAJOR, TRANS, NO_TRANS, u1 - u0, n_in, m, one, np.int64(delta.ctypes.data) + 4 * u0, n_out,
               np.int64(a.ctypes.data), n_in, zero, np.int64(gW.ctypes.data) + 4 * u0 * n_in, n_in)
        for u in range(u0, u1):
            acc = 0.0
            for i in range(m):
                acc += delta[i, u]
            gb[u] = acc
    r0, r1 = _chunk(m, n_chunks, t)
    if need_dx and r1 > r0:
        # ∂C/∂a[r0:r1] (r, n_in) = δ[r0:r1] (r, n_out) @ W (n_out, n_in)
        _sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, r1 - r0, n_in, n_out, one, np.int64(delta.ctypes.data) + 4 * r0 * n_out,
               n_out, np.int64(W.ctypes.data), n_in, zero, np.int64(dx.ctypes.data) + 4 * r0 * n_in, n_in)


@njit(cache=True)
def dense_backward(a, W, delta, gW, gb, dx, need_dx):
    """A dense layer's gradients for a batch: ∂C/∂W = δᵀ a (n_out, n_in), ∂C/∂b = Σ δ (n_out,),
    and when need_dx ∂C/∂a = δ W (m, n_in), all written."""
    _dense_backward_chunk(a, W, delta, gW, gb, dx, need_dx, 0, 1)


@njit(cache=True, parallel=True)
def dense_backward_parallel(a, W, delta, gW, gb, dx, need_dx, n_chunks):
    """``dense_backward`` with units and samples cut into n_chunks, one per thread (each
    writes its own rows: nothing is summed across threads)."""
    for t in prange(n_chunks):
        _dense_backward_chunk(a, W, delta, gW, gb, dx, need_dx, t, n_chunks)


# --- the stand-ins Network takes as fast= ---------------------------------------------------
def _f32(x: np.ndarray) -> np.ndarray:
    """x as a C-contiguous float32 array (no copy when it already is one)."""
    return np.ascontiguousarray(x, np.float32)


def _is_f32(*arrays) -> bool:
    return all(x.dtype == np.float32 for x in arrays)


_threads = numba.get_num_threads

# values from which an element-wise kernel (ReLU, pooling) is worth a parallel launch: a
# launch wakes the pool's threads (20-50 µs here), as long as ReLU takes for ~250k values
PARALLEL_FROM = 1 << 19


def _parallel(size: int) -> bool:
    return size >= PARALLEL_FROM and _threads() > 1


class _Buffers:
    """Arrays reused from batch to batch instead of allocated anew.

    A fresh multi-MB array costs more than the work done in it: glibc hands large blocks back
    to the system when they are freed, so each batch page-faults its outputs in again (2,300
    faults and ~4.6 ms of a 20 ms batch of the 32/64-filter net, measured). An array handed
    out here (a layer's output, ∂C/∂a, argmax indices) is taken again only once nothing else
    refers to it, directly or through a view: its reference count says so (CPython). Work
    arrays that live within one kernel call (``scratch``) are simply kept.
    """

    def __init__(self, per_key: int = 8):
        self.per_key = per_key         # arrays alive at once per (name, shape, dtype)
        self._free: dict[tuple, list[np.ndarray]] = {}
        self._scratch: dict[tuple, np.ndarray] = {}

    def take(self, name: str, shape: tuple, dtype=np.float32) -> np.ndarray:
        """An array of ``shape`` that nobody else holds now (contents undefined)."""
        key = (name, shape, np.dtype(dtype).str)
        kept = self._free.get(key)
        if kept is None:
            if len(self._free) > 64:             # last batches bring new shapes: keep it bounded
                self._free.clear()
            kept = self._free[key] = []
        for buf in kept:
            if sys.getrefcount(buf) <= 3:       # the list, ``buf`` and getrefcount's argument
                return buf
        buf = np.empty(shape, dtype)
        if len(kept) < self.per_key:
            kept.append(buf)
        return buf

    def scratch(self, name: str, shape: tuple, dtype=np.float32) -> np.ndarray:
        """A work array for the length of one kernel call (contents undefined)."""
        key = (name, shape, np.dtype(dtype).str)
        buf = self._scratch.get(key)
        if buf is None:
            if len(self._scratch) > 64:          # last batches bring new shapes: keep it bounded
                self._scratch.clear()
            buf = self._scratch[key] = np.empty(shape, dtype)
        return buf


_BUFFERS = _Buffers()


class ConvOp:
    """``Conv``'s stand-in: the same forward output, parameter gradients and ∂C/∂a (float32
    networks; other dtypes go to the NumPy layer)."""

    # samples per product: up to COLUMNS output positions (sgemm runs at 90-100% of its peak
    # from ~64 columns on, and a bit better up to ~512), as long as the unrolled windows, δ
    # and their gradient (about (C·k·k + F)·2 floats a column) stay in a core's L2 cache
    COLUMNS, CACHE_BYTES = 512, 2 << 20

    def _plan(self, layer, m):
        c, h, w = layer.in_shape
        f, ho, wo = layer.out_shape
        P, ckk = ho * wo, c * layer.kernel ** 2
        n_chunks = max(1, min(_threads(), m))
        per_chunk = -(-m // n_chunks)
        sub = max(1, min(per_chunk, self.COLUMNS // P, self.CACHE_BYTES // (8 * P * (ckk + f))))
        return f, P, ckk, n_chunks, sub

    # ∂C/∂W as cols @ δᵀ (δ copied to rows) from this many window values on: below it the
    # copy costs more than the product gains (LeNet-5's and the 32-filter net's first layers)
    ROWS_DW_FROM = 64

    def forward(self, layer, p, a, train=False, rng=None):
        if not _is_f32(a, p["W"]):
            return layer.forward(p, a, train, rng)
        a = _f32(a)
        m = len(a)
        f, P, ckk, n_chunks, sub = self._plan(layer, m)
        out = _BUFFERS.take("conv.out", (m, *layer.out_shape))
        cols = _BUFFERS.scratch("cols", (n_chunks, ckk, sub * P))
        z = _BUFFERS.scratch("z", (n_chunks, f, sub * P))
        args = (a, p["W"].reshape(f, ckk), p["b"], out, layer.kernel, layer.stride, layer.padding)
        if n_chunks == 1:
            conv_forward(*args, sub, cols, z)
        else:
            with _blas_one_thread(n_chunks):
                conv_forward_parallel(*args, n_chunks, sub, cols, z)
        return out, a                       # backward unrolls the windows again from the input

    def backward(self, layer, p, cache, delta, g, need_dx=True):
        if not isinstance(cache, np.ndarray) or cache.ndim != 4:     # the NumPy layer's cache
            return layer.backward(p, cache, delta, g, need_dx)
        a = cache
        delta = _f32(delta)
        m = len(a)
        f, P, ckk, n_chunks, sub = self._plan(layer, m)
        B = _BUFFERS
        dx = B.take("conv.dx", a.shape) if need_dx else B.scratch("no_dx", (1, 1, 1, 1))
        cols = B.scratch("cols", (n_chunks, ckk, sub * P))
        dcols = B.scratch("dcols", (n_chunks, ckk, sub * P)) if need_dx else cols
        gW, gb = g["W"].reshape(f, ckk), g["b"]
        if not _is_f32(gW, gb):                 # a gradient of another dtype: written through float32
            gW, gb = np.empty((f, ckk), np.float32), np.empty(f, np.float32)
        args = (a, p["W"].reshape(f, ckk), delta, gW, gb, dx, need_dx, ckk >= self.ROWS_DW_FROM, layer.kernel,
                layer.stride, layer.padding)
        work = (cols, B.scratch("d", (n_chunks, f, sub * P)), B.scratch("dt", (n_chunks, sub * P, f)), dcols,
                B.scratch("WT", (ckk, f)), B.scratch("part_W", (n_chunks, ckk * f)),
                B.scratch("part_b", (n_chunks, f), np.float64))
        if n_chunks == 1:
            conv_backward(*args, sub, *work)
        else:
            with _blas_one_thread(n_chunks):
                conv_backward_parallel(*args, n_chunks, sub, *work)
        if not np.shares_memory(gW, g["W"]):
            g["W"][...] = gW.reshape(g["W"].shape)
            g["b"][...] = gb
        return dx if need_dx else None


class MaxPoolOp:
    """``MaxPool``'s stand-in: argmax positions kept as int32, the first maximum winning."""

    def forward(self, layer, p, a, train=False, rng=None):
        if not _is_f32(a):
            return layer.forward(p, a, train, rng)
        a = _f32(a)
        shape = (len(a), *layer.out_shape)
        out, idx = _BUFFERS.take("pool.out", shape), _BUFFERS.take("pool.idx", shape, np.int32)
        (maxpool_forward_parallel if _parallel(a.size) else maxpool_forward)(a, layer.size, layer.stride, out, idx)
        return out, (idx, a.shape)

    def backward(self, layer, p, cache, grad, g, need_dx=True):
        idx, shape = cache
        if idx.dtype != np.int32 or not _is_f32(grad):              # the NumPy layer's cache
            return layer.backward(p, cache, grad, g, need_dx)
        if not need_dx:
            return None
        dx = _BUFFERS.take("pool.dx", shape)
        (maxpool_backward_parallel if _parallel(dx.size) else maxpool_backward)(_f32(grad), idx, dx, layer.size,
                                                                                 layer.stride)
        return dx


class ActivationOp:
    """``Activation``'s stand-in for ReLU (one pass, each thread its own rows); the other
    functions go to the NumPy layer."""

    def forward(self, layer, p, z, train=False, rng=None):
        if layer.function != "relu" or not _is_f32(z):
            return layer.forward(p, z, train, rng)
        z = _f32(z)
        a = _BUFFERS.take("relu.out", z.shape)
        zz, aa = z.reshape(len(z), -1), a.reshape(len(z), -1)
        if _parallel(z.size):
            relu_forward_parallel(zz, aa, min(_threads(), len(z)))
        else:
            relu_forward(zz, aa)
        return a, a

    def backward(self, layer, p, a, grad, g, need_dx=True):
        if layer.function != "relu" or not _is_f32(a, grad):
            return layer.backward(p, a, grad, g, need_dx)
        grad = _f32(grad)
        out = _BUFFERS.take("relu.dz", a.shape)
        args = (a.reshape(len(a), -1), grad.reshape(len(a), -1), out.reshape(len(a), -1))
        if _parallel(a.size):
            relu_backward_parallel(*args, min(_threads(), len(a)))
        else:
            relu_backward(*args)
        return out


class DenseOp:
    """``Dense``'s stand-in: the same products, on numba's threads (see the kernels' note)."""

    # multiply-adds of a batch from which the products are shared among the threads (below,
    # the ~30 µs of a parallel launch is more than the second thread saves)
    PARALLEL_MACS = 1 << 22

    def forward(self, layer, p, a, train=False, rng=None):
        W = p["W"]
        if not _is_f32(a, W):
            return layer.forward(p, a, train, rng)
        a = _f32(a)
        z = _BUFFERS.take("dense.z", (len(a), W.shape[0]))
        n_chunks = min(_threads(), len(a)) if a.size * W.shape[0] >= self.PARALLEL_MACS else 1
        with _blas_one_thread(_threads()):
            if n_chunks > 1:
                dense_forward_parallel(a, W, p["b"], z, n_chunks)
            else:
                dense_forward(a, W, p["b"], z)
        return z, a

    def backward(self, layer, p, a, delta, g, need_dx=True):
        W = p["W"]
        if not _is_f32(a, W, delta, g["W"], g["b"]):
            return layer.backward(p, a, delta, g, need_dx)
        delta = _f32(delta)
        dx = _BUFFERS.take("dense.dx", a.shape) if need_dx else a      # (not written without need_dx)
        n_chunks = min(_threads(), len(a)) if a.size * W.shape[0] >= self.PARALLEL_MACS else 1
        with _blas_one_thread(_threads()):
            if n_chunks > 1:
                dense_backward_parallel(a, W, delta, g["W"], g["b"], dx, need_dx, n_chunks)
            else:
                dense_backward(a, W, delta, g["W"], g["b"], dx, need_dx)
        return dx if need_dx else None


# layer type -> stand-in (Network.trace / backward / cost_and_gradient take it as ``fast``)
FAST: dict[str, object] = {"conv": ConvOp(), "maxpool": MaxPoolOp(), "activation": ActivationOp(), "dense": DenseOp()}
