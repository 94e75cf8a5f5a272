"""digitnet: train and inspect handwritten-digit classifiers from the command line.

The library behind the CLI. Importing ``digitnet`` is cheap (no numba); the pieces:

- ``digitnet.datasets.load_dataset(spec)``: data sets (embedded MNIST, IDX folders, .npz)
- ``digitnet.nn``: the network as a stack of layers (dense, conv, pooling, dropout), the
  chain rule that walks it, optimizers, the ``--layers`` grammar; NumPy only
- ``digitnet.training.train(dataset, config)``: mini-batch training with numba kernels
- ``digitnet.modelfile.save_model`` / ``load_model``: the ``.npz`` model file
- ``digitnet.metrics.evaluate(model, images, labels)``: accuracy, confusion, per class
"""

__version__ = "0.1.0"
