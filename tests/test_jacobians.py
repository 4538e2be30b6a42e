"""Jacobian norms, state gradients, Lyapunov exponents and memory horizons against autograd and
closed forms (float64 throughout)."""

import copy
import functools
import math

import pytest
import torch
from torch import nn

import rnnexp.jacobians as jacobians
from rnnexp.bench import brute_force_norms
from rnnexp.cells import GRUCell, LSTMCell, RecurrentCell, RNNCell
from rnnexp.jacobians import (
    check_jacobian,
    gradient_norms,
    lyapunov_exponents,
    memory_horizon,
    state_jacobian_norms,
)
from rnnexp.model import SequenceModel
from rnnexp.tasks import AddingTask, CopyTask
from tests.toy_cells import AutogradLeakyRNNCell, HalfStepRNNCell, LeakyRNNCell

pytestmark = pytest.mark.usefixtures("float64_default")

CELLS = {
    "tanh": lambda n, m: RNNCell(n, m, nonlinearity="tanh"),
    "relu": lambda n, m: RNNCell(n, m, nonlinearity="relu"),
    "gru": lambda n, m: GRUCell(n, m),
    "lstm": lambda n, m: LSTMCell(n, m),
    "leaky": lambda n, m: LeakyRNNCell(n, m, alpha=0.6),  # a cell from outside the package
    "autograd": lambda n, m: AutogradLeakyRNNCell(n, m, alpha=0.6),  # one with no _jacobian
}


class LinearCell(RecurrentCell):
    """s_t = W s_{t-1} + U x_t + b: defined here, so the Jacobian code must not know it."""

    def _forward(self, x, h):
        gi, gh = self._linear(x, h)
        return gi + gh

    def _jacobian(self, x, h):
        return self.weight_hh.expand(x.shape[0], -1, -1)


def _linear_cell(weight_hh, input_size=2):
    cell = LinearCell(input_size, weight_hh.shape[0])
    with torch.no_grad():
        cell.weight_hh.copy_(weight_hh)
    return cell


def _brute_force_norms(cell, inputs, ord):
    """(T+1, B): the benchmark's brute force (jacrev of s_t -> s_T, each t alone), then the
    identity's norm."""
    T, B = inputs.shape[:2]
    rows = brute_force_norms(cell, inputs, range(T), ord).values()
    eye = torch.eye(cell.state_size).expand(B, -1, -1)
    return torch.stack([*rows, torch.linalg.matrix_norm(eye, ord=ord)])


@functools.cache
def _case(kind, m, T, B, seed):
    """(cell, inputs, {ord: brute-force norms}), computed once per case."""
    torch.manual_seed(seed)
    cell = CELLS[kind](2, m)
    inputs = torch.randn(T, B, 2)
    return cell, inputs, {ord: _brute_force_norms(cell, inputs, ord) for ord in (2, "fro")}


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("ord", [2, "fro"])
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("m,T,B", [(3, 12, 3), (12, 30, 2)], ids=["small", "S>8"])
def test_norms_match_brute_force(kind, ord, log, m, T, B):
    # S > 8 (the subspace carried between lags) exercises the certified Rayleigh-Ritz path;
    # at S <= 8 the subspace is the whole space.
    cell, inputs, brute = _case(kind, m, T, B, seed=m)
    expected = brute[ord]
    assert (expected > 0).float().mean() > 0.5  # mostly alive, even the relu
    norms = state_jacobian_norms(cell, inputs, ord=ord, log=log)
    assert norms.shape == (T + 1, B) and norms.dtype == torch.float64
    if log:
        norms = 10**norms
    torch.testing.assert_close(norms, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("ord", [2, "fro"])
def test_chunking_over_time_changes_nothing(kind, ord, monkeypatch):
    """Jacobians come in chunks of time steps; the products and scales carry across them."""
    cell, inputs, brute = _case(kind, 12, 30, 2, seed=12)
    whole = state_jacobian_norms(cell, inputs, ord=ord, log=True)
    per_step = 2 * cell.state_size**2 * 8  # bytes of one step's Jacobians, float64
    for steps in (1, 7):  # 7: chunks of uneven length, 30 = 4 * 7 + 2
        monkeypatch.setattr(jacobians, "_CHUNK_BYTES", 2 * steps * per_step)
        torch.testing.assert_close(
            state_jacobian_norms(cell, inputs, ord=ord, log=True), whole, rtol=0, atol=1e-12
        )
    torch.testing.assert_close(10**whole, brute[ord], rtol=1e-6, atol=0)


def test_the_subspace_halves_after_each_chunk_certified_at_once(monkeypatch):
    """Past the lags that need it, 4 carried vectors replace 8, then 2 replace 4, and the norms
    stay exact: W's powers (W symmetric, eigenvalues 0.9 * 0.7^i) soon have one dominant
    direction, and ||W^L||_2 = 0.9^L."""
    torch.manual_seed(3)
    q = torch.linalg.qr(torch.randn(12, 12)).Q
    cell = _linear_cell(q @ torch.diag(0.9 * 0.7 ** torch.arange(12.0)) @ q.T)
    inputs = torch.randn(40, 2, 2)
    widths = []
    certify = jacobians._certified_top_eigenvalue

    def recording(p, q, gq, tol):
        top, at_once = certify(p, q, gq, tol)
        widths.append((q.shape[1], at_once))
        return top, at_once

    monkeypatch.setattr(jacobians, "_certified_top_eigenvalue", recording)
    monkeypatch.setattr(jacobians, "_CHUNK_BYTES", 2 * 3 * 2 * cell.state_size**2 * 8)  # 3 steps
    logs = state_jacobian_norms(cell, inputs, log=True)
    first = next(i for i, (_, at_once) in enumerate(widths) if at_once)
    assert widths[first + 1] == (4, True)  # the chunk after a first at once: 4, at once too
    assert [w for w, _ in widths] == [8] * (first + 1) + [4] + [2] * (len(widths) - first - 2)
    assert first < len(widths) - 2  # some chunks ran with 2
    lags = torch.arange(40, -1, -1, dtype=torch.float64)
    torch.testing.assert_close(
        logs, (lags * math.log10(0.9))[:, None].expand(41, 2), rtol=0, atol=1e-10
    )


def test_the_subspace_returns_to_8_for_good_after_a_chunk_of_4_that_needed_more(monkeypatch):
    """A lag that 4 vectors do not certify at once (here: claimed so after the first chunk)
    brings back 8, orthonormal, for the rest; the norms stay exact."""
    cell, inputs, brute = _case("tanh", 12, 30, 2, seed=12)
    widths = []
    certify = jacobians._certified_top_eigenvalue

    def first_chunk_only(p, q, gq, tol):
        top, _ = certify(p, q, gq, tol)
        torch.testing.assert_close(q @ q.mT, torch.eye(q.shape[1]).expand_as(q @ q.mT))
        widths.append(q.shape[1])
        return top, len(widths) == 1

    monkeypatch.setattr(jacobians, "_certified_top_eigenvalue", first_chunk_only)
    monkeypatch.setattr(jacobians, "_CHUNK_BYTES", 2 * 3 * 2 * cell.state_size**2 * 8)  # 3 steps
    norms = state_jacobian_norms(cell, inputs, log=True)
    assert widths == [8, 4] + [8] * 8
    torch.testing.assert_close(10**norms, brute[2], rtol=1e-6, atol=0)


def test_each_chunk_too_few_brings_back_the_last_rows_set_aside(monkeypatch):
    """Shrunk 8 -> 4 -> 2 (certified at once, claimed so), a chunk of 2 that needed more brings
    back 4 and the next one 8, orthonormal each time, and no shrinking after; the norms stay
    exact."""
    cell, inputs, brute = _case("tanh", 12, 30, 2, seed=12)
    widths = []
    certify = jacobians._certified_top_eigenvalue

    def twice_at_once(p, q, gq, tol):
        top, _ = certify(p, q, gq, tol)
        torch.testing.assert_close(q @ q.mT, torch.eye(q.shape[1]).expand_as(q @ q.mT))
        widths.append(q.shape[1])
        return top, len(widths) <= 2 or len(widths) == 5

    monkeypatch.setattr(jacobians, "_certified_top_eigenvalue", twice_at_once)
    monkeypatch.setattr(jacobians, "_CHUNK_BYTES", 2 * 3 * 2 * cell.state_size**2 * 8)  # 3 steps
    norms = state_jacobian_norms(cell, inputs, log=True)
    assert widths == [8, 4, 2, 4, 8] + [8] * 5  # the fifth, at once, no longer shrinks it
    torch.testing.assert_close(10**norms, brute[2], rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_closed_form_2x2_rayleigh_ritz_is_eigh(dtype):
    """The 2x2 Rayleigh-Ritz in closed form against LAPACK's eigh: random symmetric matrices,
    both signs of b and of a - d, a diagonal one, a multiple of I and an exactly rank-1 one."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(200, 2, 5, generator=gen, dtype=dtype)
    special = torch.tensor(
        [[[3.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 3.0]], [[2.0, 0.0], [0.0, 2.0]],
         [[1.0, -2.0], [-2.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]], dtype=dtype,
    )  # fmt: skip
    m = torch.cat([a @ a.mT, special])
    theta, y = jacobians._ritz_pairs(m)
    expected, vectors = torch.linalg.eigh(m)
    eps = torch.finfo(dtype).eps
    scale = expected.abs().amax(-1, keepdim=True).clamp_min(1)
    assert ((theta - expected).abs() <= 8 * eps * scale).all()
    y = y.squeeze(1)
    torch.testing.assert_close(torch.linalg.vector_norm(y, dim=-1), torch.ones(len(m), dtype=dtype))
    residual = (m @ y[..., None]).squeeze(-1) - theta[:, -1:] * y
    assert (torch.linalg.vector_norm(residual, dim=-1) <= 8 * eps * scale.squeeze(-1)).all()
    gapped = (expected[:, 1] - expected[:, 0]) > 1e-3 * scale.squeeze(-1)
    alignment = (y * vectors[..., -1]).sum(-1).abs()  # the same vector, up to sign
    torch.testing.assert_close(alignment[gapped], torch.ones_like(alignment[gapped]))


@pytest.mark.parametrize("kind", ["tanh", "lstm"])
def test_float32_agrees_with_float64_brute_force(kind):
    """The certificate's tolerance scales with the dtype: float32 is right to float32 accuracy."""
    cell, inputs, brute = _case(kind, 12, 30, 2, seed=12)
    norms = state_jacobian_norms(copy.deepcopy(cell).float(), inputs.float(), log=True)
    assert norms.dtype == torch.float64
    torch.testing.assert_close(10**norms, brute[2], rtol=1e-5, atol=0)


def test_dead_relu_gives_exact_zeros_and_minus_infinity():
    cell = RNNCell(1, 5, nonlinearity="relu")
    with torch.no_grad():
        cell.weight_ih.fill_(1.0)
    inputs = torch.rand(12, 2, 1)
    inputs[6, 0] = -100.0  # sample 0: every unit dead at step 7, so ds_T/ds_t = 0 for t <= 6
    for ord in (2, "fro"):
        logs = state_jacobian_norms(cell, inputs, ord=ord, log=True)
        assert logs[:7, 0].eq(-math.inf).all() and logs[7:, 0].isfinite().all()
        assert logs[:, 1].isfinite().all()
        assert state_jacobian_norms(cell, inputs, ord=ord)[:7, 0].eq(0).all()
    assert lyapunov_exponents(cell, inputs)[0, 0] == -math.inf


def test_an_overflowed_relu_run_is_nan_not_a_dead_one():
    """States that overflow to inf, then NaN (inf - inf in W h): relu'(NaN) is no 0."""
    cell = RNNCell(1, 4, nonlinearity="relu").float()
    with torch.no_grad():
        cell.weight_hh.fill_(1e10)
        cell.weight_hh[:, 0] = -1e10  # every unit grows, then W h = inf - inf = NaN
        for w in (cell.weight_ih, cell.bias_ih, cell.bias_hh):
            w.fill_(1.0)
    inputs = torch.ones(12, 2, 1, dtype=torch.float32)
    states = cell.fast_scan(inputs, None)
    assert states[-1].isnan().all()
    for ord in (2, "fro"):
        logs = state_jacobian_norms(cell, inputs, ord=ord, log=True)
        assert logs[:-1].isnan().all() and logs[-1].isfinite().all()
        assert all(math.isnan(v) for v in memory_horizon(logs))
    assert lyapunov_exponents(cell, inputs).isnan().all()


def test_nan_weights_give_nan_norms_not_an_error():
    for cell in (RNNCell(2, 6), GRUCell(2, 6), LSTMCell(2, 6)):
        with torch.no_grad():
            cell.weight_hh[0, 0] = math.nan
        logs = state_jacobian_norms(cell, torch.randn(20, 3, 2), log=True)
        assert logs[:-2].isnan().all()


def test_one_step_can_shrink_below_float32_range():
    """W = 1e-30 Q: each step multiplies P by 1e-30, whose square underflows float32."""
    torch.manual_seed(5)
    q = torch.linalg.qr(torch.randn(4, 4)).Q
    cell = _linear_cell(1e-30 * q).float()
    logs = state_jacobian_norms(cell, torch.randn(6, 2, 2, dtype=torch.float32), log=True)
    lags = torch.arange(6, -1, -1, dtype=torch.float64)[:, None].expand(7, 2)
    torch.testing.assert_close(logs, -30 * lags, rtol=0, atol=1e-5)


@pytest.mark.parametrize("ord", [2, "fro"])
def test_one_step_can_shrink_below_the_smallest_normal_float32(ord):
    """J = a I with a = 1e-39, subnormal in float32: P's largest entry falls below tiny after
    one step yet is not 0. The norm is a^lag exactly (times sqrt(S) for Frobenius)."""
    a = torch.tensor(1e-39, dtype=torch.float32)
    cell = _linear_cell(a * torch.eye(4)).float()
    logs = state_jacobian_norms(cell, torch.randn(5, 2, 2, dtype=torch.float32), ord=ord, log=True)
    lags = torch.arange(5, -1, -1, dtype=torch.float64)[:, None].expand(6, 2)
    want = lags * math.log10(a.item()) + (0 if ord == 2 else 0.5 * math.log10(4))
    torch.testing.assert_close(logs, want, rtol=0, atol=1e-5)


def test_bad_ord_says_what_is_allowed():
    cell = RNNCell(2, 3)
    with pytest.raises(ValueError, match="ord must be 2 .* or 'fro'"):
        state_jacobian_norms(cell, torch.randn(4, 1, 2), ord=1)


@pytest.mark.parametrize("shape", [(0, 2, 2), (4, 0, 2), (4, 2)])
def test_inputs_without_a_step_or_a_sample_say_so(shape):
    """An empty batch would fail deep in the unroll, in torch's words about a reshape."""
    cell = RNNCell(2, 3)
    for measure in (state_jacobian_norms, lyapunov_exponents):
        with pytest.raises(ValueError, match=r"^inputs must have shape \(T, B, n\) with T, B >= 1"):
            measure(cell, torch.randn(shape))


def test_identity_product_has_no_dominant_direction():
    """A relu IRNN on positive inputs has J = I at every step: all singular values tie."""
    cell = RNNCell(2, 10, nonlinearity="relu", init="identity")
    with torch.no_grad():
        cell.weight_ih.abs_()  # every unit stays active
    inputs = torch.rand(20, 3, 2)
    logs = state_jacobian_norms(cell, inputs, log=True)
    torch.testing.assert_close(logs, torch.zeros(21, 3), rtol=0, atol=1e-12)
    fro = state_jacobian_norms(cell, inputs, ord="fro")
    torch.testing.assert_close(fro, torch.full((21, 3), math.sqrt(10)), rtol=1e-12, atol=0)


@pytest.mark.parametrize("ord", [2, "fro"])
def test_long_contracting_run_stays_finite_in_log(ord):
    """W_hh = 0.5 Q over 2000 steps: the norm reaches ~1e-602, far below float64's range."""
    torch.manual_seed(0)
    T = 2000
    cell = RNNCell(1, 4, bias=False, init="orthogonal", init_scale=0.5)
    inputs = 0.01 * torch.randn(T, 2, 1)
    logs = state_jacobian_norms(cell, inputs, ord=ord, log=True)
    assert logs.isfinite().all()
    # ||J_k||_2 <= 0.5 as tanh' <= 1 (Frobenius: sqrt(S) times that); tanh' ~ 1 for small inputs
    bound = T * math.log10(0.5) + (0 if ord == 2 else 0.5 * math.log10(4))
    assert (logs[0] <= bound + 1e-9).all()
    assert (logs[0] > bound - 1).all()
    assert (state_jacobian_norms(cell, inputs, ord=ord)[0] == 0).all()  # why log=True exists


# -- closed forms with linear cells -------------------------------------------------------


def test_scaled_orthogonal_linear_map():
    torch.manual_seed(1)
    a, S, T = 0.9, 5, 50
    q = torch.linalg.qr(torch.randn(S, S)).Q
    cell = _linear_cell(a * q)
    inputs = torch.randn(T, 3, 2)
    lags = torch.arange(T, -1, -1, dtype=torch.float64)[:, None].expand(T + 1, 3)
    norms = state_jacobian_norms(cell, inputs)
    torch.testing.assert_close(norms, a**lags, rtol=1e-10, atol=0)
    fro = state_jacobian_norms(cell, inputs, ord="fro", log=True)
    torch.testing.assert_close(fro, lags * math.log10(a) + 0.5 * math.log10(S), rtol=0, atol=1e-10)
    exponents = lyapunov_exponents(cell, inputs, k=S)
    torch.testing.assert_close(exponents, torch.full((3, S), math.log(a)), rtol=0, atol=1e-10)


def test_diagonal_linear_map_exponents_are_sorted_log_abs_entries():
    d = torch.tensor([0.5, -1.5, 0.2, 1.1, -0.05])
    cell = _linear_cell(torch.diag(d))
    inputs = torch.randn(300, 2, 2)
    expected = d.abs().log().sort(descending=True).values
    full = lyapunov_exponents(cell, inputs, k=5, warmup=100)
    torch.testing.assert_close(full, expected.expand(2, 5), rtol=0, atol=1e-10)
    leading = lyapunov_exponents(cell, inputs, k=2, warmup=100)  # needs a start off the axes
    torch.testing.assert_close(leading, expected[:2].expand(2, 2), rtol=0, atol=1e-10)
    # the spectral norm of diag(d)^L is max|d|^L
    logs = state_jacobian_norms(cell, inputs[:40], log=True)
    lags = torch.arange(40, -1, -1, dtype=torch.float64)
    torch.testing.assert_close(logs[:, 0], lags * math.log10(1.5), rtol=0, atol=1e-10)


def test_lyapunov_arguments():
    cell = RNNCell(2, 3)
    inputs = torch.randn(5, 1, 2)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, state_size=3\]"):
        lyapunov_exponents(cell, inputs, k=4)
    with pytest.raises(ValueError, match="warmup must be"):
        lyapunov_exponents(cell, inputs, warmup=5)
    assert lyapunov_exponents(LSTMCell(2, 3), inputs, k=6).shape == (1, 6)


@pytest.mark.parametrize("make", [LSTMCell, GRUCell, RNNCell])
def test_the_leading_exponents_do_not_depend_on_how_many_are_asked_for(make):
    """Q's first j columns evolve on their own, and their start is the same for every k, so on
    a short run (where the estimate still depends on the start) exponent 1 is the same for any
    k, and exponents 1..2 the same for k = 2 and 4. State sizes 16, 20 and 5: torch draws a
    (k, S) normal sample's first row differently for each k unless S is a multiple of 16."""
    torch.manual_seed(14)
    cell, inputs = make(3, {LSTMCell: 8, GRUCell: 20, RNNCell: 5}[make]), torch.randn(20, 6, 3)
    runs = {k: lyapunov_exponents(cell, inputs, k=k, warmup=5) for k in (1, 2, 4)}
    torch.testing.assert_close(runs[2][:, :1], runs[1], rtol=1e-12, atol=0)
    torch.testing.assert_close(runs[4][:, :2], runs[2], rtol=1e-12, atol=0)


@pytest.mark.parametrize("kind", list(CELLS))
def test_a_wrong_start_state_is_refused_not_broadcast(kind):
    cell, inputs, _ = _case(kind, 3, 5, 2, seed=1)
    S = cell.state_size
    for state in (3, torch.zeros(S), torch.zeros(2, S + 1)):  # 3: k or ord passed positionally
        for run in (cell.scan, cell.fast_scan, state_jacobian_norms, lyapunov_exponents):
            args = (inputs, state) if run in (cell.scan, cell.fast_scan) else (cell, inputs, state)
            with pytest.raises(ValueError, match=r"state must be s_0 of shape \(B, S\)"):
                run(*args)
    s0 = torch.randn(2, S, dtype=inputs.dtype)  # the right shape is taken as given
    torch.testing.assert_close(cell.fast_scan(inputs, s0)[0], s0, rtol=0, atol=0)


def test_leading_exponent_is_the_decay_rate_of_the_norms():
    """Both estimate lim (1/L) log ||ds_T/ds_{T-L}||, one forward by QR, one by a fit over lags.

    They differ by finite-length effects: log ||P|| and the QR sum differ by an O(1) alignment
    term, which a least-squares slope over 300 lags turns into ~1/300 = 0.003 log10 per step.
    Over 10 seeds at init scales 0.8, 1.0 and 1.2 the difference was at most 0.004 (0.003 at
    1.0); 0.006 leaves room, and still sees a 17% error in the exponent (the QR sum divided by
    T rather than by the T - warmup steps it averages).
    """
    torch.manual_seed(0)
    cell = RNNCell(2, 16, init="orthogonal", init_scale=1.0)
    inputs = torch.randn(300, 8, 2)
    leading = lyapunov_exponents(cell, inputs, k=1, warmup=50)[:, 0].median() / math.log(10)
    decay_rate, _ = memory_horizon(state_jacobian_norms(cell, inputs, log=True))
    assert leading < -0.01  # a real decay, so the comparison means something
    assert decay_rate == pytest.approx(leading.item(), abs=0.006)


# -- gradients ----------------------------------------------------------------------------


def _reference_state_grads(model, task, inputs, targets):
    """dL/ds_t by retain_grad on the states of a separate unroll (populates .grad)."""
    cell = model.cell
    s = cell.initial_state(inputs[0]).requires_grad_()
    states = [s]
    for x in inputs:
        s = cell.step(x, s)
        s.retain_grad()
        states.append(s)
    outputs = model.readout(cell.hidden(torch.stack(states[1:]))[task.output_steps])
    task.loss(outputs, targets).backward()
    return torch.stack([s.grad for s in states])


@pytest.mark.parametrize("kind", ["tanh", "gru", "lstm"])
def test_gradient_norms_match_retain_grad_on_the_copy_task(kind):
    torch.manual_seed(2)
    task = CopyTask(seq_len=5)
    inputs, targets = task.sample(4, torch.Generator().manual_seed(0))
    model = SequenceModel(CELLS[kind](task.input_size, 6), task.output_size)
    inputs = inputs.double()
    norms = gradient_norms(model, task, inputs, targets)
    assert all(p.grad is None for p in model.parameters())
    expected = _reference_state_grads(model, task, inputs, targets).norm(dim=-1)
    assert norms.shape == (inputs.shape[0] + 1, 4)
    torch.testing.assert_close(norms, expected, rtol=1e-10, atol=1e-14)
    assert (norms > 0).all()  # every step is scored, so s_T too has a gradient


def test_gradient_norms_of_tiny_float32_gradients_are_not_flushed_to_zero():
    """Gradients of 1e-30 are non-zero in float32 training; a float32 norm would say 0."""
    torch.manual_seed(2)
    task = CopyTask(seq_len=5)
    inputs, targets = task.sample(4, torch.Generator().manual_seed(0))
    model = SequenceModel(RNNCell(task.input_size, 6), task.output_size).float()
    with torch.no_grad():
        model.readout.weight.mul_(1e-30)
    norms = gradient_norms(model, task, inputs.float(), targets)
    expected = _reference_state_grads(model, task, inputs.float(), targets).double().norm(dim=-1)
    assert norms.dtype == torch.float64 and (expected[1:] < 1e-25).all()
    torch.testing.assert_close(norms, expected, rtol=1e-6, atol=0)


def test_gradient_of_a_last_step_loss_is_the_jacobian_product():
    """With only s_T scored, dL/ds_t = dL/ds_T ds_T/ds_t: the two modules agree."""
    torch.manual_seed(3)
    task = AddingTask(seq_len=10)
    inputs, targets = task.sample(3, torch.Generator().manual_seed(1))
    inputs, targets = inputs.double(), targets.double()
    model = SequenceModel(LSTMCell(2, 4), 1)
    norms = gradient_norms(model, task, inputs, targets)
    outputs, states = model(inputs, output_steps=task.output_steps, return_states=True)
    g_T = torch.autograd.grad(task.loss(outputs, targets), states)[0][-1]  # s_T: no future
    torch.testing.assert_close(norms[-1], g_T.norm(dim=-1))
    jac_norms = state_jacobian_norms(model.cell, inputs)
    assert (norms <= norms[-1] * jac_norms * (1 + 1e-9)).all()  # ||g P|| <= ||g|| ||P||_2
    g, cell = g_T, model.cell
    for t in range(inputs.shape[0] - 1, -1, -1):  # g_t = g_{t+1} J_{t+1}
        g = (g.unsqueeze(1) @ cell.state_jacobian(inputs[t], states[t].detach())).squeeze(1)
        torch.testing.assert_close(norms[t], g.norm(dim=-1))


def test_unscored_last_state_gets_a_zero_gradient_and_any_cell_works():
    class AllButLast:
        output_steps = slice(None, -1)

        def loss(self, outputs, targets):
            return nn.functional.mse_loss(outputs, targets)

    torch.manual_seed(4)
    model = SequenceModel(_linear_cell(0.5 * torch.eye(3)), 2)
    inputs = torch.randn(6, 2, 2)
    norms = gradient_norms(model, AllButLast(), inputs, torch.randn(5, 2, 2))
    assert (norms[-1] == 0).all() and (norms[:-1] > 0).all()


# -- memory horizon -----------------------------------------------------------------------


def _synthetic(rate, T, spread=(-0.5, 0.0, 0.5)):
    """log10 norms (T+1, B): median rate * lag, samples spread symmetrically around it."""
    lags = torch.arange(T, -1, -1, dtype=torch.float64)[:, None]
    return rate * lags + torch.tensor(spread)


def test_memory_horizon_slope_and_crossing():
    logs = _synthetic(-0.125, 50)
    decay_rate, horizon = memory_horizon(logs, threshold=1e-3)
    assert decay_rate == pytest.approx(-0.125, abs=1e-12)
    assert horizon == 25.0  # the median is -3 at lag 24, not below 1e-3 until lag 25
    assert memory_horizon(logs, threshold=1e-7) == (pytest.approx(-0.125), 50.0)  # never: T


@pytest.mark.parametrize(
    "logs, threshold, message",
    [
        (torch.zeros(0, 3), 1e-3, r"shape \(T\+1, B\), T >= 0, B >= 1, got \(0, 3\)"),
        (torch.zeros(4, 0), 1e-3, r"got \(4, 0\)"),
        (torch.zeros(4), 1e-3, r"got \(4,\)"),
        (torch.zeros(4, 2), math.inf, "threshold must be a finite number > 0, got inf"),
        (torch.zeros(4, 2), 0.0, "threshold must be a finite number > 0, got 0.0"),
    ],
)
def test_memory_horizon_arguments(logs, threshold, message):
    with pytest.raises(ValueError, match=message):
        memory_horizon(logs, threshold)


def test_memory_horizon_handles_minus_infinity_and_even_batches():
    logs = _synthetic(-0.125, 40, spread=(-1.0, -0.5, 0.5, 1.0))  # median of 4: middle mean
    logs[:5, 0] = -math.inf  # one dead sample at the longest lags: the median is unaffected
    assert memory_horizon(logs) == (pytest.approx(-0.125, abs=1e-12), 25.0)
    logs[:5, :3] = -math.inf  # now the median itself is -inf there: left out of the fit
    decay_rate, horizon = memory_horizon(logs, threshold=1e-6)
    assert decay_rate == pytest.approx(-0.125, abs=1e-12)
    assert horizon == 36.0  # -inf counts as below the threshold
    rows = torch.full((4, 2), -math.inf)
    rows[-1] = 0.0
    rate, horizon = memory_horizon(rows)
    assert math.isnan(rate) and horizon == 1.0


def test_memory_horizon_of_an_overflowed_sample_is_nan_not_full_memory():
    logs = _synthetic(-0.01, 40)
    logs[:10, 1] = math.nan  # one sample NaN at the longest lags: the median is NaN there
    rate, horizon = memory_horizon(logs)
    assert math.isnan(rate) and math.isnan(horizon)
    logs = _synthetic(-0.125, 40)
    logs[:10, 1] = math.nan  # NaN only past the crossing at lag 25: the horizon stands
    rate, horizon = memory_horizon(logs)
    assert math.isnan(rate) and horizon == 25.0


@pytest.mark.parametrize("kind", ["tanh", "gru", "lstm"])
def test_all_exponents_sum_to_the_mean_log_determinant(kind):
    """With k = S and no warm-up, Benettin's sum of log|R_ii| telescopes to the mean of
    log|det J_t| over the run: a closed form for nonlinear cells too, J_t by autograd at each
    state of the reference unroll."""
    torch.manual_seed(7)
    cell = CELLS[kind](2, 3)
    inputs = torch.randn(10, 2, 2)
    S = cell.state_size
    states = cell.scan(inputs).detach()  # (T+1, B, S)
    logdets = torch.stack(
        [
            torch.stack(
                [
                    torch.linalg.slogdet(
                        torch.autograd.functional.jacobian(
                            lambda s, x=inputs[t, b]: cell.step(x[None], s[None])[0],
                            states[t, b],
                        )
                    ).logabsdet
                    for b in range(inputs.shape[1])
                ]
            )
            for t in range(inputs.shape[0])
        ]
    )
    exponents = lyapunov_exponents(cell, inputs, k=S)
    torch.testing.assert_close(exponents.sum(-1), logdets.mean(0), rtol=1e-10, atol=1e-12)


def test_norms_come_in_the_inputs_dtype():
    """log=False: float32 in, float32 out (the other tests run in float64)."""
    cell, inputs, brute = _case("tanh", 3, 12, 3, seed=0)
    norms = state_jacobian_norms(copy.deepcopy(cell).float(), inputs.float())
    assert norms.dtype == torch.float32
    torch.testing.assert_close(norms.double(), brute[2], rtol=1e-5, atol=0)


def test_no_gap_is_claimed_between_two_equal_eigenvalues():
    """G = diag(1, 1, 0) with q spanning both leading eigenvectors: theta = (1, 1), and lambda_2
    = 1 is bounded by tr G - theta_1 = 1, never by tr G - theta_1 - theta_2 = 0, which would
    claim a gap (theta_1 > eta) that does not exist."""
    g = torch.diag(torch.tensor([1.0, 1.0, 0.0]))[None]
    q = torch.eye(3)[:2][None]
    trace = torch.tensor([2.0])
    _, _, gap = jacobians._ritz_certificate(q, q @ g, trace, None, tol=1e-12)
    assert not gap.item()


def test_check_jacobian_holds_a_cells_own_closed_form_to_autograd():
    """Right closed forms pass; a wrong one, one inherited from a parent whose equations the
    subclass changed, and a factored product that disagrees with J are refused by name."""
    for cell in (LeakyRNNCell(2, 5), AutogradLeakyRNNCell(2, 5), _linear_cell(torch.randn(4, 4))):
        check_jacobian(cell)

    class Off(LeakyRNNCell):
        def _jacobian(self, x, h):
            return super()._jacobian(x, h) * (1 + 1e-6)

    class TwiceTheProduct(LeakyRNNCell):
        def left_jacobian_product(self, p, factors, out=None):
            return 2 * super().left_jacobian_product(p, factors, out)

    with pytest.raises(ValueError, match=r"^Off\._jacobian disagrees .* error 1e-06 .* delete"):
        check_jacobian(Off(2, 5))
    with pytest.raises(ValueError, match=r"HalfStepRNNCell\._jacobian .* it is RNNCell's"):
        check_jacobian(HalfStepRNNCell(2, 5))

    class TwiceTheJvp(LeakyRNNCell):  # the Lyapunov exponents' product
        def jacobian_vector_product(self, input, state, v):
            return 2 * super().jacobian_vector_product(input, state, v)

    with pytest.raises(ValueError, match=r"^TwiceTheProduct\.left_jacobian_product disagrees"):
        check_jacobian(TwiceTheProduct(2, 5))
    with pytest.raises(ValueError, match=r"^TwiceTheJvp\.jacobian_vector_product disagrees"):
        check_jacobian(TwiceTheJvp(2, 5))
    check_jacobian(RNNCell(2, 5))  # the built-in cells are the tests' to check, not start-up's


def test_the_library_checks_a_closed_form_on_first_use_too(monkeypatch):
    """Not only the trainer: a notebook's state_jacobian_norms or lyapunov_exponents on a cell
    with a wrong `_jacobian` fails, where it would report wrong numbers; a right one passes and
    is checked (against autograd's J) once per cell object."""
    inputs = torch.randn(6, 3, 2)
    for measure in (state_jacobian_norms, lyapunov_exponents):
        with pytest.raises(ValueError, match=r"HalfStepRNNCell\._jacobian disagrees"):
            measure(HalfStepRNNCell(2, 5), inputs)
    checks, autograd = [], RecurrentCell._jacobian
    monkeypatch.setattr(
        RecurrentCell, "_jacobian", lambda c, x, s: checks.append(c) or autograd(c, x, s)
    )
    cell = LeakyRNNCell(2, 5)
    state_jacobian_norms(cell, inputs)
    state_jacobian_norms(cell, inputs, ord="fro")
    lyapunov_exponents(cell, inputs)
    assert len(checks) == 1
    state_jacobian_norms(LeakyRNNCell(2, 5), inputs)
    assert len(checks) == 2


def _step_of_one(cell, x, s):
    return cell.step(x[None], s[None])[0]


def test_autograds_jacobian_of_a_step_that_vmap_cannot_batch():
    """Python control flow on a value (here: which of two equations, by the state's sign)
    cannot be vmapped; the default `_jacobian` then goes sample by sample, and is still J."""

    class Switching(AutogradLeakyRNNCell):
        def _forward(self, x, h):
            if h.sum() > 0:
                return super()._forward(x, h)
            return torch.tanh(self._linear(x, h)[1])

    torch.manual_seed(15)
    cell = Switching(2, 4)
    x, s = torch.randn(6, 2), torch.randn(6, 4)
    expected = torch.stack(
        [
            torch.autograd.functional.jacobian(functools.partial(_step_of_one, cell, x1), s1)
            for x1, s1 in zip(x, s, strict=True)
        ]
    )
    torch.testing.assert_close(cell.state_jacobian(x, s), expected, rtol=1e-12, atol=1e-12)
