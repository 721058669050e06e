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


def two_layer_sgd_step(x, y, w1, b1, w2, b2, eta, lmbda, num_training_batches):
    """One network3 SGD step of FullyConnectedLayer(ReLU) -> SoftmaxLayer (no dropout):
    back-propagation (NNDL eqs. BP1-BP4) with every gradient taken at the old weights."""
    n = len(x)
    z1 = x @ w1 + b1
    a1 = relu(z1)
    p = softmax(a1 @ w2 + b2)
    delta2 = (p - np.eye(w2.shape[1])[y]) / n
    delta1 = (delta2 @ w2.T) * (z1 > 0)
    decay = lmbda / num_training_batches
    return (w1 - eta * (x.T @ delta1 + decay * w1), b1 - eta * delta1.sum(axis=0),
            w2 - eta * (a1.T @ delta2 + decay * w2), b2 - eta * delta2.sum(axis=0))


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def conv_pool_sgd_step(x, y, cw, cb, sw, sb, eta, lmbda, num_training_batches):
    """One network3 SGD step of ConvPoolLayer(sigmoid, 2x2 pooling) -> SoftmaxLayer (no dropout).

    Back-propagation through max-pooling sends each pooled unit's error to the position of
    its maximum (NNDL ch. 6); through the 'valid' cross-correlation z = conv_valid(x, w) the
    kernel's gradient is dC/dw[m, c, i, j] = sum_{n, r, s} delta[n, m, r, s] x[n, c, r + i, s + j]
    (Goodfellow et al. eq. 9.11)."""
    n = len(x)
    conv = conv_valid(x, cw)
    pooled = max_pool(conv, 2)
    a = sigmoid(pooled + cb[None, :, None, None])
    flat = a.reshape(n, -1)
    p = softmax(flat @ sw + sb)
    delta_sm = (p - np.eye(sw.shape[1])[y]) / n
    delta_pool = (delta_sm @ sw.T).reshape(a.shape) * a * (1.0 - a)
    # the error of each conv output: its pooled unit's error where it is that window's maximum
    maps, rows, cols = pooled.shape[1:]
    windows = conv[:, :, : 2 * rows, : 2 * cols].reshape(n, maps, rows, 2, cols, 2)
    is_max = windows == pooled[:, :, :, None, :, None]
    delta_conv = np.zeros_like(conv)
    delta_conv[:, :, : 2 * rows, : 2 * cols] = (is_max * delta_pool[:, :, :, None, :, None]).reshape(
        n, maps, 2 * rows, 2 * cols)
    k = cw.shape[2]
    grad_cw = np.zeros_like(cw)
    for i in range(k):
        for j in range(k):
            patch = x[:, :, i:i + conv.shape[2], j:j + conv.shape[3]]
            grad_cw[:, :, i, j] = np.einsum("nmrs,ncrs->mc", delta_conv, patch)
    decay = lmbda / num_training_batches
    return (cw - eta * (grad_cw + decay * cw), cb - eta * delta_pool.sum(axis=(0, 2, 3)),
            sw - eta * (flat.T @ delta_sm + decay * sw), sb - eta * delta_sm.sum(axis=0))
