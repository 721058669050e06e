"""Parameter counts and FLOPs against hand counts; the ETA and its format."""

from __future__ import annotations

import math

import pytest
from torch import nn

from descend.train.summary import eta_seconds, flops_per_image, format_duration, model_summary, parameter_count


def conv_linear():
    # conv 1->4, 3x3 on 8x8 -> 4x6x6; linear 144 -> 10
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))


def test_parameter_count_by_hand():
    model = conv_linear()
    assert parameter_count(model) == (4 * 9 + 4 + 144 * 10 + 10,) * 2
    model[0].weight.requires_grad_(False)
    assert parameter_count(model) == (4 + 1450, 1490)


def test_tied_parameters_count_once():
    a = nn.Linear(3, 3, bias=False)
    assert parameter_count(nn.Sequential(a, a)) == (9, 9)


def test_flops_by_hand():
    # a multiply-add is 2 FLOPs: conv 2 * (4 * 6 * 6 outputs) * (1 * 3 * 3 taps), linear 2 * 144 * 10
    assert flops_per_image(conv_linear(), (1, 8, 8)) == 2 * 4 * 36 * 9 + 2 * 144 * 10


def test_flops_of_a_strided_multichannel_conv_by_hand():
    model = nn.Conv2d(3, 5, 3, stride=2, padding=1)  # 3x9x9 -> 5x5x5
    assert flops_per_image(model, (3, 9, 9)) == 2 * (5 * 5 * 5) * (3 * 3 * 3)


def test_flops_leave_the_mode_as_it_was():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    flops_per_image(model, (1, 5, 5))
    assert model.training


def test_model_summary_line():
    line = model_summary(conv_linear(), (1, 8, 8))
    assert line == "Sequential: 1,490 parameters, 5.47 kFLOPs per image"  # 2592 + 2880


def test_eta_is_the_mean_pace_times_what_is_left():
    assert eta_seconds(2, 10, 60.0) == 240.0
    assert eta_seconds(10, 10, 60.0) == 0.0
    assert eta_seconds(0, 10, 0.0) == math.inf
    with pytest.raises(ValueError):
        eta_seconds(-1, 10, 1.0)


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (42.4, "42s"), (187, "3m 07s"), (3900, "1h 05m"),
                                           (2 * 86400 + 3 * 3600 + 59, "2d 03h"), (math.inf, "?")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
