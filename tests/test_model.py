"""The sequence model against torch's fused multi-step modules."""

import pytest
import torch
from torch import nn

from rnnexp import gemm
from rnnexp.cells import GRUCell, LSTMCell, RNNCell
from rnnexp.fused import _direct_grads
from rnnexp.model import SequenceModel


def _pair(kind, n, m):
    if kind == "lstm":
        ref = nn.LSTM(n, m).double()
        cell = LSTMCell(n, m).double()
    elif kind == "gru":
        ref = nn.GRU(n, m).double()
        cell = GRUCell.from_torch(nn.GRUCell(n, m).double())
    else:
        ref = nn.RNN(n, m, nonlinearity=kind).double()
        cell = RNNCell(n, m, nonlinearity=kind).double()
    if kind != "gru":
        cell.load_state_dict({k.removesuffix("_l0"): v for k, v in ref.state_dict().items()})
    else:
        ref.load_state_dict({k + "_l0": v for k, v in cell.to_torch().state_dict().items()})
    return cell, ref


@pytest.mark.parametrize("kind", ["tanh", "relu", "gru", "lstm"])
def test_unroll_matches_torch_sequence_modules(kind):
    torch.manual_seed(0)
    T, B, n, m = 7, 3, 2, 4
    cell, ref = _pair(kind, n, m)
    model = SequenceModel(cell, output_size=5).double()
    x = torch.randn(T, B, n, dtype=torch.float64)
    outputs, states = model(x, return_states=True)
    hs, _ = ref(x)
    assert states.shape == (T + 1, B, cell.state_size)
    assert torch.equal(states[0], torch.zeros(B, cell.state_size, dtype=torch.float64))
    torch.testing.assert_close(cell.hidden(states[1:]), hs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(outputs, model.readout(hs))


def test_output_steps_select_the_scored_steps_and_state_is_used():
    torch.manual_seed(1)
    model = SequenceModel(LSTMCell(2, 3), output_size=1)
    x = torch.randn(6, 4, 2)
    every = model(x)
    assert every.shape == (6, 4, 1)
    torch.testing.assert_close(model(x, output_steps=slice(-1, None)), every[-1:])
    s0 = (torch.randn(4, 3), torch.randn(4, 3))
    _, states = model(x, state=s0, return_states=True)
    torch.testing.assert_close(states[0], torch.cat(s0, -1))
    assert not torch.allclose(model(x, state=s0), every)


ONEDNN = pytest.mark.skipif(not gemm._onednn_available(), reason="torch built without oneDNN")

CELLS = {
    "tanh": lambda n, m, bias: RNNCell(n, m, bias=bias),
    "relu": lambda n, m, bias: RNNCell(n, m, bias=bias, nonlinearity="relu"),
    "gru": lambda n, m, bias: GRUCell(n, m, bias=bias),
    "lstm": lambda n, m, bias: LSTMCell(n, m, bias=bias),
}


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize(
    "dtype, tol, products",
    [
        (torch.float64, 1e-10, "mkl"),
        (torch.float32, 1e-5, "mkl"),
        pytest.param(torch.float32, 1e-5, "onednn", marks=ONEDNN),
    ],
)
@pytest.mark.parametrize("scored", ["last", "every"])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_unroll_matches_the_reference(kind, dtype, tol, products, scored, bias, monkeypatch):
    """The hand-derived BPTT against autograd through the readable cells: states, and the
    gradients of a loss on the last or on every output w.r.t. inputs, s_0 and parameters;
    with the per-step and the whole-sequence products (the input projection, the weight
    gradients) through MKL and through oneDNN (rnnexp.gemm), forced."""
    monkeypatch.setattr(gemm, "FORCE", products)
    made, routed = [], []
    monkeypatch.setattr(gemm, "_onednn", lambda *a, _make=gemm._onednn: made.append(1) or _make(*a))
    monkeypatch.setattr(
        gemm,
        "sequence_uses_onednn",
        lambda *a, _rule=gemm.sequence_uses_onednn: routed.append(_rule(*a)) or routed[-1],
    )
    torch.manual_seed(7)
    T, B, n, m = 37, 3, 2, 5  # T > fused.CHUNK: the backward crosses blocks of steps
    cell = CELLS[kind](n, m, bias).to(dtype)
    if kind == "relu":  # keep some units alive and some dead, and the states bounded: with
        # I + 0.3 N they reached 3e11, and float32 rounding alone (the reference's own error
        # against float64) came to 8.5e-6, relative, so that two GEMM libraries' differed by 1e-5
        with torch.no_grad():
            cell.weight_hh.copy_(0.7 * torch.eye(m) + 0.3 * torch.randn(m, m))
    x = torch.randn(T, B, n, dtype=dtype, requires_grad=True)
    s0 = torch.randn(B, cell.state_size, dtype=dtype, requires_grad=True)
    weights = torch.randn(T + 1, B, cell.state_size, dtype=dtype)
    if scored == "last":
        weights[:-1] = 0
    results = []
    for unroll in (cell.scan, cell.fast_scan):
        states = unroll(x, s0)
        loss = (weights * states).sum() + (states[-1] ** 2).sum()
        grads = torch.autograd.grad(loss, [x, s0, *cell.parameters()])
        results.append((states, grads))
    (ref_states, ref_grads), (states, grads) = results
    assert len(made) == (2 if products == "onednn" else 0)  # forward's and backward's product
    assert len(routed) >= 3 and set(routed) == {products == "onednn"}
    torch.testing.assert_close(states, ref_states, rtol=tol, atol=tol)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_fused_backward_finds_the_steps_the_loss_touches():
    """A step counts if any entry of its gradient is nonzero: of either sign, subnormal or NaN;
    the fused backward adds the direct term only there."""
    g = torch.zeros(6, 2, 3)
    g[1, 0, 0] = float("nan")
    g[2, 1, 2] = -1e-30
    g[3, 0, 1] = -0.0  # a signed zero touches nothing
    g[4, 1, 1] = 1e-40  # subnormal in float32
    g[5] = -1 - torch.rand(2, 3)  # all negative: its max is below 0
    assert _direct_grads(g) == (g != 0).flatten(1).any(1).tolist()
    assert _direct_grads(g) == [False, True, True, False, True, True]


def test_fused_model_trains_like_the_reference():
    """A few optimizer steps of SequenceModel, fused and not, stay together (float64)."""
    torch.manual_seed(8)
    a = SequenceModel(LSTMCell(2, 6), 1).double()
    b = SequenceModel(LSTMCell(2, 6), 1, fused=False).double()
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = (torch.optim.Adam(m.parameters(), lr=1e-2) for m in (a, b))
    for _ in range(5):
        x, y = torch.randn(12, 4, 2, dtype=torch.float64), torch.randn(1, 4, 1, dtype=torch.float64)
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            ((model(x, output_steps=slice(-1, None)) - y) ** 2).mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["tanh", "gru", "lstm"])
def test_higher_derivatives_need_the_reference_unroll_and_the_fused_one_says_so(kind):
    """The fused backward is first-order: a backward with create_graph=True fails in one line,
    where torch.autograd.functional.hvp could return zeros. With fused=False the
    Hessian-vector product is right: it matches a central difference of the gradient."""
    torch.manual_seed(5)
    cell, _ = _pair(kind, 2, 3)
    x, v = torch.randn(2, 4, 6, 2, dtype=torch.float64).unbind(0)

    def grad(model, x):
        x = x.detach().requires_grad_()
        (g,) = torch.autograd.grad(model(x).square().sum(), x, create_graph=True)
        return x, g

    fused = SequenceModel(cell, 1).double()
    with pytest.raises(RuntimeError, match=r"^the fused unroll gives first derivatives only"):
        grad(fused, x)
    with pytest.raises(RuntimeError, match="fused=False"):  # not zeros
        torch.autograd.functional.hvp(lambda x: fused(x).square().sum(), x, v)
    reference = SequenceModel(cell, 1, fused=False).double()
    reference.readout.load_state_dict(fused.readout.state_dict())
    x1, g = grad(reference, x)
    (hvp,) = torch.autograd.grad((g * v).sum(), x1)
    eps = 1e-5
    difference = (grad(reference, x + eps * v)[1] - grad(reference, x - eps * v)[1]) / (2 * eps)
    torch.testing.assert_close(hvp, difference, rtol=1e-6, atol=1e-8)
