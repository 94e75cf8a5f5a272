"""Data sets: the embedded MNIST subset, IDX folders, ``.npz`` files, and the names digitnet knows.

A data set is held as uint8 images (N, H, W) and integer labels (N,), split into train and
test exactly as stored on disk: digitnet never re-splits a data set at run time. Class names
travel with the data set (and from there into the model file).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from digitnet.errors import DataError
from digitnet.idx import read_idx
from digitnet.npzfile import open_npz

DIGIT_NAMES = tuple(str(d) for d in range(10))
FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
KMNIST_NAMES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# Key names accepted in a .npz data set: ours first, then the Keras mnist.npz layout.
NPZ_KEYS = (
    ("train_images", "train_labels", "test_images", "test_labels"),
    ("x_train", "y_train", "x_test", "y_test"),
)
MAX_CLASSES = 1000


@dataclass(frozen=True)
class KnownDataset:
    """A data set digitnet knows by name: its class names and where it may be found locally."""

    name: str
    description: str
    class_names: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()
    augmentation: str = "handwriting"      # a profile in augment.PROFILES


KNOWN: dict[str, KnownDataset] = {
    "embedded": KnownDataset("embedded", "10,000 real MNIST digits shipped with digitnet (8,000 train / 2,000 test)", DIGIT_NAMES),
    "mnist": KnownDataset("mnist", "MNIST handwritten digits, 60,000 train / 10,000 test", DIGIT_NAMES),
    "fashion-mnist": KnownDataset("fashion-mnist", "Zalando Fashion-MNIST clothing, 60,000 / 10,000",
                                  FASHION_NAMES, ("/usr/share/datasets/fashion-mnist",), "objects"),
    "kmnist": KnownDataset("kmnist", "Kuzushiji-MNIST cursive Japanese, 60,000 / 10,000", KMNIST_NAMES),
    "fonts": KnownDataset("fonts", "3,000 / 500 typed digits rendered from 21 DejaVu fonts, shipped with digitnet", DIGIT_NAMES),
}


@dataclass(frozen=True)
class Dataset:
    """Images (N, H, W) uint8 and labels (N,) int64 for a train and a test split."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...] = DIGIT_NAMES
    source: str = ""
    checksum: str = field(default="", compare=False)
    augmentation: str = "handwriting"      # which augment.PROFILES entry suits these images

    @property
    def input_shape(self) -> tuple[int, int]:
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def split(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of the ``train`` or ``test`` split; DataError if it is empty."""
        if which not in ("train", "test"):
            raise DataError(f"unknown split {which!r}: use train or test")
        images, labels = (self.train_images, self.train_labels) if which == "train" else (self.test_images, self.test_labels)
        if len(images) == 0:
            raise DataError(f"data set {self.name!r} has no {which} split")
        return images, labels


def user_data_dir() -> Path:
    """Per-user data directory (XDG): ``$XDG_DATA_HOME/digitnet`` or ``~/.local/share/digitnet``."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "digitnet"


def known_locations(name: str) -> list[Path]:
    """Folders where the named data set may live, in search order (user dir first)."""
    known = KNOWN[name]
    return [user_data_dir() / name, *(Path(d) for d in known.system_dirs)]


def find_idx_files(directory: Path) -> dict[str, Path] | None:
    """Map each of the four standard IDX roles to a file in ``directory`` (raw or .gz), or None."""
    found = {}
    for role, stem in IDX_FILES.items():
        for candidate in (directory / stem, directory / (stem + ".gz"), directory / stem.replace("-idx", ".idx")):
            if candidate.is_file():
                found[role] = candidate
                break
    return found if len(found) == 4 else None


def _checksum(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return "sha256:" + h.hexdigest()[:16]


def as_uint8_images(images: np.ndarray, where: str) -> np.ndarray:
    """Images as uint8 (N, H, W): uint8 kept, other ints in 0–255 kept, floats in [0, 1] scaled."""
    images = np.asarray(images)
    if images.ndim == 2 and images.shape[1] == 784:
        images = images.reshape(-1, 28, 28)
    if images.ndim != 3 or min(images.shape[1:], default=0) < 1:
        raise DataError(f"{where}: images must have shape (N, H, W) or (N, 784), not {images.shape}")
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind in "iu":
        if images.size and (images.min() < 0 or images.max() > 255):
            raise DataError(f"{where}: integer pixels must lie in 0–255")
        return images.astype(np.uint8)
    if images.dtype.kind == "f":
        if not np.isfinite(images).all():
            raise DataError(f"{where}: images contain NaN or infinite values")
        if images.size and (images.min() < 0 or images.max() > 1):
            raise DataError(f"{where}: float pixels must lie in [0, 1]")
        return np.rint(images * 255).astype(np.uint8)
    raise DataError(f"{where}: images have unsupported dtype {images.dtype}")


def as_labels(labels: np.ndarray, n: int, where: str) -> np.ndarray:
    """Labels as int64 (N,), checked against the number of images."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{where}: labels must be a 1-D integer array, not {labels.dtype} {labels.shape}")
    if len(labels) != n:
        raise DataError(f"{where}: {n:,} images but {len(labels):,} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= MAX_CLASSES):
        raise DataError(f"{where}: labels must lie in 0–{MAX_CLASSES - 1}")
    return labels.astype(np.int64)


def make_dataset(name, train_images, train_labels, test_images, test_labels, class_names=None, source="") -> Dataset:
    """Validate and assemble a Dataset (shapes, dtypes, counts, label range, class names)."""
    where = source or name      # errors name the file or folder the data came from
    tri = as_uint8_images(train_images, f"{where} train images")
    tei = as_uint8_images(test_images, f"{where} test images") if test_images is not None else np.zeros((0, *tri.shape[1:]), np.uint8)
    trl = as_labels(train_labels, len(tri), f"{where} train")
    tel = as_labels(test_labels, len(tei), f"{where} test") if test_labels is not None else np.zeros(0, np.int64)
    if len(tri) == 0:
        raise DataError(f"{where}: the train split is empty")
    if tei.shape[1:] != tri.shape[1:]:
        raise DataError(f"{where}: train images are {tri.shape[1]}×{tri.shape[2]} but test images are {tei.shape[1]}×{tei.shape[2]}")
    top = int(max(trl.max(initial=0), tel.max(initial=0)))
    if class_names is None:
        class_names = DIGIT_NAMES if top < 10 else tuple(str(i) for i in range(top + 1))
    class_names = tuple(str(c) for c in class_names)
    if top >= len(class_names):
        raise DataError(f"{where}: label {top} but only {len(class_names)} class names")
    # the kind of images, known by their classes: clothing is augmented as objects, not strokes
    augmentation = next((k.augmentation for k in KNOWN.values() if k.class_names == class_names), "handwriting")
    return Dataset(name, tri, trl, tei, tel, class_names, source, _checksum(tri, trl, tei, tel), augmentation)


# the known data sets that ship inside the package, and their files in digitnet/resources/
SHIPPED = {"embedded": "mnist-embedded.npz", "fonts": "fonts-digits.npz"}


def shipped_file(name: str):
    """The package resource (a Traversable: ``resources.as_file`` gives a path) of a data
    set that ships inside digitnet, by its name in ``SHIPPED``."""
    return resources.files("digitnet") / "resources" / SHIPPED[name]


def load_fonts() -> Dataset:
    """The ``fonts`` set shipped with digitnet: 3,000 / 500 typed digits rendered once by
    ``scripts/build_fonts.py`` (``digitnet.synth``), so every machine trains on the same bits."""
    with resources.as_file(shipped_file("fonts")) as p:
        return _load_npz(p, "fonts", DIGIT_NAMES)


def load_embedded() -> Dataset:
    """The 10,000 real MNIST digits shipped inside the package (8,000 train / 2,000 test)."""
    with resources.as_file(shipped_file("embedded")) as p:
        return _load_npz(p, "embedded", DIGIT_NAMES)


def _load_idx_dir(directory: Path, name: str, class_names) -> Dataset:
    files = find_idx_files(directory)
    if files is None:
        missing = [s for role, s in IDX_FILES.items() if not any((directory / f).is_file() for f in (s, s + ".gz"))]
        raise DataError(f"{directory}: not an IDX data set folder (missing {', '.join(missing)}[.gz])")
    arrays = {role: read_idx(path) for role, path in files.items()}
    for role in ("train_images", "test_images"):
        if arrays[role].ndim != 3:
            raise DataError(f"{files[role]}: expected images (3 dimensions), found shape {arrays[role].shape}")
    for role in ("train_labels", "test_labels"):
        if arrays[role].ndim != 1:
            raise DataError(f"{files[role]}: expected labels (1 dimension), found shape {arrays[role].shape}")
    return make_dataset(name, arrays["train_images"], arrays["train_labels"], arrays["test_images"],
                        arrays["test_labels"], class_names, str(directory))


MAX_CLASS_NAME_BYTES = 1 << 20    # the class_names member: MAX_CLASSES names of a few hundred characters


def _load_npz(path: Path, name: str, class_names=None) -> Dataset:
    """A data set from an ``.npz``: only the members it needs are read (image and label
    arrays in one of the NPZ_KEYS layouts, class_names), never the others."""
    with open_npz(path, DataError, "an .npz data set") as z:
        if "class_names" in z and class_names is None:
            names = z.read("class_names", MAX_CLASS_NAME_BYTES, "class_names")
            if names.dtype.kind != "U" or names.ndim != 1:
                raise DataError(f"{path}: class_names must be a 1-D array of strings")
            class_names = tuple(str(c) for c in names)
        for tr_i, tr_l, te_i, te_l in NPZ_KEYS:
            if tr_i in z and tr_l in z:
                test = (z.read(te_i), z.read(te_l)) if te_i in z and te_l in z else (None, None)
                return make_dataset(name, z.read(tr_i), z.read(tr_l), *test, class_names, str(path))
        if "images" in z and "labels" in z:
            return make_dataset(name, z.read("images"), z.read("labels"), None, None, class_names, str(path))
    raise DataError(f"{path}: no image/label arrays (expected train_images/train_labels[/test_*], x_train/y_train, or images/labels)")


def combine(parts: list[Dataset], name: str) -> Dataset:
    """Train on the union of the parts' train splits; test on the first part's test split
    (the benchmark stays the data set named first). Shapes and class names must agree."""
    first = parts[0]
    for other in parts[1:]:
        if other.input_shape != first.input_shape or other.class_names != first.class_names:
            raise DataError(f"{name}: cannot combine {first.name} ({first.n_classes} classes of "
                            f"{first.input_shape[0]}×{first.input_shape[1]}) with {other.name} "
                            f"({other.n_classes} classes of {other.input_shape[0]}×{other.input_shape[1]})")
    return make_dataset(name, np.concatenate([p.train_images for p in parts]),
                        np.concatenate([p.train_labels for p in parts]), first.test_images, first.test_labels,
                        first.class_names, " + ".join(p.source or p.name for p in parts))


def load_dataset(spec: str | os.PathLike = "embedded") -> Dataset:
    """Load a data set from a name (``embedded``, ``mnist``, ``fashion-mnist``, ``kmnist``,
    ``fonts``, or the name of a set imported with ``digitnet data import``), a folder of IDX
    files, an ``.npz`` file, or several of these joined by ``+`` (their train splits combined,
    e.g. ``embedded+fonts`` or ``mnist+my-digits.npz``). Raises DataError saying what is wrong."""
    text = str(spec)
    if text == "embedded":
        return load_embedded()
    if text == "fonts":
        return load_fonts()
    if "+" in text and not Path(text).exists():
        return combine([load_dataset(part) for part in text.split("+")], text)
    if text in KNOWN:
        for directory in known_locations(text):
            if directory.is_dir() and find_idx_files(directory):
                return _load_idx_dir(directory, text, KNOWN[text].class_names)
        where = ", ".join(str(d) for d in known_locations(text))
        raise DataError(f"data set {text!r} is not here (looked in {where}); run: digitnet data download {text}")
    path = Path(text).expanduser()
    imported = user_data_dir() / "imported" / f"{text}.npz"
    if not path.exists() and path.parent == Path(".") and imported.is_file():
        return _load_npz(imported, text)        # a set made by `digitnet data import` without --out
    if path.is_dir():
        name = path.name or text
        known = KNOWN.get(name)
        return _load_idx_dir(path, name, known.class_names if known else None)
    if path.is_file():
        return _load_npz(path, path.stem)
    if not path.exists():
        names = ", ".join(KNOWN)
        raise DataError(f"{text}: no such data set (a known name: {names}; a folder of IDX files; or an .npz file)")
    raise DataError(f"{text}: not a data set")
