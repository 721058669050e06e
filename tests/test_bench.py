"""``descend.bench``: the FLOP count it converts images/s with, and the overhead table."""

from __future__ import annotations

import json

import pytest
from torch import nn

from descend import bench, cli
from descend.errors import ConfigError


def test_forward_flops_counts_two_per_multiply_add():
    # oracle: conv 5x5, 1 -> 4 maps on 28x28 (valid) has 4*24*24 outputs of 25 MACs each;
    # the linear layer 4*12*12 -> 10 has 576*10 MACs
    model = nn.Sequential(nn.Conv2d(1, 4, 5), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 12 * 12, 10))
    assert bench.forward_flops(model, (1, 28, 28)) == 2 * (4 * 24 * 24 * 25 + 576 * 10)


@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_trainer_overhead_row_is_consistent(amp):
    row = bench.trainer_overhead(lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, 10)), (1, 4, 4),
                                 batch_size=8, images=64, repeats=3, amp=amp)
    assert row["amp"] == amp
    assert row["ratio_low"] <= row["ratio"] <= row["ratio_high"]
    assert row["trainer_images_per_s"] == pytest.approx(64 / row["trainer_s"])


def test_trainer_overhead_refuses_a_precision_the_hand_written_loop_does_not_run():
    with pytest.raises(ConfigError, match="bf16 autocast"):
        bench.trainer_overhead(lambda: nn.Linear(4, 2), (4,), batch_size=2, images=4, repeats=1, amp="fp16")


def test_bench_command_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = cli.main(["bench", "--set", "model.conv=[4]", "--set", "model.hidden=[16]", "--batch-sizes", "16",
                     "--images", "32", "--repeats", "2", "--json", str(out)])
    assert code == 0
    assert "ratio (median of pairs)" in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert [(r["batch_size"], r["channels_last"]) for r in rows] == [(16, False), (16, True)]
    assert cli.main(["bench", "--images", "0"]) == 2
