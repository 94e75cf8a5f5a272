"""The numba kernels: mini-batch SGD by backpropagation, and affine augmentation of digits.

Only training imports this module (importing numba costs ~0.3 s; predict and inspect never
pay it). Kernels take arrays and numbers only, float32 and C-contiguous at the boundary so
each compiles once; randomness is drawn outside with a seeded NumPy Generator and passed in.

Parameters are one flat float32 vector (see ``digitnet.nn.network``): dense layer l's
W (n_l, n_{l-1}) and b (n_l,) are reshaped views at ``w_off[l-1]`` and ``b_off[l-1]``. A batch is a stack of
rows, so ``z = W @ a + b`` is computed for all rows at once as ``Z = A @ W.T + b``.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def _writable(folder: Path) -> bool:
    """True when ``folder`` exists or can be made, and a file can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = folder / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False


def _private(folder: Path) -> bool:
    """True when only this user (or root) can change what ``folder`` holds: it is a directory
    of ours that group and others cannot write, and no folder above it can be written by
    someone else (unless sticky, as /tmp is: then others cannot rename what is ours). numba
    unpickles its cache, so a folder others can write is a way to run their code in ours."""
    uid = os.geteuid()
    try:
        real = Path(os.path.realpath(folder))
        st = os.stat(real)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o022:
        return False
    for parent in real.parents:
        try:
            ps = os.stat(parent)
        except OSError:
            return False
        if ps.st_uid not in (uid, 0) or (ps.st_mode & 0o022 and not ps.st_mode & stat.S_ISVTX):
            return False
    return True


def _cache_dir() -> str:
    """A directory for numba's cache that is writable and private (see ``_private``):
    $NUMBA_CACHE_DIR, else the user cache dir, else one in the temporary folder (kept per
    user, so later runs still find their kernels), else a new temporary one. A read-only
    install, or a cache directory that cannot be written or that others can write, must
    still train, so this never fails."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    shared_tmp = os.path.join(tempfile.gettempdir(), f"digitnet-numba-{os.geteuid()}")
    for candidate in (os.environ.get("NUMBA_CACHE_DIR"), os.path.join(base, "digitnet", "numba"), shared_tmp):
        if candidate and _writable(Path(candidate)) and _private(Path(candidate)):
            return candidate
    return tempfile.mkdtemp(prefix="digitnet-numba-")


os.environ["NUMBA_CACHE_DIR"] = _cache_dir()

import numpy as np  # noqa: E402
from numba import config, njit  # noqa: E402

SIGMOID, RELU, TANH = 0, 1, 2      # hidden activation codes (network.ACTIVATIONS[...].code)
QUADRATIC, CROSS_ENTROPY = 0, 1    # cost codes (network.COSTS[...].code)

# --- BLAS -----------------------------------------------------------------------------------
# The kernels call CBLAS sgemm themselves rather than numba's np.dot: its alpha and beta let
# the SGD step ride on the gradient product (W <- beta W + alpha delta^T a, v likewise), which
# saves a full pass over the parameters per batch, and it is NumPy's own OpenBLAS (the one
# `--threads` limits), measurably faster here than SciPy's copy that np.dot in numba calls.
# The function is bound by symbol name, so numba's on-disk cache stays valid across runs.
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112          # CBLAS enum values
_SGEMM_SYMBOL = "digitnet_cblas_sgemm"


def _find_cblas_sgemm() -> tuple[int | None, str]:
    """Address of an ILP64 ``cblas_sgemm`` in NumPy's bundled OpenBLAS, and its library path;
    (None, reason) when NumPy was built against something else (then a fallback is used)."""
    import ctypes
    import glob

    here = os.path.dirname(np.__file__)
    libs = os.path.join(os.path.dirname(here), "numpy.libs")               # Linux wheels
    candidates = (glob.glob(os.path.join(libs, "*openblas*64*.so*"))
                  + glob.glob(os.path.join(here, ".dylibs", "*openblas*64*.dylib")))  # macOS wheels
    for path in sorted(candidates):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_cblas_sgemm64_", "cblas_sgemm64_"):
            fn = getattr(lib, name, None)
            if fn is not None:
                return ctypes.cast(fn, ctypes.c_void_p).value, path
    return None, f"no ILP64 OpenBLAS in {libs}"


def _sgemm_numpy(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Row-major sgemm on raw addresses in NumPy: C <- alpha op(A) op(B) + beta C. The slow
    stand-in when no CBLAS was found, and what NUMBA_DISABLE_JIT=1 runs without one."""
    import ctypes

    def view(addr, rows, cols, ld):                      # a (rows, cols) matrix with row stride ld
        buf = (ctypes.c_float * (int(rows) * int(ld))).from_address(int(addr))
        return np.frombuffer(buf, np.float32).reshape(int(rows), int(ld))[:, :int(cols)]

    A = view(a, k, m, lda).T if trans_a == TRANS else view(a, m, k, lda)
    B = view(b, n, k, ldb).T if trans_b == TRANS else view(b, k, n, ldb)
    C = view(c, m, n, ldc)
    prod = np.float32(alpha) * (A @ B)
    if beta == 0:
        C[...] = prod
    else:
        C[...] = np.float32(beta) * C + prod


def _sgemm_loops(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Row-major sgemm as plain loops over raw float32 pointers: C <- alpha op(A) op(B) + beta C.
    Compiled as a C callback and bound in place of CBLAS when NumPy has no OpenBLAS of its own
    (2-3x slower than BLAS, but training still works)."""
    A = carray(a, ((k if trans_a == TRANS else m) * lda,))
    B = carray(b, ((n if trans_b == TRANS else k) * ldb,))
    C = carray(c, (m * ldc,))
    for i in range(m):
        for j in range(n):
            C[i * ldc + j] = 0.0 if beta == 0 else beta * C[i * ldc + j]
        for p in range(k):
            s = alpha * (A[p * lda + i] if trans_a == TRANS else A[i * lda + p])
            if trans_b == TRANS:
                for j in range(n):
                    C[i * ldc + j] += s * B[j * ldb + p]
            else:
                for j in range(n):
                    C[i * ldc + j] += s * B[p * ldb + j]


if os.environ.get("DIGITNET_NO_CBLAS"):      # testing aid: exercise the fallback
    _SGEMM_ADDRESS, BLAS_SOURCE = None, "DIGITNET_NO_CBLAS is set"
else:
    _SGEMM_ADDRESS, BLAS_SOURCE = _find_cblas_sgemm()
if config.DISABLE_JIT:                       # plain Python: call the same function through ctypes
    import ctypes

    if _SGEMM_ADDRESS is not None:
        _i, _l, _f, _p = ctypes.c_int, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
        _cblas = ctypes.CFUNCTYPE(None, _i, _i, _i, _l, _l, _l, _f, _p, _l, _p, _l, _f, _p, _l)(_SGEMM_ADDRESS)

        def _sgemm(*args):
            """CBLAS sgemm through ctypes (NUMBA_DISABLE_JIT=1)."""
            _cblas(*(float(v) if i in (6, 11) else int(v) for i, v in enumerate(args)))
    else:
        _sgemm = _sgemm_numpy
else:
    import llvmlite.binding as llvm
    from numba import carray, cfunc, types

    _i32, _i64, _f32 = types.int32, types.int64, types.float32
    if _SGEMM_ADDRESS is None:
        _fp = types.CPointer(_f32)           # same calling convention as the int64 addresses below
        _loops = cfunc(types.void(_i32, _i32, _i32, _i64, _i64, _i64, _f32, _fp, _i64, _fp, _i64, _f32, _fp, _i64),
                       cache=True)(_sgemm_loops)
        _SGEMM_ADDRESS, BLAS_SOURCE = _loops.address, f"compiled loops ({BLAS_SOURCE})"
    llvm.add_symbol(_SGEMM_SYMBOL, _SGEMM_ADDRESS)
    _sgemm = types.ExternalFunction(_SGEMM_SYMBOL, types.void(_i32, _i32, _i32, _i64, _i64, _i64, _f32, _i64, _i64,
                                                              _i64, _i64, _f32, _i64, _i64))


if config.DISABLE_JIT:
    def _prefetch(address):
        """No-op in plain Python."""
else:
    from llvmlite import ir
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def _prefetch(typingctx, address):
        """Hint the CPU to start loading the cache line at ``address`` (an int64) into cache:
        llvm.prefetch(read, locality 2). The next batch's rows are random rows of X, so
        without it each batch waits on memory for its gather (~15% of a 784-128-10 batch)."""
        if not isinstance(address, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                                "llvm.prefetch.p0")
            builder.call(fn, [builder.inttoptr(args[0], i8p), ir.Constant(i32, 0), ir.Constant(i32, 2),
                              ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return types.void(address), codegen


@njit(cache=True)
def _bias_activate(Z, b, act):
    """In place: Z <- sigma(Z + b), bias add and activation fused in one pass. Z (m, n).
    One loop per activation, so each inner loop is branch-free and vectorises."""
    m, n = Z.shape
    if act == RELU:
        for i in range(m):
            for j in range(n):
                z = Z[i, j] + b[j]
                Z[i, j] = z if z > 0 else np.float32(0.0)
    elif act == SIGMOID:
        for i in range(m):
            for j in range(n):
                Z[i, j] = 1.0 / (1.0 + np.exp(-(Z[i, j] + b[j])))
    else:
        for i in range(m):
            for j in range(n):
                Z[i, j] = np.tanh(Z[i, j] + b[j])


@njit(cache=True)
def _bias_softmax(Z, b):
    """In place: each row of Z <- softmax(Z + b)."""
    m, n = Z.shape
    for i in range(m):
        top = -np.inf
        for j in range(n):
            Z[i, j] += b[j]
            top = max(top, Z[i, j])
        s = 0.0
        for j in range(n):
            Z[i, j] = np.exp(Z[i, j] - top)
            s += Z[i, j]
        for j in range(n):
            Z[i, j] /= s


@njit(cache=True)
def _times_sigma_prime(D, A, act):
    """In place: D <- D ⊙ sigma'(z), with sigma' written in terms of a = sigma(z)."""
    m, n = D.shape
    if act == RELU:
        for i in range(m):
            for j in range(n):
                if A[i, j] <= 0:
                    D[i, j] = 0.0
    elif act == SIGMOID:
        for i in range(m):
            for j in range(n):
                a = A[i, j]
                D[i, j] *= a * (1.0 - a)
    else:
        for i in range(m):
            for j in range(n):
                a = A[i, j]
                D[i, j] *= 1.0 - a * a


@njit(cache=True)
def train_batches(X, labels, order, params, velocity, grad, sizes, w_off, b_off, act, cost,
                  batch_size, first, last, lr, momentum, l2, acts, deltas, stats):
    """SGD over mini-batches ``first … last-1`` of the shuffled ``order``; updates params in place.

    X (N, n_0) float32 in [0, 1]; labels (N,) int64; order (N,) int64, a permutation of rows.
    params, velocity, grad: flat float32 (P,) (grad is scratch for nabla_b).
    sizes (L+1,), w_off/b_off (L,) int64.
    acts: float32 buffer of batch_size * sum(sizes); deltas: float32 of 2 * batch_size * max(sizes).
    stats (2,) float64 accumulates the summed per-sample cost and the number classified right.
    Update: v <- momentum v - lr (nabla + l2 W) (no decay on biases); params <- params + v
    (with momentum 0: params <- params - lr (nabla + l2 W)).
    """
    N = order.shape[0]
    L = sizes.shape[0] - 1
    a_off = np.zeros(L + 1, np.int64)           # where each layer's (m, n_l) block starts in acts
    for l in range(1, L + 1):
        a_off[l] = a_off[l - 1] + batch_size * sizes[l - 1]
    half = deltas.shape[0] // 2
    n_0, n_L = sizes[0], sizes[L]
    one, zero = np.float32(1.0), np.float32(0.0)
    # raw addresses for sgemm (4 bytes a float32)
    P, V = np.int64(params.ctypes.data), np.int64(velocity.ctypes.data)
    AC, DE = np.int64(acts.ctypes.data), np.int64(deltas.ctypes.data)
    X_addr = np.int64(X.ctypes.data)
    for batch in range(first, last):
        start = batch * batch_size
        m = min(batch_size, N - start)
        inv_m = np.float32(1.0 / m)
        # a_0 = x: gather this batch's rows                                  (m, n_0)
        for i in range(m):
            acts[i * n_0:(i + 1) * n_0] = X[order[start + i]]
        # forward: z_l = W_l a_{l-1} + b_l, a_l = sigma(z_l); as rows Z = A W^T  (m, n_l)
        for l in range(1, L + 1):
            n_in, n_out = sizes[l - 1], sizes[l]
            _sgemm(ROW_MAJOR, NO_TRANS, TRANS, m, n_out, n_in, one, AC + 4 * a_off[l - 1], n_in,
                   P + 4 * w_off[l - 1], n_in, zero, AC + 4 * a_off[l], n_out)
            Z = acts[a_off[l]:a_off[l] + m * n_out].reshape(m, n_out)
            b = params[b_off[l - 1]:b_off[l - 1] + n_out]
            if l < L:
                _bias_activate(Z, b, act)
            elif cost == QUADRATIC:
                _bias_activate(Z, b, SIGMOID)
            else:
                _bias_softmax(Z, b)
        # output error delta_L (m, n_L), with the batch mean 1/m folded in:
        #   quadratic: (a - y) ⊙ a(1 - a);   cross-entropy with softmax: a - y
        aL = acts[a_off[L]:a_off[L] + m * n_L].reshape(m, n_L)
        D = deltas[0:m * n_L].reshape(m, n_L)
        for i in range(m):
            y = labels[order[start + i]]
            best = 0
            for j in range(n_L):
                a = aL[i, j]
                t = 1.0 if j == y else 0.0
                if cost == QUADRATIC:
                    stats[0] += 0.5 * (a - t) * (a - t)
                    D[i, j] = (a - t) * a * (1.0 - a) * inv_m
                else:
                    D[i, j] = (a - t) * inv_m
                if a > aL[i, best]:
                    best = j
            if cost == CROSS_ENTROPY:
                stats[0] -= np.log(max(aL[i, y], 1e-12))
            if best == y:
                stats[1] += 1
        # start loading the next batch's rows while this one goes backward
        if start + batch_size < N:
            for i in range(min(batch_size, N - start - batch_size)):
                row = X_addr + 4 * n_0 * order[start + batch_size + i]
                for line in range(0, 4 * n_0, 64):
                    _prefetch(row + line)
        # backward, layer by layer from the top: first delta_{l-1} = (delta_l W_l) ⊙ sigma'
        # with the old W_l, then layer l's step with nabla_W = delta_l^T a_{l-1} (n_l, n_{l-1})
        # folded into one sgemm, and nabla_b = column sums of delta_l.
        side = 0
        for l in range(L, 0, -1):
            n_in, n_out = sizes[l - 1], sizes[l]
            D = deltas[side * half:side * half + m * n_out].reshape(m, n_out)
            w0, b0 = w_off[l - 1], b_off[l - 1]
            D_addr, A_addr = DE + 4 * side * half, AC + 4 * a_off[l - 1]
            if l > 1:
                _sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, m, n_in, n_out, one, D_addr, n_out, P + 4 * w0, n_in,
                       zero, DE + 4 * (1 - side) * half, n_in)                        # (m, n_{l-1})
                A = acts[a_off[l - 1]:a_off[l - 1] + m * n_in].reshape(m, n_in)
                _times_sigma_prime(deltas[(1 - side) * half:(1 - side) * half + m * n_in].reshape(m, n_in),
                                   A, act)
            W, vW = params[w0:b0], velocity[w0:b0]                 # flat views, indexed from 0
            if momentum != 0.0:
                # v_W <- momentum v_W - lr nabla_W, then v_W -= lr l2 W; W += v_W
                _sgemm(ROW_MAJOR, TRANS, NO_TRANS, n_out, n_in, m, -lr, D_addr, n_out, A_addr, n_in,
                       momentum, V + 4 * w0, n_in)
                decay = lr * l2
                for k in range(b0 - w0):
                    vW[k] -= decay * W[k]
                    W[k] += vW[k]
            else:
                # W <- (1 - lr l2) W - lr nabla_W
                _sgemm(ROW_MAJOR, TRANS, NO_TRANS, n_out, n_in, m, -lr, D_addr, n_out, A_addr, n_in,
                       one - lr * l2, P + 4 * w0, n_in)
            # nabla_b = column sums of delta_l, summed row by row into the scratch ``grad``
            gb, b, vb = grad[b0:b0 + n_out], params[b0:b0 + n_out], velocity[b0:b0 + n_out]
            gb[:] = 0.0
            for i in range(m):
                for j in range(n_out):
                    gb[j] += D[i, j]
            if momentum != 0.0:
                for j in range(n_out):
                    vb[j] = momentum * vb[j] - lr * gb[j]
                    b[j] += vb[j]
            else:
                for j in range(n_out):
                    b[j] -= lr * gb[j]
            if l > 1:
                side = 1 - side


@njit(cache=True)
def warp_images(src, mats, thickness, out):
    """Augment: out[i] = affine warp of src[i] (bilinear), then ``|thickness[i]|`` passes of a
    3×3 cross dilation (thickness > 0: bolder strokes) or erosion (< 0: thinner); pixels
    scaled to [0, 1].

    src (N, H, W) uint8; mats (N, 2, 3) float32 maps an output pixel (x, y, 1), measured from
    the image centre, to its source position measured from the centre; thickness (N,) int8;
    out (N, H*W) float32.
    """
    N, H, Wd = src.shape
    cy, cx = (H - 1) / 2.0, (Wd - 1) / 2.0
    img = np.empty((H, Wd), np.float32)
    tmp = np.empty((H, Wd), np.float32)
    for n in range(N):
        M = mats[n]
        for r in range(H):
            for c in range(Wd):
                x, y = c - cx, r - cy
                sx = M[0, 0] * x + M[0, 1] * y + M[0, 2] + cx
                sy = M[1, 0] * x + M[1, 1] * y + M[1, 2] + cy
                x0, y0 = int(np.floor(sx)), int(np.floor(sy))
                fx, fy = sx - x0, sy - y0
                v = 0.0
                for dy in range(2):
                    yy = y0 + dy
                    if yy < 0 or yy >= H:
                        continue
                    wy = fy if dy else 1.0 - fy
                    for dx in range(2):
                        xx = x0 + dx
                        if 0 <= xx < Wd:
                            v += wy * (fx if dx else 1.0 - fx) * src[n, yy, xx]
                img[r, c] = v / 255.0
        t = thickness[n]
        for _ in range(abs(t)):
            tmp[:, :] = img
            for r in range(H):
                for c in range(Wd):
                    v = tmp[r, c]
                    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                        rr, cc = r + dr, c + dc
                        if 0 <= rr < H and 0 <= cc < Wd:
                            v = max(v, tmp[rr, cc]) if t > 0 else min(v, tmp[rr, cc])
                    img[r, c] = v
        for r in range(H):
            for c in range(Wd):
                out[n, r * Wd + c] = img[r, c]
