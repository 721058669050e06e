"""NumPy transcription of Nielsen's network3.py (NNDL ch. 6) for one forward pass and
one SGD step, used as the oracle for descend.models.network3.

    ConvPoolLayer:       output = act(max_pool(conv_valid(x, w)) + b)
    FullyConnectedLayer: output = act((1 - p_dropout) * x @ w + b)        (test time)
    SoftmaxLayer:        output = softmax((1 - p_dropout) * x @ w + b)
    cost = -mean(log(output)[range(n), y]) + 0.5 * lmbda * sum(w ** 2) / num_training_batches
    update: param <- param - eta * d cost / d param
"""

import numpy as np


def conv_valid(x, w):
    """'Valid' cross-correlation, the operation Nielsen's text describes (eq. 125).

    network3 calls Theano's conv2d, which flips the kernel (a true convolution); descend
    cross-correlates, so a network3 kernel is a descend kernel flipped in both axes."""
    n, c, rows, cols = x.shape
    maps, _, k, l = w.shape
    out = np.zeros((n, maps, rows - k + 1, cols - l + 1))
    for i in range(rows - k + 1):
        for j in range(cols - l + 1):
            patch = x[:, :, i:i + k, j:j + l]
            out[:, :, i, j] = np.einsum("ncij,mcij->nm", patch, w)
    return out


def max_pool(x, p):
    n, c, rows, cols = x.shape
    r, s = rows // p, cols // p
    return x[:, :, : r * p, : s * p].reshape(n, c, r, p, s, p).max(axis=(3, 5))


def relu(z):
    return np.maximum(0.0, z)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def forward(x, conv_w, conv_b, fc_w, fc_b, sm_w, sm_b, p_dropout):
    a = relu(max_pool(conv_valid(x, conv_w), 2) + conv_b[None, :, None, None]).reshape(len(x), -1)
    h = relu((1 - p_dropout) * a @ fc_w + fc_b)
    return softmax((1 - p_dropout) * h @ sm_w + sm_b)


def softmax_layer_sgd_step(x, y, w, b, eta, lmbda, num_training_batches):
    """One network3 SGD step of a lone SoftmaxLayer (no dropout) on the batch (x, y)."""
    n = len(x)
    p = softmax(x @ w + b)
    onehot = np.eye(w.shape[1])[y]
    grad_z = (p - onehot) / n
    grad_w = x.T @ grad_z + lmbda * w / num_training_batches
    grad_b = grad_z.sum(axis=0)
    return w - eta * grad_w, b - eta * grad_b
