"""The benchmark's own arithmetic: what its ratios are divided by must be right.

Its brute force (`brute_force_norms`) is the reference of tests/test_jacobians.py; here the
one-pass autograd baseline against it, the FLOP count behind the FLOP-bound column, the
alternation behind every median, and one pass of the training section at a tiny size.
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


@pytest.mark.parametrize("cell", list(bench.OURS))
@pytest.mark.parametrize("ord", [2, "fro"])
def test_the_one_pass_autograd_baseline_computes_what_the_brute_force_does(cell, ord):
    """Every ||ds_T/ds_t|| from one batched reverse pass equals the one-t-at-a-time brute
    force's (float64), row T the identity's norm: the snapshot's second baseline is fair."""
    n, m, B, T = 2, 4, 3, 6
    torch.manual_seed(1)
    c = bench.OURS[cell](n, m).double()
    inputs = torch.randn(T, B, n, dtype=torch.float64)
    norms = bench.autograd_norms(c, inputs, ord)
    brute = bench.brute_force_norms(c, inputs, range(T), ord)
    assert norms.shape == (T + 1, B)
    torch.testing.assert_close(norms[:-1], torch.stack(list(brute.values())), rtol=1e-12, atol=0)
    identity = 1.0 if ord == 2 else math.sqrt(c.state_size)
    torch.testing.assert_close(norms[-1], torch.full((B,), identity, dtype=torch.float64))


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


def test_targets_table_holds_each_measured_row_to_its_target():
    """Each target against the rows it names and no others, met where the ratio is at most
    the target; a section that did not run (here sweep and cli) gives no rows."""
    train = bench.pd.DataFrame(
        {
            "cell": ["rnn", "lstm", "rnn", "lstm"],
            "hidden_size": [32, 32, 128, 128],
            "ours_over_torch": [0.6, 1.6, 0.7, 1.0],
            "ours_over_flop_bound": [30.0, 14.0, 4.0, 2.8],
        }
    )
    jacobian = bench.pd.DataFrame(
        {
            "cell": ["gru"],
            "snapshot_over_brute_force": [0.0067],
            "snapshot_over_train_step": [6.2],
        }
    )
    diagnostics = bench.pd.DataFrame({"diagnostics_added": [0.25]})
    table = bench.against_targets(
        {"train": train, "jacobian": jacobian, "diagnostics": diagnostics}
    )
    got = [(r.row, r.ratio, r.target, r.measured, r.met) for r in table.itertuples()]
    assert got == [
        ("cell=lstm hidden_size=128", "ours_over_torch", 1.0, 1.0, "yes"),  # the rnn: no target
        ("cell=rnn hidden_size=32", "ours_over_torch", 1.5, 0.6, "yes"),
        ("cell=lstm hidden_size=32", "ours_over_torch", 1.5, 1.6, "no"),
        ("cell=gru", "snapshot_over_brute_force", 0.01, 0.0067, "yes"),
        ("cell=gru", "snapshot_over_train_step", 1.0, 6.2, "no"),
        ("-", "diagnostics_added", 0.2, 0.25, "no"),
    ]
