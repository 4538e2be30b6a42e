"""Diagnostics snapshots during training: Jacobian-product and gradient norms as tables.

The maths lives in `rnnexp.jacobians`; this module decides when to take a snapshot and turns
one into long-form table rows (one per time step t) plus the per-snapshot summary numbers.
"""

from __future__ import annotations

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


def _batch_stats(log_norms: Tensor, name: str) -> dict[str, np.ndarray]:
    """Median, mean, q10 and q90 over the batch (dim 1) of a (T+1, B) table of log10 norms."""
    x = log_norms.double().cpu()
    q = torch.quantile(x, torch.tensor([0.1, 0.5, 0.9], dtype=x.dtype), dim=1)
    return {
        f"{name}_median": q[1].numpy(),
        f"{name}_mean": x.mean(dim=1).numpy(),
        f"{name}_q10": q[0].numpy(),
        f"{name}_q90": q[2].numpy(),
    }


def snapshot(
    model: SequenceModel, task, inputs: Tensor, targets: Tensor, cfg: DictConfig, step: int
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """Jacobian rows, gradient rows and summary numbers for the model as it is at `step`.

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
    k = min(cfg.lyapunov_k, model.cell.state_size)
    exponents = lyapunov_exponents(model.cell, inputs, k=k)
    numbers = {
        "memory_horizon": float(horizon),
        "log10_decay_rate": float(decay_rate),
        "lyapunov_exponent": float(exponents[:, 0].mean()),
    }
    return jacobians, gradients, numbers
