"""Fast unrolls: a whole sequence as one autograd Function with a hand-derived BPTT.

The reference unroll (`RecurrentCell.scan`) runs one cell step per time step under autograd:
about 10 small ops forward and 20 backward per step, each paying Python's and autograd's
overhead. These Functions compute exactly the same states with far fewer ops per step:

- the input projection W_ih x_t + b for all steps is one matmul, out of the time loop;
- forward keeps the gate activations, written in place into preallocated buffers; the only
  work per step is what depends on h_{t-1};
- backward is the recursion dL/ds_{t-1} = dL/ds_t J_t + (the loss's direct term), with J_t the
  cell's analytic one-step Jacobian in factored form (`*_jacobian_factors` in rnnexp.cells).
  The factors come from the stored gates for all steps at once, in a few large ops; per step
  there remain a few elementwise ops and one matmul by W_hh;
- the weight gradients are sums over steps, so each is one matmul after the loop (the LSTM's
  three are one).

Per-step views are made before the loops (`_per_step`): slicing a tensor costs microseconds,
as much as the small ops themselves. Every Function returns the flat states s_0 ... s_T,
(T+1, B, S), like `scan`; the tests hold them and their gradients to the reference unroll.

First derivatives only: a backward with create_graph=True (a double backward, a Hessian-vector
product) fails in one line instead of with out='s message, and torch.func's transforms do not
go through these Functions. For either, unroll with `scan` (`SequenceModel(..., fused=False)`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnexp.cells import gru_jacobian_factors, lstm_jacobian_factors, rnn_jacobian_factor
from rnnexp.gemm import sequence_product, step_product


def _first_order_only() -> None:
    """Backward runs with grad mode on only under create_graph=True. (`once_differentiable`
    would let it run, and `torch.autograd.functional.hvp` would then return zeros, silently.)"""
    if torch.is_grad_enabled():
        raise RuntimeError(
            "the fused unroll gives first derivatives only; for higher ones (create_graph=True)"
            " unroll with the reference scan: SequenceModel(cell, ..., fused=False)"
        )


def _per_step(x: Tensor, start: int = 0, stop: int | None = None) -> tuple[Tensor, ...]:
    """Views x[t, ..., start:stop] for every t, made in one call."""
    return x[..., start:stop].unbind(0)


CHUNK = 16  # steps whose Jacobian factors are made together: few ops, and they stay in cache


def _chunks(T: int) -> list[slice]:
    """Blocks of CHUNK steps, last first, as the backward recursion meets them."""
    return [slice(t0, min(t0 + CHUNK, T)) for t0 in reversed(range(0, T, CHUNK))]


def _project(inputs: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x_t W^T + b for every step at once: (T, B, rows)."""
    T, B, n = inputs.shape
    return sequence_product(inputs.reshape(T * B, n), weight.t(), bias).view(T, B, -1)


def _direct_grads(grad_states: Tensor) -> list[bool]:
    """Which s_t the loss touches directly (the copy task: all; the adding task: s_T only).

    max g != 0 or min g != 0 rather than any(g): 3-5x faster on CPU (no temporary the size of
    g, as abs() would make), and a NaN still counts as touched.
    """
    g = grad_states.flatten(1)
    return ((g.amax(1) != 0) | (g.amin(1) != 0)).tolist()


def _sum_over_steps(grad: Tensor, x: Tensor) -> Tensor:
    """sum over t and the batch of grad_t^T x_t, (rows, cols): a weight's gradient, one matmul.

    Computed as (x^T grad)^T: grad^T x is up to 10x slower when x has few columns (MKL).
    """
    return sequence_product(x.reshape(-1, x.shape[-1]).t(), grad.reshape(-1, grad.shape[-1])).t()


def _input_grad(grad_pre: Tensor, w_ih: Tensor, ctx) -> Tensor | None:
    """dL/dinputs from dL/d(the input projection), (T, B, rows); None if not asked for."""
    if not ctx.needs_input_grad[0]:
        return None
    T, B, rows = grad_pre.shape
    return sequence_product(grad_pre.reshape(T * B, rows), w_ih).view(T, B, -1)


def _input_side(grad_pre: Tensor, inputs: Tensor, w_ih: Tensor, ctx) -> tuple:
    """(dL/dinputs or None, dL/dW_ih) from dL/d(the input projection), (T, B, rows)."""
    return _input_grad(grad_pre, w_ih, ctx), _sum_over_steps(grad_pre, inputs)


def _bias_grad(bias: Tensor | None, grad_pre: Tensor) -> Tensor | None:
    return None if bias is None else grad_pre.sum((0, 1))


def _weight_grads(grad_pre: Tensor, h_prev: Tensor, inputs: Tensor, bias: Tensor | None) -> tuple:
    """(dL/dW_hh, dL/dW_ih, dL/db or None) from dL/d(pre-activations) shared by both sides.

    One matmul over [h_{t-1}, x_t, 1] instead of three passes over grad_pre: alone, the product
    with x (a few columns) runs at a few GFLOP/s (MKL), and the LSTM's h_{t-1}, a strided slice
    of its states, would be copied for its own product anyway. 1-3.5% of an LSTM step.
    """
    T, B, m = h_prev.shape
    n = inputs.shape[-1]
    rhs = inputs.new_empty(T, B, m + n + (bias is not None))
    rhs[..., :m] = h_prev
    rhs[..., m : m + n] = inputs
    if bias is not None:
        rhs[..., -1] = 1
    grads = _sum_over_steps(grad_pre, rhs)  # (rows, m + n [+ 1])
    return grads[:, :m], grads[:, m : m + n], None if bias is None else grads[:, -1]


class RNNScan(torch.autograd.Function):
    """h_t = phi(a_t), a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh, over all t.

    Backward: g_{t-1} = (g_t * phi'(a_t)) W_hh (+ the loss's direct term).
    """

    @staticmethod
    def forward(ctx, inputs, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity):
        T, B, _ = inputs.shape
        bias = None if b_ih is None else b_ih + b_hh
        pre = _project(inputs, w_ih, bias)  # (T, B, m), a_t once h_{t-1} W_hh^T is added
        states = inputs.new_empty(T + 1, B, w_hh.shape[0])
        states[0] = h0
        A, H = _per_step(pre), _per_step(states)
        recurrent = step_product(w_hh, B)  # h W_hh^T
        for t in range(T):
            a = recurrent(H[t], add=A[t])
            if nonlinearity == "tanh":
                torch.tanh(a, out=H[t + 1])
            else:
                torch.clamp(a, min=0, out=H[t + 1])
        ctx.nonlinearity = nonlinearity
        ctx.save_for_backward(inputs, w_ih, w_hh, states, b_ih)
        return states

    @staticmethod
    def backward(ctx, grad_states):
        _first_order_only()
        inputs, w_ih, w_hh, states, b_ih = ctx.saved_tensors
        T, B, _ = inputs.shape
        slope = rnn_jacobian_factor(states[1:], ctx.nonlinearity)  # phi'(a_t), every t
        grad_pre = torch.empty_like(slope)  # dL/da_t
        direct, S = _direct_grads(grad_states), _per_step(grad_states)
        G, D = _per_step(grad_pre), _per_step(slope)
        g = grad_states[T].clone()  # dL/dh_{t+1}, total
        back = step_product(w_hh.t(), B)  # g W_hh
        for t in range(T - 1, -1, -1):
            torch.mul(g, D[t], out=G[t])
            g = back(G[t])
            if direct[t]:
                g += S[t]
        grad_inputs, grad_w_ih = _input_side(grad_pre, inputs, w_ih, ctx)
        grad_w_hh = _sum_over_steps(grad_pre, states[:-1])
        grad_b = _bias_grad(b_ih, grad_pre)
        return grad_inputs, g, grad_w_ih, grad_w_hh, grad_b, grad_b, None


class GRUScan(torch.autograd.Function):
    """Our GRU, h' = (1 - z) h + z n, over all t.

    Backward: g_{t-1} = g_t J_t (+ the direct term), with J_t = diag(1 - z) + sum_k
    diag(coef_k) W_k from `gru_jacobian_factors`: per step one broadcast multiply and one addmm.
    """

    @staticmethod
    def forward(ctx, inputs, h0, w_ih, w_hh, b_ih, b_hh):
        T, B, _ = inputs.shape
        m = w_hh.shape[1]
        gates = _project(inputs, w_ih, b_ih)  # (T, B, 3m): x W_ih^T + b_ih, then r, z, n
        gh = inputs.new_empty(T, B, 3 * m)  # h_{t-1} W_hh^T + b_hh, kept: q is its n block
        n = inputs.new_empty(T, B, m)  # not in gates: torch's CPU tanh is 2-3x slower strided
        states = inputs.new_empty(T + 1, B, m)
        states[0] = h0
        H, GH, N = _per_step(states), _per_step(gh), _per_step(n)
        RZ, R, Z = _per_step(gates, 0, 2 * m), _per_step(gates, 0, m), _per_step(gates, m, 2 * m)
        XN = _per_step(gates, 2 * m)
        GH_RZ, Q = _per_step(gh, 0, 2 * m), _per_step(gh, 2 * m)
        recurrent = step_product(w_hh, B, b_hh)  # h W_hh^T + b_hh
        for t in range(T):
            recurrent(H[t], out=GH[t])
            RZ[t].add_(GH_RZ[t]).sigmoid_()
            torch.addcmul(XN[t], R[t], Q[t], out=N[t]).tanh_()
            torch.lerp(H[t], N[t], Z[t], out=H[t + 1])  # h + z (n - h)
        gates[..., 2 * m :] = n
        ctx.save_for_backward(inputs, w_ih, w_hh, states, gates, gh, b_ih)
        return states

    @staticmethod
    def backward(ctx, grad_states):
        _first_order_only()
        inputs, w_ih, w_hh, states, gates, gh, b_ih = ctx.saved_tensors
        T, B, _ = inputs.shape
        m = w_hh.shape[1]
        r, z, n = gates.split(m, -1)
        q, h_prev = gh[..., 2 * m :], states[:-1]
        grad_gh = gates.new_empty(T, B, 3 * m)  # dL/d(h_{t-1} W_hh^T + b_hh)
        grad_h = gates.new_empty(T, B, m)  # dL/dh_{t+1}, total, at step t
        grad_h[T - 1] = grad_states[T]
        direct, S, G = _direct_grads(grad_states), _per_step(grad_states), _per_step(grad_h)
        GG, GG_rzn = _per_step(grad_gh), grad_gh.view(T, B, 3, m).unbind(0)
        back = step_product(w_hh.t(), B)  # g W_hh
        for steps in _chunks(T):
            d, coef = gru_jacobian_factors(*(x[steps] for x in (r, z, n, q, h_prev)))
            D, C = d.unbind(0), coef.unbind(0)
            for t in reversed(range(steps.start, steps.stop)):
                j = t - steps.start
                torch.mul(G[t].unsqueeze(1), C[j], out=GG_rzn[t])
                g_prev = back(GG[t], add=G[t] * D[j], out=G[t - 1] if t else None)
                if direct[t]:
                    g_prev += S[t]
        grad_w_hh = _sum_over_steps(grad_gh, h_prev)
        grad_b_hh = _bias_grad(b_ih, grad_gh)
        # now the input side: the same but for the n block, which sees dL/da_n = g z (1 - n^2)
        # where the recurrent side saw that times r
        grad_gi = grad_gh
        grad_gi[..., 2 * m :] = grad_h * z * (1 - n * n)
        grad_inputs, grad_w_ih = _input_side(grad_gi, inputs, w_ih, ctx)
        return grad_inputs, g_prev, grad_w_ih, grad_w_hh, _bias_grad(b_ih, grad_gi), grad_b_hh


class LSTMScan(torch.autograd.Function):
    """torch's LSTM over all t, on the flat state s = cat(h, c).

    Backward: (g_h, g_c) <- (g_h, g_c) J_t (+ the direct term), J_t from
    `lstm_jacobian_factors`: per step four elementwise ops and one matmul.
    """

    @staticmethod
    def forward(ctx, inputs, s0, w_ih, w_hh, b_ih, b_hh):
        T, B, _ = inputs.shape
        m = w_hh.shape[1]
        # g = tanh(a_g) = 2 sigmoid(2 a_g) - 1, and torch's CPU tanh costs about three
        # sigmoids: with the g rows of the weights doubled once, one sigmoid covers all gates
        double_g = torch.ones(4 * m, 1, dtype=w_hh.dtype, device=w_hh.device)
        double_g[2 * m : 3 * m] = 2
        bias = None if b_ih is None else (b_ih + b_hh) * double_g[:, 0]
        gates = _project(inputs, w_ih * double_g, bias)  # pre-activations, then i, f, g, o
        states = inputs.new_empty(T + 1, B, 2 * m)
        states[0] = s0
        # The cell state is kept as -2c, in a buffer of its own (torch's CPU sigmoid and tanh
        # are 2-3x slower on a strided slice): then tanh(c') = 1 - 2 sigmoid(-2c'), a sigmoid
        # where tanh would cost about two, and h' = o tanh(c') = o - 2 o sigmoid(-2c') is one op
        neg2c, sig = inputs.new_empty(T + 1, B, m), inputs.new_empty(T, B, m)
        torch.mul(s0[:, m:], -2, out=neg2c[0])
        a, (i, f, g, o) = _per_step(gates), (_per_step(gates, j * m, (j + 1) * m) for j in range(4))
        h, c, sc = _per_step(states, 0, m), _per_step(neg2c), _per_step(sig)
        recurrent = step_product(w_hh * double_g, B)  # h W_hh^T, the g rows doubled
        for t in range(T):
            # g holds sigmoid(2 a_g) = (1 + tanh(a_g)) / 2
            torch.sigmoid(recurrent(h[t], add=a[t]), out=a[t])
            # -2c' = f (-2c) - 2 i tanh(a_g) = f (-2c) + 2 i - 4 i g: no per-step g transform
            torch.mul(f[t], c[t], out=c[t + 1]).add_(i[t], alpha=2).addcmul_(i[t], g[t], value=-4)
            torch.sigmoid(c[t + 1], out=sc[t])
            torch.addcmul(o[t], o[t], sc[t], value=-2, out=h[t + 1])
        gates[..., 2 * m : 3 * m].mul_(2).sub_(1)  # now tanh(a_g), for backward
        tanh_c = sig.mul_(-2).add_(1)  # tanh(c'), for backward
        torch.mul(neg2c[1:], -0.5, out=states[1:, :, m:])  # exact: a power of 2
        ctx.save_for_backward(inputs, w_ih, w_hh, states, gates, tanh_c, b_ih)
        return states

    @staticmethod
    def backward(ctx, grad_states):
        _first_order_only()
        inputs, w_ih, w_hh, states, gates, tanh_c, b_ih = ctx.saved_tensors
        T, B, _ = inputs.shape
        m = w_hh.shape[1]
        i, f, g, o = gates.split(m, -1)
        c_prev = states[:-1, :, m:]
        grad_pre = gates.new_empty(T, B, 4 * m)  # dL/d(pre-activations)
        direct = _direct_grads(grad_states)
        SH, SC = _per_step(grad_states, 0, m), _per_step(grad_states, m)
        P, P_o, F = _per_step(grad_pre), _per_step(grad_pre, 3 * m), _per_step(f)
        P_ifg = grad_pre.view(T, B, 4, m)[:, :, :3].unbind(0)  # (B, 3, m) views
        grad_h, grad_c = SH[T].clone(), SC[T].clone()
        back = step_product(w_hh.t(), B)  # (dL/d pre-activations) W_hh
        for steps in _chunks(T):
            factors = lstm_jacobian_factors(*(x[steps] for x in (i, f, g, o, c_prev, tanh_c)))
            K, DC, DO = (x.unbind(0) for x in factors)
            for t in reversed(range(steps.start, steps.stop)):
                j = t - steps.start
                grad_c = torch.addcmul(grad_c, grad_h, K[j])  # dL/dc_{t+1}: directly, via h
                torch.mul(grad_c.unsqueeze(1), DC[j], out=P_ifg[t])
                torch.mul(grad_h, DO[j], out=P_o[t])
                grad_c = grad_c * F[t]
                grad_h = back(P[t])
                if direct[t]:
                    grad_h += SH[t]
                    grad_c += SC[t]
        grad_inputs = _input_grad(grad_pre, w_ih, ctx)
        grad_w_hh, grad_w_ih, grad_b = _weight_grads(grad_pre, states[:-1, :, :m], inputs, b_ih)
        return grad_inputs, torch.cat([grad_h, grad_c], -1), grad_w_ih, grad_w_hh, grad_b, grad_b
