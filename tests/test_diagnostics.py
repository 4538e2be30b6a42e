"""The snapshot schedule and the batch statistics of the diagnostics tables."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from rnnexp.diagnostics import _quantiles, snapshot_steps

INF = math.inf


@pytest.mark.parametrize("batch", [1, 2, 5, 16])
def test_quantiles_match_torch_on_finite_values(batch):
    x = torch.randn(30, batch, generator=torch.Generator().manual_seed(batch), dtype=torch.float64)
    q = [0.1, 0.5, 0.9]
    expected = torch.quantile(x, torch.tensor(q, dtype=torch.float64), dim=1)
    torch.testing.assert_close(_quantiles(x, q), expected, rtol=0, atol=1e-15)


def test_quantiles_of_minus_inf_are_minus_inf_not_nan():
    # torch.quantile gives NaN for all of these: -inf + t (x + inf)
    x = torch.tensor(
        [[-INF, -INF, -INF, -INF], [-INF, 2.0, -INF, 1.0], [3.0, -INF, 1.0, 5.0]],
        dtype=torch.float64,
    )
    q10, median, q90 = _quantiles(x, [0.1, 0.5, 0.9])
    # positions 0.3, 1.5 and 2.7 in each sorted row
    assert q10.tolist() == [-INF, -INF, -INF]
    assert median.tolist() == [-INF, -INF, 2.0]  # row 3 sorted: -inf, 1, 3, 5
    assert q90.tolist() == [-INF, pytest.approx(1.7), pytest.approx(4.4)]


def test_quantiles_of_a_row_with_nan_are_nan_as_in_torch():
    x = torch.tensor([[1.0, 2.0, math.nan, 4.0], [-INF, math.nan, 1.0, 2.0]], dtype=torch.float64)
    q = [0.1, 0.5, 0.9]
    assert torch.quantile(x, torch.tensor(q, dtype=torch.float64), dim=1).isnan().all()
    assert _quantiles(x, q).isnan().all()


def test_log_schedule_is_log_spaced_with_the_ends():
    cfg = OmegaConf.create({"schedule": "log", "snapshots": 6, "every": 1})
    # geomspace(1, 1000, 6) = 1, 3.98, 15.8, 63.1, 251, 1000; the 1 becomes the initial 0
    assert snapshot_steps(cfg, 1000) == [0, 4, 16, 63, 251, 1000]
    assert snapshot_steps(cfg, 3) == [0, 1, 2, 3]  # rounding merges what coincides


def test_every_schedule_adds_the_ends():
    cfg = OmegaConf.create({"schedule": "every", "snapshots": 2, "every": 300})
    assert snapshot_steps(cfg, 1000) == [0, 300, 600, 900, 1000]
    assert snapshot_steps(cfg, 300) == [0, 300]
