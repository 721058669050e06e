"""LeNet-5 (LeCun et al. 1998; CS189 notes): layer sizes, Table I, parameter counts."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from descend.models import MODELS
from descend.models.lenet import LeNet5, ScaledTanh, Subsampling, c3_connections

# Table I of the paper: which S2 maps (rows) each C3 map (columns) takes as input.
TABLE_I = """
X...XXX..XXXX.XX
XX...XXX..XXXX.X
XXX...XXX..X.XXX
.XXX..XXXX..X.XX
..XXX..XXXX.XX.X
...XXX..XXXX.XXX
"""


def test_c3_connection_table_is_table_i():
    rows = [line for line in TABLE_I.split() if line]
    expected = torch.tensor([[ch == "X" for ch in row] for row in rows]).T    # (16 C3, 6 S2)
    assert torch.equal(c3_connections(), expected)


def test_layer_sizes_follow_the_paper():
    net = LeNet5()
    x = torch.rand(2, 1, 28, 28)
    sizes = []
    for layer in net.features:
        x = layer(x)
        sizes.append(tuple(x.shape[1:]))
    # C1, S2, C3, S4, C5 (each followed by its squashing function)
    assert sizes[0::2] == [(6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120, 1, 1)]
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert LeNet5(image_size=32)(torch.rand(2, 1, 32, 32)).shape == (2, 10)   # the paper's 32x32, no padding


def test_trainable_parameter_counts_match_the_paper():
    net = LeNet5()
    f = net.features
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    c3 = f[4]
    c3_effective = int(c3.connections.sum()) * 25 + c3.bias.numel()
    # The paper: C1 156, S2 12, C3 1,516, S4 32, C5 48,120, F6 10,164 trainable parameters.
    assert [count(f[0]), count(f[2]), c3_effective, count(f[6]), count(f[8]), count(net.classifier[1])] == \
        [156, 12, 1516, 32, 48120, 10164]


def test_subsampling_and_squashing_function():
    s = Subsampling(3)
    with torch.no_grad():
        s.coefficient.copy_(torch.tensor([0.5, -1.0, 2.0]))
        s.bias.copy_(torch.tensor([0.1, 0.0, -0.3]))
    x = torch.randn(2, 3, 6, 6)
    expected = 4 * F.avg_pool2d(x, 2) * s.coefficient[:, None, None] + s.bias[:, None, None]
    torch.testing.assert_close(s(x), expected)
    f = ScaledTanh()
    torch.testing.assert_close(f(torch.tensor([1.0, -1.0])), torch.tensor([1.0, -1.0]), atol=1e-4, rtol=0)


def test_absent_connections_stay_zero_while_training():
    torch.manual_seed(0)
    net = MODELS["lenet5"](in_channels=1, image_size=28, num_classes=10)
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]                         # it can fit a small batch
    c3 = net.features[4]
    assert (c3.dense_weight()[~c3.connections] == 0).all()


def test_modern_variant_options():
    net = LeNet5(in_channels=3, image_size=32, num_classes=7, activation="relu", subsampling="max",
                 connection_table=False)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 7)
