"""The network and its math in NumPy: the registries of activations and costs
(``functions``), the layers (``layers``, ``conv``), the network that stacks them and walks
the chain rule (``network``), the ``--layers`` grammar (``spec``) and the optimizers
(``optim``). Nothing here imports numba: predict, inspect and draw use only this."""

from digitnet.nn import layers as _layers  # noqa: E402,F401  (first: conv.py imports Layer from it, and it imports conv)
