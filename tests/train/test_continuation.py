from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from descend.data import Splits, TensorPair
from descend.errors import ConfigError
from descend.train import Trainer
from descend.train.continuation import Continuation, ContinuationSchedule, blurred


class Scalar(nn.Module):
    """A model whose 'output' is J(theta) itself, so the Trainer minimizes J."""

    def __init__(self, theta: float, objective) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([theta], dtype=torch.float64))
        self.objective = objective

    def forward(self, x):
        return self.objective(self.theta).expand(len(x), 1)


def mean_output(out, y):
    return out.mean()


def scalar_data(n=1):
    return Splits(TensorPair(torch.zeros(n, 1, dtype=torch.float64), torch.zeros(n, dtype=torch.long)))


def test_schedule_is_a_non_increasing_sequence_ending_at_zero():
    s = ContinuationSchedule.linear(0.4, stages=4, epochs_per_stage=2)
    assert [s(e) for e in range(1, 12)] == pytest.approx([0.4, 0.4, 0.3, 0.3, 0.2, 0.2, 0.1, 0.1, 0, 0, 0])
    g = ContinuationSchedule.geometric(1.0, stages=3, ratio=0.5)
    assert [g(e) for e in range(1, 6)] == [1.0, 0.5, 0.25, 0.0, 0.0]
    with pytest.raises(ConfigError, match="must be 0"):
        ContinuationSchedule([0.3, 0.1])
    with pytest.raises(ConfigError, match="not increase"):
        ContinuationSchedule([0.1, 0.3, 0.0])
    with pytest.raises(ConfigError, match="epochs_per_stage"):
        ContinuationSchedule([0.0], epochs_per_stage=0)


def test_parameter_noise_step_follows_the_gradient_of_the_blurred_cost():
    # J(theta) = cos(theta): the blurred cost of eq. 8.40 is E cos(theta + sigma eps) =
    # cos(theta) exp(-sigma^2 / 2), whose gradient is -sin(theta) exp(-sigma^2 / 2).
    theta0, sigma, samples = 0.7, 1.2, 1500
    model = Scalar(theta0, torch.cos)
    cont = Continuation(ContinuationSchedule([sigma, 0.0]), samples=samples)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=1.0), scalar_data(), loss=mean_output,
                      epochs=1, batch_step=cont, quiet=True, evaluate_test=False)
    trainer.fit()
    estimated_grad = theta0 - model.theta.item()  # one SGD step with lr 1
    exact = -math.sin(theta0) * math.exp(-sigma**2 / 2)
    # The sampled gradient -sin(theta + sigma eps) has variance <= 1: within 5 standard errors.
    assert abs(estimated_grad - exact) < 5 / math.sqrt(samples)


def test_zero_sigma_is_exactly_plain_training():
    def run(batch_step):
        torch.manual_seed(0)
        model = nn.Linear(3, 2)
        x = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
        data = Splits(TensorPair(x, (x[:, 0] > 0).long()))
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), data, epochs=2, batch_size=8,
                batch_step=batch_step, quiet=True).fit()
        return model.weight.detach().clone()

    assert torch.equal(run(None), run(Continuation(ContinuationSchedule([0.0]))))


def test_blurring_escapes_a_local_minimum():
    # J(theta) = theta^2 / 20 + 1 - cos(3 theta): global minimum 0, local minima near
    # every 2 pi / 3. Gradient descent from theta = 4 stops in the local minimum near 4.1;
    # blurred with sigma = 1.5, the cosine is damped by exp(-9 sigma^2 / 2) and the cost is
    # nearly the convex quadratic, which leads to the global basin; sigma then goes to 0.
    def objective(theta):
        return theta.pow(2) / 20 + 1 - torch.cos(3 * theta)

    def train(schedule):
        model = Scalar(4.0, objective)
        cont = Continuation(schedule, samples=8, seed=1)
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), scalar_data(50), loss=mean_output,
                epochs=8, batch_size=1, batch_step=cont, quiet=True, evaluate_test=False).fit()
        return model.theta.item()

    plain = train(ContinuationSchedule([0.0]))
    continued = train(ContinuationSchedule([1.5, 1.0, 0.5, 0.0], epochs_per_stage=2))
    assert abs(plain - 4.1) < 0.3
    assert abs(continued) < 0.3


def test_input_noise_continuation_blurs_the_inputs():
    seen = []

    class Record(nn.Linear):
        def forward(self, x):
            seen.append(x.detach().clone())
            return super().forward(x)

    model = Record(2, 2)
    data = Splits(TensorPair(torch.zeros(4000, 2), torch.zeros(4000, dtype=torch.long)))
    cont = Continuation(ContinuationSchedule([0.5, 0.0]), target="inputs")
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), data, epochs=1, batch_size=4000, batch_step=cont,
            quiet=True, evaluate_test=False).fit()
    noise = seen[0]
    assert abs(float(noise.std()) - 0.5) < 5 * 0.5 * math.sqrt(0.5 / noise.numel())
    assert cont.last_sigma == 0.5


def test_blurred_estimate_and_bad_options():
    value = blurred(torch.cos, torch.tensor([0.3], dtype=torch.float64), 0.8, samples=20000,
                    generator=torch.Generator().manual_seed(0))
    assert float(value) == pytest.approx(math.cos(0.3) * math.exp(-0.32), abs=5 / math.sqrt(20000))
    with pytest.raises(ConfigError, match="target"):
        Continuation(ContinuationSchedule([0.0]), target="labels")
    with pytest.raises(ConfigError, match="samples"):
        Continuation(ContinuationSchedule([0.0]), samples=0)
