"""Data sets: the embedded subset as specified, IDX folders, .npz files, and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.datasets import FASHION_NAMES, load_dataset, make_dataset
from digitnet.errors import DataError
from digitnet.idx import write_idx


def test_embedded_is_the_specified_split(embedded):
    assert embedded.train_images.shape == (8000, 28, 28) and embedded.test_images.shape == (2000, 28, 28)
    assert embedded.train_images.dtype == np.uint8
    counts = np.bincount(np.concatenate([embedded.train_labels, embedded.test_labels]))
    assert counts.tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    # stratified: every class holds ~20% of its digits in the test split
    share = np.bincount(embedded.test_labels) / counts
    assert np.all(np.abs(share - 0.2) < 0.002)
    both = np.concatenate([embedded.train_images, embedded.test_images]).reshape(10000, -1)
    assert len(np.unique(both, axis=0)) == 10000   # distinct digits, no leak between splits
    assert embedded.class_names == tuple("0123456789")


def test_fashion_mnist_by_name_carries_class_names(fashion_mnist):
    d = load_dataset("fashion-mnist")
    assert len(d.train_labels) == 60000 and len(d.test_labels) == 10000
    assert d.class_names == FASHION_NAMES


def test_idx_folder_and_npz(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 12).astype(np.uint8)
    for stem, arr in (("train-images-idx3-ubyte.gz", imgs), ("train-labels-idx1-ubyte.gz", labels),
                      ("t10k-images-idx3-ubyte", imgs[:4]), ("t10k-labels-idx1-ubyte", labels[:4])):
        write_idx(tmp_path / stem, arr)
    d = load_dataset(tmp_path)
    assert np.array_equal(d.train_images, imgs) and np.array_equal(d.test_labels, labels[:4])
    np.savez(tmp_path / "keras.npz", x_train=imgs, y_train=labels, x_test=imgs[:3], y_test=labels[:3])
    k = load_dataset(tmp_path / "keras.npz")
    assert len(k.train_labels) == 12 and len(k.test_labels) == 3
    np.savez(tmp_path / "own.npz", images=imgs.astype(np.float32) / 255, labels=labels.astype(np.int64),
             class_names=np.array(list("abcdefghij")))
    own = load_dataset(tmp_path / "own.npz")
    assert own.class_names[0] == "a" and np.array_equal(own.train_images, imgs)
    with pytest.raises(DataError, match="no test split"):
        own.split("test")


@pytest.mark.parametrize("arrays, message", [
    (dict(train_images=np.zeros((3, 28, 28), np.uint8), train_labels=np.zeros(2, np.int64)), "3 images but 2 labels"),
    (dict(train_images=np.full((2, 28, 28), np.nan, np.float32), train_labels=np.zeros(2, np.int64)), "NaN"),
    (dict(train_images=np.zeros((2, 5), np.uint8), train_labels=np.zeros(2, np.int64)), "shape"),
    (dict(train_images=np.zeros((2, 28, 28), np.uint8), train_labels=np.array([0.5, 1.0])), "integer"),
    (dict(train_images=np.zeros((2, 28, 28), np.uint8), train_labels=np.array([0, -1])), "labels must lie"),
    (dict(weights=np.zeros(3)), "no image/label arrays"),
])
def test_bad_npz_data_sets(tmp_path, arrays, message):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(DataError, match=message):
        load_dataset(p)


def test_refusals(tmp_path):
    with pytest.raises(DataError, match="no such data set"):
        load_dataset(tmp_path / "missing")
    with pytest.raises(DataError, match="not an IDX data set folder"):
        load_dataset(tmp_path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match="not an .npz data set"):
        load_dataset(tmp_path / "junk.npz")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="class names"):
        make_dataset("x", np.zeros((2, 4, 4), np.uint8), np.array([0, 12]), None, None, class_names=("a", "b"))


def test_named_set_not_present_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    with pytest.raises(DataError, match="digitnet data download kmnist"):
        load_dataset("kmnist")


def test_imported_set_by_name(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    folder = tmp_path / "digitnet" / "imported"
    folder.mkdir(parents=True)
    np.savez(folder / "mine.npz", images=np.zeros((4, 28, 28), np.uint8), labels=np.array([0, 1, 2, 3]))
    d = load_dataset("mine")
    assert d.name == "mine" and len(d.train_labels) == 4


def test_plus_combines_train_splits_and_keeps_the_first_test_split(tmp_path, embedded):
    np.savez(tmp_path / "mine.npz", images=embedded.test_images[:7], labels=embedded.test_labels[:7])
    both = load_dataset(f"embedded+{tmp_path / 'mine.npz'}")
    assert len(both.train_labels) == 8007 and np.array_equal(both.train_images[-7:], embedded.test_images[:7])
    assert np.array_equal(both.test_labels, embedded.test_labels)
    np.savez(tmp_path / "other.npz", images=np.zeros((2, 20, 20), np.uint8), labels=np.array([0, 1]))
    with pytest.raises(DataError, match="cannot combine"):
        load_dataset(f"embedded+{tmp_path / 'other.npz'}")


def test_augmentation_profile_follows_the_kind_of_images(embedded):
    from digitnet.augment import PROFILES

    assert embedded.augmentation == "handwriting"
    clothes = make_dataset("c", np.zeros((2, 28, 28), np.uint8), np.array([0, 9]), None, None, FASHION_NAMES)
    assert clothes.augmentation == "objects"
    assert PROFILES["objects"].rotate == 0 and PROFILES["objects"].bolder == 0
