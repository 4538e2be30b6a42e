"""Recurrent cells written from their equations, each with its analytic one-step state Jacobian.

The cells follow torch's conventions: parameter names and shapes (`weight_ih`, `weight_hh`,
`bias_ih`, `bias_hh`), gate order (GRU: r, z, n; LSTM: i, f, g, o) and call signature, so a
state_dict moves between ours and `torch.nn.RNNCell/GRUCell/LSTMCell`. The one deliberate
difference is the GRU update convention, see `GRUCell`.

Flat state. The vanishing-gradient measurements treat every cell as a map s_{t-1} -> s_t on one
vector: s = h for the RNN and GRU, s = cat(h, c) for the LSTM (h first), of size `state_size`.
`step(x, s)` advances it, `hidden(s)` reads h back, and `state_jacobian(x, s)` returns
ds_t/ds_{t-1} in closed form, with rows indexing the new state and columns the previous one.
"""

from __future__ import annotations

import functools
import math
import numbers

import torch
from torch import Tensor, nn

INITS = ("default", "orthogonal", "identity")


def _check_int(name: str, value: int, minimum: int = 1) -> int:
    """value as an int (NumPy's integers too, as torch's cells take them), or a ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _diag_blocks_times(coef: Tensor, weight_hh: Tensor) -> Tensor:
    """sum_k diag(coef[:, k]) @ W_k for the gate blocks W_k of weight_hh: (B, G, m) -> (B, m, m).

    Every Jacobian below has this shape: a gate's pre-activation depends on h only through its
    block of weight_hh, scaled row-wise by the derivative of what the gate feeds. A contraction
    over G <= 4 terms runs faster as G broadcast multiply-adds than as an einsum (a matmul with
    inner size G, then a permuting copy): 2.2 against 1.0 ms for 256 GRU Jacobians at m=64.
    """
    gates, m = coef.shape[1], coef.shape[2]
    blocks = weight_hh.view(gates, m, m)
    out = coef[:, 0, :, None] * blocks[0]
    for k in range(1, gates):
        out.addcmul_(coef[:, k, :, None], blocks[k])
    return out


def rnn_jacobian_factor(h_new: Tensor, nonlinearity: str) -> Tensor:
    """phi'(a) from the new state, elementwise: dh'/dh = diag(phi'(a)) W_hh.

    relu' is NaN where the state is (an overflowed run): [h > 0] alone would make it 0, and an
    exploding run would read as a dead one, its Jacobian products exactly 0.
    """
    if nonlinearity == "tanh":
        return 1 - h_new * h_new
    return torch.where(h_new.isnan(), h_new, (h_new > 0).to(h_new.dtype))


def gru_jacobian_factors(
    r: Tensor, z: Tensor, n: Tensor, q: Tensor, h: Tensor
) -> tuple[Tensor, Tensor]:
    """(d, coef) with dh'/dh = diag(d) + sum_k diag(coef[..., k, :]) W_k, k over r, z, n.

    Elementwise in any leading shape, so the fused BPTT gets every step's at once.
    """
    through_n = z * (1 - n * n)
    coef = torch.stack([through_n * q * r * (1 - r), (n - h) * z * (1 - z), through_n * r], -2)
    return 1 - z, coef


def lstm_jacobian_factors(
    i: Tensor, f: Tensor, g: Tensor, o: Tensor, c: Tensor, tanh_c_new: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(k, dc_dpre, dh_dpre_o): the LSTM Jacobian's factors, elementwise in any leading shape.

    k = o (1 - tanh(c')^2) = dh'/dc'; dc_dpre (..., 3, m) = dc'/d(pre-activations of i, f, g);
    dh_dpre_o = dh'/d(pre-activation of o). See `LSTMCell` for how they make the Jacobian.
    """
    # x (1 - y y) as x - (x y) y: 8 ops instead of 15, as they run over every step of a BPTT
    o_tanh, g_i, c_f = o * tanh_c_new, g * i, c * f
    k = torch.addcmul(o, o_tanh, tanh_c_new, value=-1)
    dc_dpre = torch.stack(
        [
            torch.addcmul(g_i, g_i, i, value=-1),
            torch.addcmul(c_f, c_f, f, value=-1),
            torch.addcmul(i, g_i, g, value=-1),
        ],
        -2,
    )
    return k, dc_dpre, torch.addcmul(o_tanh, o_tanh, o, value=-1)


class RecurrentCell(nn.Module):
    """Parameters, initialisation and the unbatched/flat-state plumbing shared by all cells.

    Subclasses set `gates` (number of gate blocks stacked in the weights) and implement
    `_forward(x, state)` on batched inputs, and `_jacobian(x, s)` in closed form if they like
    (the default is autograd's).
    """

    gates: int = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        init: str = "default",
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        input_size = _check_int("input_size", input_size)
        hidden_size = _check_int("hidden_size", hidden_size)
        if init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}; got {init!r}")
        if not 0 < init_scale < math.inf:
            raise ValueError(f"init_scale must be a finite number > 0, got {init_scale!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.init = init
        self.init_scale = init_scale
        rows = self.gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size))
        self.weight_hh = nn.Parameter(torch.empty(rows, hidden_size))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(rows))
            self.bias_hh = nn.Parameter(torch.empty(rows))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    @property
    def state_size(self) -> int:
        return self.hidden_size

    # -- torch's cells ------------------------------------------------------------------------
    _torch_cell: type[nn.RNNCellBase] | None = None  # the counterpart of a built-in cell

    @classmethod
    def from_torch(cls, cell: nn.RNNCellBase) -> RecurrentCell:
        """Our cell computing exactly what torch's `cell` (RNNCell, GRUCell or LSTMCell)
        computes, on its device and in its dtype."""
        if cls._torch_cell is None or not isinstance(cell, cls._torch_cell):
            raise TypeError(f"{cls.__name__}.from_torch takes a {cls._torch_name()}, got {cell!r}")
        cls._check_torch_equations()
        ours = cls(cell.input_size, cell.hidden_size, bias=cell.bias, **cls._torch_options(cell))
        ours.to(device=cell.weight_hh.device, dtype=cell.weight_hh.dtype)
        cls._copy_parameters(cell, ours)
        return ours

    def to_torch(self) -> nn.RNNCellBase:
        """The `torch.nn` cell computing exactly what this cell computes."""
        if self._torch_cell is None:
            raise TypeError(f"{type(self).__name__} has no torch.nn counterpart")
        self._check_torch_equations()
        options = self._torch_options(self)
        cell = self._torch_cell(self.input_size, self.hidden_size, bias=self.bias, **options)
        cell.to(device=self.weight_hh.device, dtype=self.weight_hh.dtype)
        self._copy_parameters(self, cell)
        return cell

    @classmethod
    def _check_torch_equations(cls) -> None:
        """A subclass that changes the equations computes what no torch cell does."""
        if builtin_equations(cls) is None:
            raise TypeError(
                f"{cls.__name__} changes the equations of {cls._torch_name()}'s counterpart "
                "(see rnnexp.cells.builtin_equations): no torch cell computes it"
            )

    @classmethod
    def _torch_name(cls) -> str:
        return (
            "torch.nn cell" if cls._torch_cell is None else f"torch.nn.{cls._torch_cell.__name__}"
        )

    @staticmethod
    def _torch_options(cell: nn.Module) -> dict:
        """The constructor options, beyond sizes and bias, that ours and torch's share."""
        return {}

    @staticmethod
    def _copy_parameters(src: nn.Module, dst: nn.Module) -> None:
        """The parameters, which have the same names and layout in ours and torch's."""
        dst.load_state_dict(src.state_dict())

    def extra_repr(self) -> str:
        scale = "" if self.init_scale == 1 else f", init_scale={self.init_scale}"
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}, init={self.init!r}{scale}"

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """torch's default uniform(-1/sqrt(m), 1/sqrt(m)), then the recurrent init asked for.

        `init_scale` is the gain of weight_hh whatever the init, so that a sweep over it means
        the same thing for each: `default` keeps torch's draw times the gain; `orthogonal` makes
        each gate block `init_scale` times an orthogonal matrix; `identity` makes it
        `init_scale` times the identity and zeroes the biases (the IRNN of Le et al. 2015).
        """
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            p.uniform_(-bound, bound)
        m = self.hidden_size
        for k in range(self.gates):
            block = self.weight_hh[k * m : (k + 1) * m]
            if self.init == "orthogonal":
                nn.init.orthogonal_(block, gain=self.init_scale)
            elif self.init == "identity":
                block.copy_(self.init_scale * torch.eye(m))
            else:
                block.mul_(self.init_scale)
        if self.init == "identity" and self.bias:
            self.bias_ih.zero_()
            self.bias_hh.zero_()

    def _linear(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """The input and recurrent pre-activations W_ih x + b_ih and W_hh h + b_hh, all gates."""
        gi = x @ self.weight_ih.t()
        gh = h @ self.weight_hh.t()
        if self.bias:
            gi = gi + self.bias_ih
            gh = gh + self.bias_hh
        return gi, gh

    # -- torch's call -----------------------------------------------------------------------
    def forward(self, input: Tensor, state=None):
        """One step, as torch's cells: batched (B, n) or unbatched (n,) input."""
        if input.dim() not in (1, 2):
            raise ValueError(f"expected input of shape (B, n) or (n,), got {tuple(input.shape)}")
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input
        if state is None:
            state = self.unflatten_state(self.initial_state(x))
        elif unbatched:
            state = _map_state(state, lambda t: t.unsqueeze(0))
        # the shapes forward takes, from a state on the meta device: nothing allocated
        zeros = self.unflatten_state(torch.empty(x.shape[0], self.state_size, device="meta"))
        if _shapes(state) != _shapes(zeros):  # as torch's cells: a broadcast would go unseen
            want = _map_state(zeros, lambda t: t[0]) if unbatched else zeros
            got = _map_state(state, lambda t: t[0]) if unbatched else state
            raise ValueError(
                f"state must have shape {_shapes(want)} for input of shape "
                f"{tuple(input.shape)}, got {_shapes(got)}"
            )
        out = self._forward(x, state)
        return _map_state(out, lambda t: t.squeeze(0)) if unbatched else out

    def _forward(self, x: Tensor, state):
        raise NotImplementedError

    # -- flat state ---------------------------------------------------------------------------
    def initial_state(self, input: Tensor) -> Tensor:
        """The zero flat state for a batch like `input` (B, n)."""
        return input.new_zeros(input.shape[0], self.state_size)

    def flatten_state(self, state) -> Tensor:
        """The flat state s from the state `forward` takes (identity unless the LSTM)."""
        return state

    def unflatten_state(self, s: Tensor):
        """The state `forward` takes from the flat state s."""
        return s

    def hidden(self, s: Tensor) -> Tensor:
        """h from the flat state: its first hidden_size entries."""
        return s[..., : self.hidden_size]

    def step(self, x: Tensor, s: Tensor) -> Tensor:
        """One step on the flat state."""
        return self.flatten_state(self._forward(x, self.unflatten_state(s)))

    def scan(self, inputs: Tensor, state=None) -> Tensor:
        """Every flat state s_0 ... s_T of a run over time-major inputs (T, B, n): (T+1, B, S).

        The readable reference unroll, one `step` per time step under autograd.
        """
        s = self._start_state(inputs, state)
        states = [s]
        for x in inputs:
            s = self.step(x, s)
            states.append(s)
        return torch.stack(states)

    def fast_scan(self, inputs: Tensor, state=None) -> Tensor:
        """What `scan` returns, through a hand-derived BPTT (rnnexp.fused) where one exists.

        A cell without one gets `scan`: a new cell, or a subclass of a built-in one that
        overrides more than its initialisation (see `builtin_equations`).
        """
        return self.scan(inputs, state)

    def _fused_args(self, inputs: Tensor, state) -> tuple:
        """(inputs, s_0, weight_ih, weight_hh, bias_ih, bias_hh) for the fused Functions."""
        s0 = self._start_state(inputs, state)
        return inputs, s0, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh

    def _start_state(self, inputs: Tensor, state) -> Tensor:
        """s_0 of a run over inputs (T, B, n): zeros if None, else the flat state, (B, S).

        Checked, because a wrong one would broadcast silently: a number passed where the next
        argument (k, ord, ...) was meant, say.
        """
        if state is None:
            return self.initial_state(inputs[0])
        s = self.flatten_state(state)
        expected = (inputs.shape[1], self.state_size)
        if _shapes(s) != expected:
            raise ValueError(f"state must be s_0 of shape (B, S) = {expected}, got {_shapes(s)}")
        if s.dtype != inputs.dtype:  # the fused unrolls would cast it, and its gradient
            raise ValueError(f"state must have the inputs' dtype {inputs.dtype}, got {s.dtype}")
        return s

    # -- Jacobian -----------------------------------------------------------------------------
    def state_jacobian(self, input: Tensor, state=None) -> Tensor:
        """ds_t/ds_{t-1} in closed form from the gate values: (B, S, S), or (S, S) unbatched.

        `state` is s_{t-1}, in the form `forward` takes or flat. The built-in cells' closed
        forms involve no autograd, so they are cheap and batch over time steps by folding T
        into B; a cell without one gets autograd's (`_jacobian`).
        """
        unbatched = input.dim() == 1
        if unbatched:
            input = input.unsqueeze(0)
            state = None if state is None else _map_state(state, lambda t: t.unsqueeze(0))
        s = self.initial_state(input) if state is None else self.flatten_state(state)
        if _shapes(s) != (input.shape[0], self.state_size):
            raise ValueError(
                f"state must have shape {(input.shape[0], self.state_size)} (flat) for input of "
                f"shape {tuple(input.shape)}, got {_shapes(s)}"
            )
        jac = self._jacobian(input, s)
        return jac.squeeze(0) if unbatched else jac

    def _jacobian(self, x: Tensor, s: Tensor) -> Tensor:
        """By autograd: each sample's J of one `step` (torch.func's jacrev, vmapped over the
        batch), for a cell of one's own that states no closed form. Exact, but S backward
        passes per step where a closed form is a few tensor ops; the cells here override it,
        and `rnnexp.jacobians.check_jacobian` holds a closed form of one's own to it."""

        def one(x1: Tensor, s1: Tensor) -> Tensor:
            return self.step(x1.unsqueeze(0), s1.unsqueeze(0)).squeeze(0)

        jacobian = torch.func.jacrev(one, argnums=1)
        try:
            jac = torch.func.vmap(jacobian)(x, s)
        except RuntimeError:  # a step vmap cannot batch (`if h.sum() > 0:`): one sample at a time
            jac = torch.stack([jacobian(x1, s1) for x1, s1 in zip(x, s, strict=True)])
        # jacrev differentiates under an outer no_grad too, and its result would keep a graph
        # back to the parameters that the snapshots never use
        return jac if torch.is_grad_enabled() else jac.detach()

    def jacobian_vector_product(self, input: Tensor, state: Tensor, v: Tensor) -> Tensor:
        """J v for column vectors v (B, S, k), J = ds_t/ds_{t-1} at (input (B, n), flat state).

        For propagating a few tangent vectors (Lyapunov exponents) without forming J. The cells
        here apply their factored Jacobians, one matmul through weight_hh; any other cell (see
        `builtin_equations`) gets `state_jacobian(input, state) @ v`.
        """
        return self.state_jacobian(input, state) @ v

    def jacobian_factors(self, input: Tensor, state) -> tuple[Tensor, ...]:
        """J = ds_t/ds_{t-1} at (input (B, n), state (B, S) flat or as `forward` takes it) in
        the form that `left_jacobian_product` takes, each tensor batched in its first dimension
        (so time can be folded into it). Default: (J,). A cell whose J has structure (the
        LSTM's c-columns are two diagonals) returns less, and multiplies by it faster.
        """
        return (self.state_jacobian(input, state),)

    def left_jacobian_product(
        self, p: Tensor, factors: tuple[Tensor, ...], out: Tensor | None = None
    ) -> Tensor:
        """p J for p (B, k, S), J given by `jacobian_factors`: the backward accumulation of
        Jacobian products. `out`, if given, must not overlap p; with it (as with any out=) the
        product is not differentiable."""
        return torch.matmul(p, factors[0], out=out)


def _shapes(state) -> tuple | str:
    """A state's shape, or its parts' (the LSTM's (h, c)), or its type's name: for messages."""
    if isinstance(state, Tensor):
        return tuple(state.shape)
    if isinstance(state, tuple) and all(isinstance(t, Tensor) for t in state):
        return tuple(tuple(t.shape) for t in state)
    return type(state).__name__


def _map_state(state, fn):
    return tuple(fn(t) for t in state) if isinstance(state, tuple) else fn(state)


class RNNCell(RecurrentCell):
    """Vanilla RNN: h_t = phi(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), phi = tanh or relu.

    Jacobian: dh_t/dh_{t-1} = diag(phi'(a_t)) W_hh, with tanh' = 1 - h_t^2 and relu' = [a_t > 0].
    """

    gates = 1
    NONLINEARITIES = ("tanh", "relu")
    _torch_cell = nn.RNNCell

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        init: str = "default",
        init_scale: float = 1.0,
    ) -> None:
        if nonlinearity not in self.NONLINEARITIES:
            raise ValueError(f"nonlinearity must be one of tanh, relu; got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, init, init_scale)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, nonlinearity={self.nonlinearity!r}"

    @staticmethod
    def _torch_options(cell: nn.Module) -> dict:
        return {"nonlinearity": cell.nonlinearity}

    def fast_scan(self, inputs: Tensor, state=None) -> Tensor:
        if builtin_equations(self) is not RNNCell or not len(inputs):  # T = 0: s_0 alone
            return self.scan(inputs, state)
        from rnnexp.fused import RNNScan

        return RNNScan.apply(*self._fused_args(inputs, state), self.nonlinearity)

    def _preactivation(self, x: Tensor, h: Tensor) -> Tensor:
        gi, gh = self._linear(x, h)
        return gi + gh

    def _forward(self, x: Tensor, h: Tensor) -> Tensor:
        a = self._preactivation(x, h)
        return torch.tanh(a) if self.nonlinearity == "tanh" else torch.relu(a)

    def _jacobian(self, x: Tensor, h: Tensor) -> Tensor:
        slope = rnn_jacobian_factor(self._forward(x, h), self.nonlinearity)
        return slope.unsqueeze(-1) * self.weight_hh

    def jacobian_factors(self, input: Tensor, state) -> tuple[Tensor, ...]:
        """(phi'(a),): J = diag(phi'(a)) W_hh. P J is then a broadcast multiply and one
        matmul with the shared W_hh, and no (B, m, m) J is built per step: 10% off an all-lag
        snapshot of the Frobenius norm at T=200, m=64, B=16, 4% off the spectral one (median
        of 25 rounds in random order, on 2 cores)."""
        if builtin_equations(self) is not RNNCell:
            return super().jacobian_factors(input, state)
        return (rnn_jacobian_factor(self._forward(input, state), self.nonlinearity),)

    def left_jacobian_product(
        self, p: Tensor, factors: tuple[Tensor, ...], out: Tensor | None = None
    ) -> Tensor:
        if builtin_equations(self) is not RNNCell:
            return super().left_jacobian_product(p, factors, out)
        return torch.matmul(p * factors[0].unsqueeze(-2), self.weight_hh, out=out)

    def jacobian_vector_product(self, input: Tensor, state: Tensor, v: Tensor) -> Tensor:
        if builtin_equations(self) is not RNNCell:
            return super().jacobian_vector_product(input, state, v)
        slope = rnn_jacobian_factor(self._forward(input, state), self.nonlinearity)
        return slope.unsqueeze(-1) * (self.weight_hh @ v)


class GRUCell(RecurrentCell):
    """GRU with Chung et al. 2014's update (Cho et al. 2014 and torch swap z and 1 - z) and the
    reset applied after the recurrent matmul, as torch and cuDNN do:

        r = sigma(W_ir x + b_ir + W_hr h + b_hr)
        z = sigma(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * h + z * n

    torch's `nn.GRUCell` uses the other convention, h' = (1 - z) * n + z * h. Since
    sigma(-a) = 1 - sigma(a), negating the update-gate rows of all four parameters maps one onto
    the other: `GRUCell.from_torch(torch_cell)` and `gru.to_torch()` do that, exactly. A plain
    `load_state_dict` of torch weights does *not* convert: it keeps our convention, so the
    loaded cell computes a different function from the torch cell it came from.

    Jacobian, with q = W_hn h + b_hn:
        dh'/dh = diag(1 - z) + diag((n - h) z(1 - z)) W_hz
                 + diag(z (1 - n^2)) [diag(q r(1 - r)) W_hr + diag(r) W_hn]
    """

    gates = 3
    _torch_cell = nn.GRUCell

    def fast_scan(self, inputs: Tensor, state=None) -> Tensor:
        if builtin_equations(self) is not GRUCell or not len(inputs):  # T = 0: s_0 alone
            return self.scan(inputs, state)
        from rnnexp.fused import GRUScan

        return GRUScan.apply(*self._fused_args(inputs, state))

    def _gates(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        gi, gh = self._linear(x, h)
        i_r, i_z, i_n = gi.chunk(3, -1)
        h_r, h_z, q = gh.chunk(3, -1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * q)
        return r, z, n, q

    def _forward(self, x: Tensor, h: Tensor) -> Tensor:
        _, z, n, _ = self._gates(x, h)
        return (1 - z) * h + z * n

    def _jacobian(self, x: Tensor, h: Tensor) -> Tensor:
        d, coef = gru_jacobian_factors(*self._gates(x, h), h)
        jac = _diag_blocks_times(coef, self.weight_hh)
        jac.diagonal(dim1=-2, dim2=-1).add_(d)
        return jac

    def jacobian_vector_product(self, input: Tensor, state: Tensor, v: Tensor) -> Tensor:
        if builtin_equations(self) is not GRUCell:
            return super().jacobian_vector_product(input, state, v)
        d, coef = gru_jacobian_factors(*self._gates(input, state), state)
        through_w = (self.weight_hh @ v).unflatten(1, (3, self.hidden_size))  # W_k v
        return d.unsqueeze(-1) * v + (coef.unsqueeze(-1) * through_w).sum(1)

    @staticmethod
    def _copy_parameters(src: nn.Module, dst: nn.Module) -> None:
        """The update-gate rows negated: sigma(-a) = 1 - sigma(a) swaps the conventions."""
        m = src.hidden_size
        with torch.no_grad():
            for name, p in src.named_parameters():
                q = p.detach().clone()
                q[m : 2 * m].neg_()
                getattr(dst, name).copy_(q)


class LSTMCell(RecurrentCell):
    """LSTM as torch's LSTMCell, gates i, f, g, o:

        i, f, o = sigma(.), g = tanh(.)   of W_i* x + b_i* + W_h* h + b_h*
        c' = f * c + i * g
        h' = o * tanh(c')

    Its state is (h, c); the flat state is cat(h, c). Jacobian, with k = o (1 - tanh(c')^2):
        dc'/dh = diag(g i(1-i)) W_hi + diag(c f(1-f)) W_hf + diag(i (1-g^2)) W_hg
        dc'/dc = diag(f)
        dh'/dh = diag(k) dc'/dh + diag(tanh(c') o(1-o)) W_ho
        dh'/dc = diag(k f)

    Forget-gate initialisation, on top of `init` for weight_hh:
    `forget_bias` sets the forget gate's total bias to a constant (1 is the usual choice,
    Gers et al. 2000; Jozefowicz et al. 2015); `chrono_max_len` draws it as
    log(U(1, T_max - 1)) and sets the input gate's bias to its negative (chrono initialisation,
    Tallec & Ollivier 2018), where T_max is the longest dependency expected.
    """

    gates = 4
    _torch_cell = nn.LSTMCell

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        init: str = "default",
        init_scale: float = 1.0,
        forget_bias: float | None = None,
        chrono_max_len: int | None = None,
    ) -> None:
        if forget_bias is not None and chrono_max_len is not None:
            raise ValueError("forget_bias and chrono_max_len are exclusive; set at most one")
        if (forget_bias is not None or chrono_max_len is not None) and not bias:
            raise ValueError("forget_bias and chrono_max_len need bias=True")
        if chrono_max_len is not None:
            chrono_max_len = _check_int("chrono_max_len", chrono_max_len, 3)
        if forget_bias is not None and not -math.inf < forget_bias < math.inf:
            raise ValueError(f"forget_bias must be null or a finite number, got {forget_bias!r}")
        self.forget_bias = forget_bias
        self.chrono_max_len = chrono_max_len
        super().__init__(input_size, hidden_size, bias, init, init_scale)

    @property
    def state_size(self) -> int:
        return 2 * self.hidden_size

    def extra_repr(self) -> str:
        keys = {"forget_bias": self.forget_bias, "chrono_max_len": self.chrono_max_len}
        return ", ".join(
            [super().extra_repr()] + [f"{k}={v}" for k, v in keys.items() if v is not None]
        )

    @torch.no_grad()
    def reset_parameters(self) -> None:
        super().reset_parameters()
        m = self.hidden_size
        forget, input_gate = slice(m, 2 * m), slice(0, m)
        if self.forget_bias is not None:
            self.bias_ih[forget] = self.forget_bias
            self.bias_hh[forget] = 0.0
        elif self.chrono_max_len is not None:
            b = torch.log(torch.empty(m).uniform_(1.0, self.chrono_max_len - 1))
            self.bias_ih[forget] = b
            self.bias_hh[forget] = 0.0
            self.bias_ih[input_gate] = -b
            self.bias_hh[input_gate] = 0.0

    def initial_state(self, input: Tensor) -> Tensor:
        return input.new_zeros(input.shape[0], 2 * self.hidden_size)

    def flatten_state(self, state) -> Tensor:
        return torch.cat(state, dim=-1) if isinstance(state, tuple) else state

    def unflatten_state(self, s: Tensor) -> tuple[Tensor, Tensor]:
        h, c = s.split(self.hidden_size, dim=-1)
        return h, c

    def fast_scan(self, inputs: Tensor, state=None) -> Tensor:
        if builtin_equations(self) is not LSTMCell or not len(inputs):  # T = 0: s_0 alone
            return self.scan(inputs, state)
        from rnnexp.fused import LSTMScan

        return LSTMScan.apply(*self._fused_args(inputs, state))

    def _gates(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        gi, gh = self._linear(x, h)
        a_i, a_f, a_g, a_o = (gi + gh).chunk(4, -1)
        return torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)

    def _forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        i, f, g, o = self._gates(x, h)
        c_new = f * c + i * g
        return o * torch.tanh(c_new), c_new

    def _jacobian_blocks(self, x: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(J's h-columns (B, 2m, m), rows h', c'; diag of dh'/dc; diag of dc'/dc)."""
        h, c = self.unflatten_state(s)
        i, f, g, o = self._gates(x, h)
        k, dc_dpre, dh_dpre_o = lstm_jacobian_factors(i, f, g, o, c, torch.tanh(f * c + i * g))
        m = k.shape[1]
        dc_dh = _diag_blocks_times(dc_dpre, self.weight_hh[: 3 * m])
        # diag(k) dc'/dh + diag(dh_dpre_o) W_ho
        dh_dh = (k[..., None] * dc_dh).addcmul_(dh_dpre_o[..., None], self.weight_hh[3 * m :])
        return torch.cat([dh_dh, dc_dh], 1), k * f, f

    def _jacobian(self, x: Tensor, s: Tensor) -> Tensor:
        h_columns, dh_dc, dc_dc = self._jacobian_blocks(x, s)
        B, m = dc_dc.shape
        jac = h_columns.new_empty(B, 2 * m, 2 * m)  # rows h', c'; columns h, c
        jac[..., m:] = 0  # two diagonal blocks: zeroing only them halves a costly fill
        jac[..., :m] = h_columns
        jac[:, :m, m:].diagonal(dim1=-2, dim2=-1).copy_(dh_dc)
        jac[:, m:, m:].diagonal(dim1=-2, dim2=-1).copy_(dc_dc)
        return jac

    def jacobian_factors(self, input: Tensor, state) -> tuple[Tensor, ...]:
        """(J's h-columns, diag of dh'/dc, diag of dc'/dc). J's c-columns are two diagonals:
        P J from these takes half the multiply-adds of P @ J, and no zero blocks are filled to
        build it."""
        if builtin_equations(self) is not LSTMCell:
            return super().jacobian_factors(input, state)
        return self._jacobian_blocks(input, self.flatten_state(state))

    def left_jacobian_product(
        self, p: Tensor, factors: tuple[Tensor, ...], out: Tensor | None = None
    ) -> Tensor:
        if builtin_equations(self) is not LSTMCell:
            return super().left_jacobian_product(p, factors, out)
        h_columns, dh_dc, dc_dc = factors
        m = self.hidden_size
        p_h, p_c = p[..., :m], p[..., m:]
        through_c = torch.addcmul(p_c * dc_dc.unsqueeze(-2), p_h, dh_dc.unsqueeze(-2))
        # the matmul into a buffer of its own: into out's strided half it is slower than a copy
        return torch.cat([p @ h_columns, through_c], -1, out=out)

    def jacobian_vector_product(self, input: Tensor, state: Tensor, v: Tensor) -> Tensor:
        if builtin_equations(self) is not LSTMCell:
            return super().jacobian_vector_product(input, state, v)
        m = self.hidden_size
        h, c = self.unflatten_state(state)
        i, f, g, o = self._gates(input, h)
        k, dc_dpre, dh_dpre_o = lstm_jacobian_factors(i, f, g, o, c, torch.tanh(f * c + i * g))
        through_w = (self.weight_hh @ v[:, :m]).unflatten(1, (4, m))  # W_k v_h, gates i f g o
        dc = (dc_dpre.unsqueeze(-1) * through_w[:, :3]).sum(1) + f.unsqueeze(-1) * v[:, m:]
        dh = k.unsqueeze(-1) * dc + dh_dpre_o.unsqueeze(-1) * through_w[:, 3]
        return torch.cat([dh, dc], 1)


_INITIALISATION = frozenset({"reset_parameters", "extra_repr"})  # and dunders, __init__ too


def check_cell(cell: RecurrentCell) -> None:
    """That a cell of one's own keeps the interface the unrolls rely on, checked at start-up on
    a batch of 2, whether or not diagnostics run: a missing `_forward`, a `state_size` that is
    not an int or a step of the wrong width fails here in one line, not in a traceback mid-run.
    Raises ValueError."""
    name, size = type(cell).__name__, cell.state_size
    if isinstance(size, bool) or not isinstance(size, int):
        raise ValueError(f"{name}.state_size must be an int (a property), got {size!r}")
    x = cell.weight_ih.new_zeros(2, cell.input_size)
    s = cell.initial_state(x)
    try:
        with torch.no_grad():
            out = cell.step(x, s)
    except NotImplementedError as e:
        raise ValueError(f"{name} has no _forward(x, state): write its step, batched") from e
    except Exception as e:  # torch's shape complaint, with what to look at
        first = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(
            f"{name}'s step on a batch of 2 raised {type(e).__name__}: {first} (do `gates` "
            "and `state_size` match what _forward computes?)"
        ) from e
    if not isinstance(out, Tensor) or out.shape != s.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"{name}'s step must return the state, flat shape {tuple(s.shape)} for a batch of "
            f"2 (state_size {size}), got {got}"
        )


def builtin_equations(cell: RecurrentCell | type) -> type | None:
    """The built-in cell (RNNCell, GRUCell, LSTMCell) whose equations `cell` (a cell or its
    class) computes, or None.

    A subclass keeps them, and with them the fused BPTT and the factored Jacobians, as long as
    it overrides nothing of its built-in parent but the initialisation (`__init__`,
    `reset_parameters`, `extra_repr`): a chrono-like init of one's own stays fast. Overriding
    anything else (`_forward`, `_linear`, `gates`, ...) may change what a step computes, so
    the generic paths take over, which follow `step` whatever it does. So does a cell object
    given a method of its own (`self._forward = ...`).
    """
    builtin = _class_equations(cell if isinstance(cell, type) else type(cell))
    if builtin is None or isinstance(cell, type):
        return builtin
    own = any(callable(v) and hasattr(builtin, name) for name, v in vars(cell).items())
    return None if own else builtin


@functools.cache
def _class_equations(cls: type) -> type | None:
    for builtin in (RNNCell, GRUCell, LSTMCell):
        if issubclass(cls, builtin):
            overridden = {  # by any class the built-in does not have: a mixin after it too
                name
                for k in cls.__mro__
                if k not in builtin.__mro__
                for name in vars(k)
                if hasattr(builtin, name) and not (name.startswith("__") and name.endswith("__"))
            }
            return builtin if overridden <= _INITIALISATION else None
    return None
