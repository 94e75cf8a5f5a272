"""digitnet.attention_analysis: attention rollout by hand, the attention view's shapes and
grids, MLP activations checked through what zeroing a neuron does to the block's output, the
top patches against a brute-force search, neuron answers written out, and ablation."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet import attention_analysis as aa
from digitnet.errors import UsageError
from digitnet.nn.network import Network, dense_layers
from digitnet.nn.spec import architecture, parse_layers


@pytest.fixture(scope="module")
def vit():
    layers = architecture(parse_layers("patch7x16,block2,block4"), (1, 28, 28), 10, "softmax")
    net = Network.init(layers, (1, 28, 28), seed=4)
    net.params += np.random.default_rng(0).normal(0, 0.05, net.params.shape).astype(np.float32)
    return net


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).random((12, 28, 28), dtype=np.float32)


def test_rollout_by_hand():
    T = 3
    assert np.allclose(aa.rollout([np.eye(T)[None]] * 3), np.eye(T))       # attending to oneself only
    A1 = np.array([[[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5]]])
    A2 = np.array([[[1.0, 0.0, 0.0], [0.5, 0.0, 0.5], [0.0, 0.0, 1.0]],
                   [[0.0, 1.0, 0.0], [0.5, 0.0, 0.5], [0.0, 0.0, 1.0]]])
    m1 = 0.5 * np.eye(T) + 0.5 * A1[0]
    m2 = 0.5 * np.eye(T) + 0.5 * A2.mean(axis=0)
    want = m2 @ m1                                         # later blocks multiply on the left
    got = aa.rollout([A1, A2])
    np.testing.assert_allclose(got, want)
    np.testing.assert_allclose(got.sum(axis=1), 1.0)


def test_attention_view(vit, images):
    view = aa.attention_view(vit, images[0])
    assert [m.shape for m in view.maps] == [(2, 17, 17), (4, 17, 17)]
    assert (view.patch, view.grid) == (7, (4, 4))
    np.testing.assert_allclose(view.maps[1].sum(axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(view.mean[0], view.maps[0].mean(axis=0))
    assert view.class_token().shape == view.class_token(2).shape == view.class_token(1, head=1).shape == (4, 4)
    np.testing.assert_array_equal(view.class_token(1, head=1), view.maps[0][1, 0, 1:].reshape(4, 4))
    px = view.on_pixels(view.rollout[0])
    assert px.shape == (28, 28) and px[0, 0] == px[6, 6] == view.rollout[0, 1] and px[0, 7] == view.rollout[0, 2]
    np.testing.assert_allclose(view.scores, vit.scores(images[:1])[0])


def test_mlp_activations_are_what_the_block_adds_through_W2(vit, images):
    """Zeroing neuron j's outgoing weights changes the block's output by exactly
    −gelu(h_j) W_2[:, j] for every token: the activations are the ones the block used."""
    x = images.reshape(12, -1)
    acts = aa.mlp_activations(vit, 1, x, chunk=5)           # chunks of 5: the pieces line up
    assert acts.shape == (12, 17, 64)
    i = aa.block_layers(vit)[0]
    a_in = vit.feedforward(x)[i]
    p = vit.views[i]
    out = vit.layers[i].forward(p, a_in)[0]
    W2 = p["W_2"].copy()
    p["W_2"][:, 5] = 0
    try:
        out_silenced = vit.layers[i].forward(p, a_in)[0]
    finally:
        p["W_2"][...] = W2
    np.testing.assert_allclose(out - out_silenced, acts[..., 5:6] * W2[:, 5], atol=1e-5)


def test_neuron_questions_are_the_top_patches(vit, images):
    x = images.reshape(12, -1)
    q = aa.neuron_questions(vit, 2, x, top=5)
    acts = aa.mlp_activations(vit, 2, x)[:, 1:]             # patch tokens
    for j in (0, 7, 31):
        brute = np.sort(acts[..., j].ravel())[::-1][:5]
        np.testing.assert_allclose(q.value[j], brute)
        np.testing.assert_allclose(acts[q.sample[j], q.token[j] - 1, j], q.value[j])
    assert q.token.min() >= 1
    crops = q.patches(images, 7)
    s, t = q.sample[7, 0], q.token[7, 0]
    r, c = divmod(t - 1, 4)
    assert crops.shape == (5, 7, 7)
    np.testing.assert_array_equal(crops[0], images[s, 7 * r:7 * r + 7, 7 * c:7 * c + 7])


def test_neuron_answers_written_out(vit):
    ans = aa.neuron_answers(vit, 1)
    assert ans.shape == (64, 10)
    i = aa.block_layers(vit)[0]
    w = vit.views[i]["W_2"][:, 3].astype(np.float64)
    gamma = vit.views[-3]["gamma"]
    normed = (w - w.mean()) / np.sqrt(w.var() + 1e-5) * gamma
    np.testing.assert_allclose(ans[3], vit.views[-2]["W"] @ normed, rtol=1e-4, atol=1e-6)


def test_ablation(vit, images):
    x = images.reshape(12, -1)
    labels = np.arange(12) % 10
    before = vit.params.copy()
    ab = aa.ablate(vit, 2, 3, x, labels)
    assert np.array_equal(vit.params, before)                # the model itself is untouched
    right = vit.scores(x).argmax(axis=1) == labels
    assert ab.accuracy_before == right.mean()
    assert ab.before[0] == right[[0, 10]].mean() and ab.before[9] == right[9]
    vit2 = vit.copy()
    vit2.views[aa.block_layers(vit2)[1]]["W_2"][:, 3] = 0    # already silent: nothing changes
    again = aa.ablate(vit2, 2, 3, x, labels)
    assert np.array_equal(again.before, again.after)


def test_refusals(vit):
    with pytest.raises(UsageError, match="from 1 to 2"):
        aa.neuron_answers(vit, 3)
    with pytest.raises(UsageError, match="from 0 to 63"):
        aa.ablate(vit, 2, 64, np.zeros((1, 784)), np.zeros(1, int))
    mlp = Network.init(dense_layers((784, 8, 10), "relu", "softmax"), (1, 28, 28))
    with pytest.raises(UsageError, match="no transformer blocks"):
        aa.mlp_activations(mlp, 1, np.zeros((1, 784)))
    with pytest.raises(UsageError, match="patch embedding"):
        aa.attention_view(mlp, np.zeros((28, 28)))
