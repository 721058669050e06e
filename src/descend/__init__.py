"""descend: every method of the deep-learning reference texts as PyTorch code.

The package layout mirrors the texts:

    descend.data         data sets (MNIST family, bundled digits, .npz) and transforms
    descend.nn           layers: convolution variants, pooling, normalization, recurrent
    descend.init         initialization strategies (Deep Learning sec. 8.4)
    descend.optim        optimizers, schedules, clipping, averaging (ch. 8)
    descend.train        the Trainer (the one training loop), callbacks, checkpoints
    descend.models       network3 (Nielsen ch. 6), LeNet-5, book architectures
    descend.experiments  executable reproductions of the texts' claims
    descend.errors       the exceptions every bad input raises

Submodules are imported on first use (``from descend import optim``), so
``import descend`` itself is cheap.
"""

__version__ = "0.1.0"
