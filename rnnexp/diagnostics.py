"""Diagnostics snapshots during training: Jacobian-product and gradient norms as tables.

The maths lives in `rnnexp.jacobians`; this module decides when to take a snapshot and turns
one into long-form tables (a row per time step t, or per exponent) plus the per-snapshot
summary numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from torch import Tensor

from rnnexp.jacobians import (
    gradient_norms,
    lyapunov_exponents,
    memory_horizon,
    state_jacobian_norms,
)
from rnnexp.model import SequenceModel


def snapshot_steps(cfg: DictConfig, steps: int) -> list[int]:
    """Training steps after which to snapshot: 0 (initialisation), the schedule, and the end."""
    if cfg.schedule == "log":
        inner = np.geomspace(1, steps, num=cfg.snapshots)[1:]  # 0 stands in for the 1
        chosen = {0, steps, *np.unique(np.round(inner).astype(int)).tolist()}
    else:
        chosen = {0, steps, *range(cfg.every, steps, cfg.every)}
    return sorted(chosen)


def _quantiles(x: Tensor, q: list[float]) -> Tensor:
    """Quantiles over dim 1, linearly interpolated as torch.quantile's, but -inf where that
    gives NaN: between -inf and anything else, or two -inf (a dead relu's log10 0). A row with
    a NaN (an overflowed sample) gives NaN, as torch.quantile does."""
    x = x.sort(dim=1).values  # NaN last
    pos = torch.tensor(q, dtype=x.dtype) * (x.shape[1] - 1)
    low, frac = pos.floor().long(), pos.frac()
    a, b = x[:, low], x[:, (low + 1).clamp_max(x.shape[1] - 1)]
    between = (1 - frac) * a + frac * b  # not a + frac (b - a): that is -inf + inf
    out = torch.where((frac == 0) | (a == b), a, between)
    return torch.where(x[:, -1:].isnan(), math.nan, out).T


def _batch_stats(values: Tensor, name: str) -> dict[str, np.ndarray]:
    """Median, mean, q10 and q90 over the batch (dim 1) of a (rows, B) table."""
    x = values.double().cpu()
    q = _quantiles(x, [0.1, 0.5, 0.9])
    return {
        f"{name}_median": q[1].numpy(),
        f"{name}_mean": x.mean(dim=1).numpy(),
        f"{name}_q10": q[0].numpy(),
        f"{name}_q90": q[2].numpy(),
    }


def snapshot(
    model: SequenceModel, task, inputs: Tensor, targets: Tensor, cfg: DictConfig, step: int
) -> tuple[dict[str, pd.DataFrame], dict[str, float]]:
    """The jacobians, gradients and lyapunov tables' rows, and the summary numbers, for the
    model as it is at `step`.

    inputs/targets: the fixed diagnostics batch, the same for every run of the task.
    """
    seq_len = inputs.shape[0]
    t = np.arange(seq_len + 1)
    log_jac = state_jacobian_norms(
        model.cell, inputs, ord=2 if cfg.norm == "2" else "fro", log=True
    )
    jacobians = pd.DataFrame(
        {"step": step, "t": t, "lag": seq_len - t, "norm": cfg.norm}
        | _batch_stats(log_jac, "log10_jacobian_norm")
    )
    grads = gradient_norms(model, task, inputs, targets)
    log_grad = torch.log10(grads.double())  # an exactly zero gradient gives -inf
    gradients = pd.DataFrame({"step": step, "t": t} | _batch_stats(log_grad, "log10_grad_norm"))
    decay_rate, horizon = memory_horizon(log_jac, threshold=cfg.threshold)
    # the first half of the run aligns the QR frame with the leading directions: averaged in,
    # a random start would bias short runs by about -log(sqrt(S)) / T
    warmup = seq_len // 2
    exponents = lyapunov_exponents(model.cell, inputs, k=cfg.lyapunov_k, warmup=warmup)
    lyapunov = pd.DataFrame(
        {"step": step, "index": np.arange(1, cfg.lyapunov_k + 1)}
        | _batch_stats(exponents.T, "lyapunov_exponent")
    )
    numbers = {
        "memory_horizon": float(horizon),
        "log10_decay_rate": float(decay_rate),
        "lyapunov_exponent": float(exponents[:, 0].mean()),
    }
    tables = {"jacobians": jacobians, "gradients": gradients, "lyapunov": lyapunov}
    return tables, numbers
