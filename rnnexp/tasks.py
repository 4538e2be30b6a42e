"""Synthetic long-memory tasks: the adding problem and the copy memory problem.

A trainer knows no task by name. It uses only the `Task` protocol:

    input_size, output_size   sizes for the model's input and readout
    seq_len                   the task's length parameter (the column tables group by)
    output_steps              a slice: which of the model's T outputs are scored; the model
                              returns readout(h_t) for states[1:][output_steps], (T_out, B, out)
    baseline_loss             the loss of the best input-blind predictor, the level a model
                              that remembers nothing sits at
    baseline_accuracy         that predictor's expected accuracy, chance (optional: a task
                              without it gets NaN, no dashed line)
    solved_accuracy           the eval accuracy at or above which the task counts as solved
    sample(batch_size, generator) -> (inputs, targets)
                              time-major float32 inputs (T, B, input_size) and targets
                              aligned with output_steps
    loss(outputs, targets)    scalar, differentiable
    accuracy(outputs, targets) -> float

All randomness in `sample` comes from `generator`, never the global RNG, so a fixed-seed generator
gives identical batches whatever else the run draws. Batches are made on `generator.device`.

Tasks are built by Hydra (`hydra.utils.instantiate(cfg.task)`), so every constructor argument is a
YAML key; bad values raise `ValueError` whose message starts with the argument's name.
"""

from __future__ import annotations

import math
import numbers
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor


@runtime_checkable
class Task(Protocol):
    """What a trainer may rely on; see the module docstring."""

    input_size: int
    output_size: int
    seq_len: int
    output_steps: slice
    baseline_loss: float
    solved_accuracy: float  # and, optionally, baseline_accuracy: float

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]: ...

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor: ...

    def accuracy(self, outputs: Tensor, targets: Tensor) -> float: ...


def check_task(task: Task) -> tuple[Tensor, Tensor]:
    """That a task keeps the layout the trainer relies on, checked on a batch of 2 at start-up:
    a task of one's own that breaks it fails here in one line, not in a traceback mid-run.
    The batch goes through `loss` and `accuracy` with zero outputs of the scored steps' shape.
    Raises ValueError; returns the batch (inputs, targets), which prices the trainer's batches."""
    for name in ("baseline_loss", "baseline_accuracy", "solved_accuracy"):
        if name == "baseline_accuracy" and not hasattr(task, name):  # optional
            continue
        value = getattr(task, name, None)
        try:
            float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, got {value!r}") from None
    steps = getattr(task, "output_steps", None)
    if not isinstance(steps, slice):
        raise ValueError(f"output_steps must be a slice, got {steps!r}")
    inputs, targets = task.sample(2, torch.Generator().manual_seed(0))
    if (
        inputs.dim() != 3
        or inputs.shape[1:] != (2, task.input_size)
        or targets.dim() < 2
        or targets.shape[1] != 2
    ):
        raise ValueError(
            "sample(batch_size=2) must return time-major inputs (T, 2, input_size="
            f"{task.input_size}) and targets with the batch on dim 1, got inputs "
            f"{tuple(inputs.shape)} and targets {tuple(targets.shape)}"
        )
    if not inputs.is_floating_point():  # the model's weights are: its first matmul would fail
        raise ValueError(f"sample must return floating-point inputs (float32), got {inputs.dtype}")
    outputs = inputs.new_zeros(len(range(inputs.shape[0])[steps]), 2, task.output_size)
    call = f"(outputs {tuple(outputs.shape)}, targets {tuple(targets.shape)})"
    for name in ("loss", "accuracy"):
        try:
            value = getattr(task, name)(outputs, targets)
        except Exception as e:  # the first line: torch's shape complaints run long
            first = str(e).splitlines()[0] if str(e) else ""
            raise ValueError(f"{name}{call} raised {type(e).__name__}: {first}") from e
        if name == "loss" and not (isinstance(value, Tensor) and value.numel() == 1):
            raise ValueError(f"loss{call} must return a one-element tensor, got {value!r}")
        if name == "accuracy" and not _is_number(value):
            got = (
                f"a tensor of shape {tuple(value.shape)}"
                if isinstance(value, Tensor)
                else repr(value)
            )
            raise ValueError(f"accuracy{call} must return a number, got {got}")
    return inputs, targets


def _is_number(value: object) -> bool:
    """What float() takes: a Python number or a one-element tensor (not a string)."""
    if isinstance(value, Tensor):
        return value.numel() == 1
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_int(name: str, value: int, minimum: int) -> int:
    """value as an int, NumPy's integers too (a sweep written with np.arange, say)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= 1:
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


def _check_shape(outputs: Tensor, shape: tuple[int, ...]) -> None:
    """Guards the loss against broadcasting, which would silently score the wrong thing."""
    if tuple(outputs.shape) != tuple(shape):
        raise ValueError(f"outputs must have shape {tuple(shape)}, got {tuple(outputs.shape)}")


class AddingTask:
    """The adding problem (Hochreiter & Schmidhuber 1997), in the layout of Le et al. 2015 and
    Arjovsky et al. 2016.

    Two input channels over T = seq_len steps: values uniform in [0, 1], and markers, 1 at one
    step drawn uniformly from the first half [0, T//2) and at one from the second half [T//2, T),
    0 elsewhere. Only the last output is scored; its target is the sum of the two marked values.
    T = 6, first half steps 0-2, second half 3-5:

        values   0.31  0.72  0.05  0.94  0.48  0.16
        markers  0     1     0     0     1     0
        target                                 1.20  (= 0.72 + 0.48, at the last step)

    Loss is MSE. Blind to the input, the best guess is E[X1 + X2] = 1, with MSE
    Var(X1 + X2) = 2/12 = 1/6: `baseline_loss`. A sequence counts as right when the absolute
    error is below a = 0.04, Hochreiter's threshold, applied here to the raw sum. X1 + X2 has
    the triangular density 1 - |s - 1| on [0, 2], so always predicting 1 is right with
    probability 2a - a^2 = 0.0784: `baseline_accuracy`. Hochreiter & Schmidhuber's values were
    U[-1, 1] (first marker among the first ten steps) and their 0.04 was on 0.5 + (X1 + X2)/4,
    0.16 on a sum of standard deviation 0.82; here 0.04 is on a sum of standard deviation 0.41:
    relative to the target's spread, twice as strict.
    """

    tolerance = 0.04
    input_size = 2
    output_size = 1
    output_steps = slice(-1, None)
    baseline_loss = 1.0 / 6.0
    baseline_accuracy = 2 * tolerance - tolerance**2

    def __init__(self, seq_len: int = 100, solved_accuracy: float = 0.95) -> None:
        self.seq_len = _check_int("seq_len", seq_len, 2)
        self.solved_accuracy = _check_fraction("solved_accuracy", solved_accuracy)

    def __repr__(self) -> str:
        return f"AddingTask(seq_len={self.seq_len}, solved_accuracy={self.solved_accuracy})"

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Inputs (T, B, 2) and targets (1, B, 1), both float32."""
        batch_size = _check_int("batch_size", batch_size, 1)
        T, half, dev = self.seq_len, self.seq_len // 2, generator.device
        values = torch.rand(T, batch_size, generator=generator, device=dev, dtype=torch.float32)
        first = torch.randint(0, half, (batch_size,), generator=generator, device=dev)
        second = torch.randint(half, T, (batch_size,), generator=generator, device=dev)
        batch = torch.arange(batch_size, device=dev)
        markers = torch.zeros_like(values)
        markers[first, batch] = 1.0
        markers[second, batch] = 1.0
        targets = values[first, batch] + values[second, batch]
        return torch.stack([values, markers], dim=-1), targets.view(1, batch_size, 1)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        _check_shape(outputs, targets.shape)
        return F.mse_loss(outputs, targets)

    def accuracy(self, outputs: Tensor, targets: Tensor) -> float:
        """Fraction of sequences whose sum is within `tolerance`."""
        _check_shape(outputs, targets.shape)
        return ((outputs.detach() - targets).abs() < self.tolerance).float().mean().item()


class CopyTask:
    """The copy memory problem (Arjovsky et al. 2016; Henaff et al. 2016), Arjovsky's layout.

    Categories: 0 is blank, 1..n_symbols are symbols, n_symbols + 1 is the delimiter. The input
    is n_copy symbols drawn uniformly, seq_len - 1 blanks, the delimiter (at step
    seq_len + n_copy - 1), then n_copy blanks: T = seq_len + 2 n_copy steps, one-hot over
    n_symbols + 2 categories. The target is blank everywhere except the last n_copy steps, which
    reproduce the symbols in order. seq_len = 3, n_copy = 2, n_symbols = 8 (delimiter 9), T = 7:

        step     0  1  2  3  4  5  6
        input    5  2  0  0  9  0  0
        target   0  0  0  0  0  5  2

    Every output step is scored by the loss (cross-entropy over blank and the symbols; the
    delimiter is never a target, so output_size = n_symbols + 1). A model that remembers nothing
    outputs blank with certainty until the recall and uniform symbols during it, for a loss of
    n_copy log(n_symbols) / T: `baseline_loss`.

    Accuracy is over the n_copy recalled symbols only (argmax); guessing scores 1 / n_symbols,
    `baseline_accuracy`. Averaged over all steps, the
    blanks dominate, a known pitfall: outputting blank everywhere scores 1 - n_copy/T, about 99%
    at seq_len = 1000, without remembering anything.
    """

    output_steps = slice(None)

    def __init__(
        self,
        seq_len: int = 100,
        n_symbols: int = 8,
        n_copy: int = 10,
        solved_accuracy: float = 0.99,
    ) -> None:
        self.seq_len = _check_int("seq_len", seq_len, 1)
        # One symbol would leave nothing to remember and a baseline loss of 0.
        self.n_symbols = _check_int("n_symbols", n_symbols, 2)
        self.n_copy = _check_int("n_copy", n_copy, 1)
        self.solved_accuracy = _check_fraction("solved_accuracy", solved_accuracy)
        self.input_size = n_symbols + 2
        self.output_size = n_symbols + 1
        self.delimiter = n_symbols + 1
        self.total_len = seq_len + 2 * n_copy
        self.baseline_loss = n_copy * math.log(n_symbols) / self.total_len
        self.baseline_accuracy = 1 / n_symbols

    def __repr__(self) -> str:
        return (
            f"CopyTask(seq_len={self.seq_len}, n_symbols={self.n_symbols}, "
            f"n_copy={self.n_copy}, solved_accuracy={self.solved_accuracy})"
        )

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """One-hot float32 inputs (T, B, n_symbols + 2) and long category targets (T, B)."""
        batch_size = _check_int("batch_size", batch_size, 1)
        k, dev = self.n_copy, generator.device
        symbols = torch.randint(
            1, self.n_symbols + 1, (k, batch_size), generator=generator, device=dev
        )
        categories = torch.zeros(self.total_len, batch_size, dtype=torch.long, device=dev)
        categories[:k] = symbols
        categories[self.seq_len + k - 1] = self.delimiter
        targets = torch.zeros_like(categories)
        targets[-k:] = symbols
        inputs = F.one_hot(categories, self.input_size).to(torch.float32)
        return inputs, targets

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Cross-entropy averaged over all T steps and the batch."""
        _check_shape(outputs, (*targets.shape, self.output_size))
        return F.cross_entropy(outputs.reshape(-1, self.output_size), targets.reshape(-1))

    def accuracy(self, outputs: Tensor, targets: Tensor) -> float:
        """Fraction of the recalled symbols (the last n_copy steps) predicted right."""
        _check_shape(outputs, (*targets.shape, self.output_size))
        recall = slice(-self.n_copy, None)
        return (outputs[recall].argmax(-1) == targets[recall]).float().mean().item()
