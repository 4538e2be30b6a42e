"""A cell defined outside the package, selected only through tests/conf/cell/leaky_rnn.yaml.

It proves that adding a cell needs one class (its equations, and their one-step Jacobian if
one likes) and one config file: the trainer, the fused fallback, the Jacobian norms and the
tables need nothing else.
"""

import torch
from torch import Tensor

from rnnexp.cells import RecurrentCell, RNNCell


class LeakyRNNCell(RecurrentCell):
    """h' = (1 - alpha) h + alpha tanh(W_ih x + b_ih + W_hh h + b_hh), a leaky (continuous-time)
    RNN: alpha < 1 slows the state down, and with it the decay of the Jacobian products.

    Jacobian: dh'/dh = (1 - alpha) I + alpha diag(1 - tanh^2) W_hh.
    """

    def __init__(self, input_size: int, hidden_size: int, alpha: float = 0.5, **kwargs) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        self.alpha = alpha
        super().__init__(input_size, hidden_size, **kwargs)

    def _forward(self, x: Tensor, h: Tensor) -> Tensor:
        gi, gh = self._linear(x, h)
        return torch.lerp(h, torch.tanh(gi + gh), self.alpha)

    def _jacobian(self, x: Tensor, h: Tensor) -> Tensor:
        gi, gh = self._linear(x, h)
        jac = self.alpha * (1 - torch.tanh(gi + gh).square()).unsqueeze(-1) * self.weight_hh
        jac.diagonal(dim1=-2, dim2=-1).add_(1 - self.alpha)
        return jac


class AutogradLeakyRNNCell(RecurrentCell):
    """LeakyRNNCell's equations with no `_jacobian`: the base class's autograd one measures it."""

    def __init__(self, input_size: int, hidden_size: int, alpha: float = 0.5, **kwargs) -> None:
        self.alpha = alpha
        super().__init__(input_size, hidden_size, **kwargs)

    def _forward(self, x: Tensor, h: Tensor) -> Tensor:
        gi, gh = self._linear(x, h)
        return torch.lerp(h, torch.tanh(gi + gh), self.alpha)


class HalfStepRNNCell(RNNCell):
    """h' = (h + tanh(...)) / 2, keeping RNNCell's Jacobian, which is not its own: the start-up
    check (`rnnexp.jacobians.check_jacobian`) refuses it."""

    def _forward(self, x: Tensor, h: Tensor) -> Tensor:
        return 0.5 * (h + super()._forward(x, h))


class NoStepCell(RecurrentCell):
    """A cell of one's own that never wrote its step: refused at start-up, in one line."""


class OneGateGRUCell(RecurrentCell):
    """A GRU-like step that forgot `gates = 2`: its z comes out half as wide as h."""

    def _forward(self, x: Tensor, h: Tensor) -> Tensor:
        gi, gh = self._linear(x, h)
        r, z = torch.sigmoid(gi + gh).chunk(2, -1)
        return (1 - z) * h + z * torch.tanh(r)


class MethodStateSizeCell(LeakyRNNCell):
    """state_size written as a method, not a property."""

    def state_size(self) -> int:
        return self.hidden_size
