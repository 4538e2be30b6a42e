"""The benchmark's own arithmetic: what its ratios are divided by must be right.

Its brute force (`brute_force_norms`) is the reference of tests/test_jacobians.py; here the
FLOP count behind the FLOP-bound column, the alternation behind every median, and one pass of
the training section at a tiny size.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from rnnexp import bench
from rnnexp.model import SequenceModel


@pytest.mark.parametrize("cell", list(bench.OURS))
def test_step_flops_counts_every_matmul_of_a_training_step(cell):
    """torch's FLOP counter on the readable unroll (every product a plain mm) agrees exactly,
    but for the one product it skips: dL/dh_0, as s_0 needs no gradient."""
    n, m, B, T = 3, 5, 4, 7
    torch.manual_seed(0)
    model = SequenceModel(bench.OURS[cell](n, m), 1, fused=False)
    inputs, targets = torch.randn(T, B, n), torch.randn(1, B, 1)
    with FlopCounterMode(display=False) as counter:
        F.mse_loss(model(inputs, None, slice(-1, None)), targets).backward()
    counts = counter.get_flop_counts()
    cell_flops = counter.get_total_flops() - sum(counts["SequenceModel.readout"].values())
    rows = bench.GATES[cell] * m
    assert cell_flops == bench.step_flops(cell, m, n, B, T) - 2 * B * rows * m


def test_alternate_interleaves_the_contenders_and_keeps_medians(monkeypatch):
    """Round by round a, b, a, b (after one warm-up each), so a drift in the machine's speed
    hits both; each contender's median over its rounds."""
    clock, calls = [0.0], []
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])

    def contender(name, durations):  # the n-th call takes durations[n] (cycling) seconds
        def run():
            calls.append(name)
            clock[0] += durations[(calls.count(name) - 1) % len(durations)]

        return run

    medians = bench.alternate({"a": contender("a", [9, 1, 2, 7]), "b": contender("b", [5])}, 3)
    assert calls == ["a", "b", "a", "b", "a", "b", "a", "b"]
    assert medians == {"a": 2, "b": 5}  # a's rounds took 1, 2, 7 after its warm-up of 9


def test_training_section_reports_consistent_ratios():
    table = bench.bench_train(1, [4])
    assert list(table.cell) == list(bench.OURS)
    for row in table.itertuples():
        assert row.ours_over_torch == pytest.approx(row.ours_ms / row.torch_ms)
        assert row.reference_over_torch == pytest.approx(row.reference_ms / row.torch_ms)
        assert row.ours_over_flop_bound == pytest.approx(row.ours_ms / row.flop_bound_ms)
        assert all(math.isfinite(v) and v > 0 for v in row[3:-2])
        # products this small never go through oneDNN
        assert (row.products, row.weight_grads) == ("mkl", "mkl")


def test_markdown_table():
    table = bench.pd.DataFrame({"cell": ["lstm"], "ratio": [1.23456]})
    assert bench.markdown(table) == "| cell | ratio |\n| --- | --- |\n| lstm | 1.23 |"
