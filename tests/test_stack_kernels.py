"""digitnet.stack_kernels: the fused training step against the NumPy chain rule of
``Network.cost_and_gradient`` (the reference), on networks that hold every layer it takes
(padded and strided convs, pooling that crops, dropout before and after the learned layers,
dense layers), at one and two threads, for batches smaller than, equal to and larger than
the thread count; what it refuses; and that training takes it for conv nets."""

from __future__ import annotations


import numpy as np
import pytest
from jit_helpers import assert_compiled_matches_python

from digitnet import stack_kernels
from digitnet.conv_kernels import set_threads
from digitnet.nn.layers import Activation, Conv, Dense, Dropout, Flatten, MaxPool
from digitnet.nn.network import Network
from digitnet.stack_kernels import StackStep


@pytest.fixture(params=[1, 2], ids=lambda n: f"{n}thr")
def threads(request):
    """numba's thread count for the test (2: the parallel entry point), restored after."""
    import numba

    before = numba.get_num_threads()
    yield set_threads(request.param)
    numba.set_num_threads(before)


def conv_net(seed=0):
    """Every layer the fused step takes: conv with padding, ReLU, pooling that crops, a
    strided conv, flatten, dropout, dense layers and a softmax output."""
    layers = [Conv(4, 3, 1, 1), Activation("relu"), MaxPool(2), Conv(5, 3, 2, 1), Activation("relu"),
              MaxPool(2, 1), Flatten(), Dropout(0.3), Dense(7), Activation("relu"), Dense(3), Activation("softmax")]
    return Network.init(layers, (2, 11, 11), "cross-entropy", seed=seed)


def dropout_first_net(seed=0):
    """Dropout below the first learned layer (backward must stop above it), and a 1×1 conv."""
    layers = [Dropout(0.2), Conv(3, 1), Activation("relu"), Flatten(), Dense(4), Activation("softmax")]
    return Network.init(layers, (1, 5, 6), "cross-entropy", seed=seed)


def lenet5(seed=0):
    layers = [Conv(6, 5, 1, 2), Activation("relu"), MaxPool(2), Conv(16, 5), Activation("relu"), MaxPool(2),
              Flatten(), Dense(120), Activation("relu"), Dense(84), Activation("relu"), Dense(10),
              Activation("softmax")]
    return Network.init(layers, (1, 28, 28), "cross-entropy", seed=seed)


def _batch(net, m, seed):
    rng = np.random.default_rng(seed)
    x = rng.random((m, net.n_inputs), dtype=np.float32)
    return x, rng.integers(0, net.n_outputs, m)


@pytest.mark.parametrize("make", [conv_net, dropout_first_net, lenet5], ids=lambda f: f.__name__)
@pytest.mark.parametrize("m", [1, 2, 13, 64])
def test_step_matches_the_numpy_chain_rule(make, m, threads):
    net = make()
    x, labels = _batch(net, m, m)
    c0, g0, a0 = net.cost_and_gradient(x, labels, True, np.random.default_rng(9))
    g1 = np.full_like(net.params, 5.0)                  # junk: the step must write, not add
    c1, g1, a1 = StackStep(net).cost_and_gradient(x, labels, np.random.default_rng(9), g1)
    assert c1 == pytest.approx(c0, rel=1e-5)
    np.testing.assert_allclose(a1, a0, rtol=1e-5, atol=1e-6)
    assert np.abs(g0).max() > 0
    np.testing.assert_allclose(g1, g0, rtol=1e-4, atol=1e-5 * np.abs(g0).max())


def test_dropout_masks_are_the_numpy_layers_draw(threads):
    """Same generator, same masks: the generator is left where the NumPy path leaves it."""
    net = conv_net(seed=2)
    x, labels = _batch(net, 9, 1)
    r0, r1 = np.random.default_rng(5), np.random.default_rng(5)
    net.cost_and_gradient(x, labels, True, r0)
    StackStep(net).cost_and_gradient(x, labels, r1)
    assert r0.random() == r1.random()


def test_batch_sizes_and_thread_counts_change_between_calls():
    """The plan follows the batch size (a short last batch) and the thread count (the
    governor moves it between chunks); each call answers for its own batch."""
    net = conv_net(seed=1)
    step = StackStep(net)
    for threads, m in [(2, 13), (1, 13), (2, 5), (2, 13), (1, 1)]:
        set_threads(threads)
        x, labels = _batch(net, m, 100 + m + threads)
        _, g0, a0 = net.cost_and_gradient(x, labels, True, np.random.default_rng(3))
        _, g1, a1 = step.cost_and_gradient(x, labels, np.random.default_rng(3))
        assert a1.shape == (m, 3)
        np.testing.assert_allclose(a1, a0, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(g1, g0, rtol=1e-4, atol=1e-5 * np.abs(g0).max())


def test_same_thread_count_gives_the_same_bits():
    net = lenet5(seed=4)
    x, labels = _batch(net, 32, 7)
    outs = []
    for _ in range(2):
        set_threads(2)
        outs.append(StackStep(net).cost_and_gradient(x, labels, np.random.default_rng(1))[1].copy())
    np.testing.assert_array_equal(outs[0], outs[1])


def test_what_it_does_not_take_goes_elsewhere():
    base = conv_net()
    assert StackStep.fits(base)
    sigmoid = Network.init([Flatten(), Dense(5), Activation("sigmoid"), Dense(3), Activation("softmax")], (4,))
    quadratic = Network.init([Flatten(), Dense(3), Activation("sigmoid")], (4,), "quadratic")
    assert not StackStep.fits(sigmoid)
    assert not StackStep.fits(quadratic)
    assert not StackStep.fits(base.astype(np.float64))


def test_labels_outside_the_classes_are_refused():
    net = conv_net()
    x, _ = _batch(net, 3, 0)
    with pytest.raises(ValueError, match="labels"):
        StackStep(net).cost_and_gradient(x, np.array([0, 3, 1]), np.random.default_rng(0))


@pytest.mark.parametrize("width, n_labels", [(243, 3), (241, 3), (242, 2), (242, 4)])
def test_batches_of_the_wrong_shape_are_refused(width, n_labels):
    """The kernels index without bounds checks: a batch that does not fit is stopped first."""
    net = conv_net()
    x = np.zeros((3, width), np.float32)
    with pytest.raises(ValueError, match="values a sample"):
        StackStep(net).cost_and_gradient(x, np.zeros(n_labels, np.int64), np.random.default_rng(0))


def test_an_empty_batch_is_refused():
    net = conv_net()
    with pytest.raises(ValueError, match="empty"):
        StackStep(net).cost_and_gradient(np.zeros((0, 242), np.float32), np.zeros(0, np.int64),
                                         np.random.default_rng(0))


def test_training_takes_the_fused_step_for_conv_nets(monkeypatch):
    """A conv net trains through StackStep (and lands where the per-layer path lands)."""
    from digitnet import training
    from digitnet.datasets import Dataset

    calls = []
    real = StackStep.cost_and_gradient

    def counted(self, *a, **k):
        calls.append(1)
        return real(self, *a, **k)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (96, 8, 8), dtype=np.uint8)
    labels = rng.integers(0, 3, 96).astype(np.int64)
    ds = Dataset("toy", images, labels, images[:16], labels[:16])
    config = training.TrainConfig(layers="conv4x3,pool2,dense8", epochs=2, batch_size=16, lr=0.05, momentum=0.9,
                                  val_split=0.0, augment=False, seed=3, schedule="constant")
    set_threads(2)
    monkeypatch.setattr(StackStep, "cost_and_gradient", counted)
    fused = training.train(ds, config).network
    assert len(calls) == 12
    monkeypatch.setattr(StackStep, "fits", staticmethod(lambda net: False))
    per_layer = training.train(ds, config).network
    assert len(calls) == 12
    np.testing.assert_allclose(fused.params, per_layer.params, rtol=1e-4, atol=1e-5)


def test_jit_and_pure_python_agree(tmp_path):
    """NUMBA_DISABLE_JIT=1 runs the kernels as plain Python: the results must match."""
    assert_compiled_matches_python(tmp_path,
                                   "from test_stack_kernels import conv_net\nfrom digitnet.stack_kernels import StackStep",
                                   "StackStep(conv_net(seed=1)).cost_and_gradient(x, y, np.random.default_rng(2))")


def test_the_plan_never_lets_two_threads_share_gradient_rows():
    """Rows of a thread's chunk, for layers of any width, stay inside its own share of the
    shared gradient buffers (the bug this guards against: wide and narrow layers' rows of
    two threads overlapping)."""
    m, stride = 10, 7
    buf = np.arange(m * stride, dtype=np.float32)
    for n in (1, 3, 7):
        for lo, hi in ((0, 5), (5, 10)):
            rows = stack_kernels._rows(buf, m, n, lo)[lo:hi]
            assert rows.min() >= lo * stride and rows.max() < hi * stride


@pytest.mark.parametrize("make", [conv_net, dropout_first_net], ids=lambda f: f.__name__)
def test_a_large_batch_goes_through_in_pieces(make, threads, monkeypatch):
    """Past PIECE rows the batch is cut (memory stays bounded whatever --batch-size is): the
    cost, outputs, gradient and the generator's draws are still those of the whole batch."""
    monkeypatch.setattr(StackStep, "PIECE", 5)
    net = make(seed=6)
    x, labels = _batch(net, 13, 2)
    r0, r1 = np.random.default_rng(8), np.random.default_rng(8)
    c0, g0, a0 = net.cost_and_gradient(x, labels, True, r0)
    c1, g1, a1 = StackStep(net).cost_and_gradient(x, labels, r1, np.full_like(net.params, 3.0))
    assert c1 == pytest.approx(c0, rel=1e-5)
    np.testing.assert_allclose(a1, a0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g1, g0, rtol=1e-4, atol=1e-5 * np.abs(g0).max())
    assert r0.random() == r1.random()


def test_any_gradient_array_laid_out_like_params_is_written():
    """As the reference takes it: a float64 or strided g gets the gradient; a g of another
    length is refused (the kernels would write past its end); float labels are refused."""
    net = conv_net(seed=5)
    x, labels = _batch(net, 4, 3)
    _, ref, _ = net.cost_and_gradient(x, labels, True, np.random.default_rng(0))
    for g in (np.zeros(net.n_params), np.zeros(2 * net.n_params, np.float32)[::2]):
        _, out, _ = StackStep(net).cost_and_gradient(x, labels, np.random.default_rng(0), g)
        assert out is g
        np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    with pytest.raises(ValueError, match="shape"):
        StackStep(net).cost_and_gradient(x, labels, np.random.default_rng(0), np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="integers"):
        StackStep(net).cost_and_gradient(x, labels + 0.7, np.random.default_rng(0))


def test_the_workqueue_pool_gives_the_same_step(tmp_path):
    """Where no OpenMP runtime loads (or NUMBA_THREADING_LAYER says so) numba's own pool runs
    the parallel step: same results as OpenMP's at the same thread count."""
    import os
    import subprocess
    import sys

    script = (
        "import sys, numpy as np, numba\n"
        f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
        "from test_stack_kernels import lenet5, _batch\n"
        "from digitnet.conv_kernels import set_threads\n"
        "from digitnet.stack_kernels import StackStep\n"
        "set_threads(2)\n"
        "net = lenet5(seed=2); x, y = _batch(net, 32, 5)\n"
        "c, g, a = StackStep(net).cost_and_gradient(x, y, np.random.default_rng(0))\n"
        "np.save(sys.argv[1], g)\n"
        "print(numba.threading_layer())\n")
    outs = []
    for layer in ("workqueue", ""):
        env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING_LAYER")}
        if layer:
            env["NUMBA_THREADING_LAYER"] = layer
        path = tmp_path / f"g{layer or 'default'}.npy"
        r = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=600,
                           env=env)
        assert r.returncode == 0, r.stderr
        outs.append((r.stdout.split()[-1], np.load(path)))
    assert outs[0][0] == "workqueue"                        # the default: OpenMP where it loads
    assert np.abs(outs[0][1]).max() > 0
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
