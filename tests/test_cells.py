"""Cells against torch's own cells, autograd, and hand-computed numbers (float64 throughout)."""

import math
import zlib

import numpy as np
import pytest
import torch
from torch import nn

from rnnexp.cells import GRUCell, LSTMCell, RecurrentCell, RNNCell, builtin_equations
from rnnexp.jacobians import check_jacobian

pytestmark = pytest.mark.usefixtures("float64_default")

SHAPES = [(1, 1), (3, 5), (7, 2)]  # (input_size, hidden_size)
BATCHES = [None, 1, 4]  # None: unbatched 1-D input


def _paired(kind, n, m, bias=True):
    """(ours, torch's) computing the same function."""
    if kind in ("tanh", "relu"):
        ref = nn.RNNCell(n, m, bias=bias, nonlinearity=kind)
        ours = RNNCell(n, m, bias=bias, nonlinearity=kind)
        ours.load_state_dict(ref.state_dict())
    elif kind == "lstm":
        ref = nn.LSTMCell(n, m, bias=bias)
        ours = LSTMCell(n, m, bias=bias)
        ours.load_state_dict(ref.state_dict())
    else:
        ref = nn.GRUCell(n, m, bias=bias)
        ours = GRUCell.from_torch(ref)
    return ours, ref


def _random_state(kind, batch, m, scale=1.0):
    shape = (m,) if batch is None else (batch, m)
    if kind == "lstm":
        return torch.randn(shape) * scale, torch.randn(shape) * scale
    return torch.randn(shape) * scale


def _unroll(cell, xs, state):
    outs = []
    for x in xs:
        state = cell(x, state)
        outs.append(torch.cat(state, -1) if isinstance(state, tuple) else state)
    return torch.stack(outs)


@pytest.mark.parametrize("kind", ["tanh", "relu", "gru", "lstm"])
@pytest.mark.parametrize("n,m", SHAPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("bias", [True, False])
def test_forward_and_gradients_match_torch(kind, n, m, batch, bias):
    torch.manual_seed(zlib.crc32(repr((kind, n, m, batch, bias)).encode()))  # str hash: salted
    ours, ref = _paired(kind, n, m, bias)
    steps = 6
    xs = torch.randn((steps, n) if batch is None else (steps, batch, n), requires_grad=True)
    state = _random_state(kind, batch, m)
    out_ours = _unroll(ours, xs, state)
    out_ref = _unroll(ref, xs, state)
    assert out_ours.shape == out_ref.shape
    torch.testing.assert_close(out_ours, out_ref, rtol=1e-12, atol=1e-12)

    weights = torch.randn_like(out_ref)
    grads_ours = torch.autograd.grad((out_ours * weights).sum(), [xs, *ours.parameters()])
    grads_ref = torch.autograd.grad((out_ref * weights).sum(), [xs, *ref.parameters()])
    if kind == "gru":  # our update gate is torch's negated, and so are its gradients
        grads_ref = [grads_ref[0]] + [_flip_rows(g, m) for g in grads_ref[1:]]
    for g_ours, g_ref in zip(grads_ours, grads_ref, strict=True):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)


def _flip_rows(t, m):
    t = t.clone()
    t[m : 2 * m] *= -1
    return t


@pytest.mark.parametrize("kind", ["tanh", "gru", "lstm"])
def test_default_state_is_zero(kind):
    ours, ref = _paired(kind, 3, 4)
    x = torch.randn(2, 3)
    a, b = ours(x), ref(x)
    torch.testing.assert_close(
        torch.cat(a, -1) if kind == "lstm" else a, torch.cat(b, -1) if kind == "lstm" else b
    )


CONVERTIBLE = [(RNNCell, {"nonlinearity": "relu"}), (GRUCell, {}), (LSTMCell, {})]


@pytest.mark.parametrize("cls, options", CONVERTIBLE)
def test_conversion_round_trip_is_exact(cls, options):
    torch.manual_seed(0)
    ours = cls(3, 4, **options)
    back = cls.from_torch(ours.to_torch())
    assert back.extra_repr() == ours.extra_repr()
    for (name, p), q in zip(ours.named_parameters(), back.parameters(), strict=True):
        assert torch.equal(p, q), name
    x, h = torch.randn(2, 3), _random_state("lstm" if cls is LSTMCell else "rnn", 2, 4)
    torch.testing.assert_close(ours.to_torch()(x, h), ours(x, h), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("cls, options", CONVERTIBLE)
def test_conversion_keeps_the_cells_dtype(cls, options):
    """A float64 cell converts to a float64 one, both ways, under torch's float32 default (the
    module's other tests run with float64 as the default, where a lost dtype would not show)."""
    torch.set_default_dtype(torch.float32)  # the fixture restores what it found
    torch.manual_seed(3)
    ref = cls._torch_cell(2, 3, **options).double()
    ours = cls.from_torch(ref)
    back = ours.to_torch()
    assert ours.weight_hh.dtype == back.weight_hh.dtype == torch.float64
    x = torch.randn(4, 2, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(back(x), ref(x), rtol=1e-14, atol=1e-14)


def test_conversion_refuses_another_kind_of_cell():
    with pytest.raises(TypeError, match=r"^RNNCell.from_torch takes a torch.nn.RNNCell, got GRU"):
        RNNCell.from_torch(nn.GRUCell(2, 3))


def test_gru_load_state_dict_keeps_our_convention():
    torch.manual_seed(1)
    ref = nn.GRUCell(2, 3)
    ours = GRUCell(2, 3)
    ours.load_state_dict(ref.state_dict())
    x, h = torch.randn(4, 2), torch.randn(4, 3)
    z = torch.sigmoid(
        x @ ref.weight_ih[3:6].t()
        + ref.bias_ih[3:6]
        + h @ ref.weight_hh[3:6].t()
        + ref.bias_hh[3:6]
    )
    r = torch.sigmoid(
        x @ ref.weight_ih[:3].t() + ref.bias_ih[:3] + h @ ref.weight_hh[:3].t() + ref.bias_hh[:3]
    )
    n = torch.tanh(
        x @ ref.weight_ih[6:].t()
        + ref.bias_ih[6:]
        + r * (h @ ref.weight_hh[6:].t() + ref.bias_hh[6:])
    )
    torch.testing.assert_close(ours(x, h), (1 - z) * h + z * n)
    assert not torch.allclose(ours(x, h), ref(x, h))


CELLS = {
    "tanh": lambda n, m: RNNCell(n, m, nonlinearity="tanh"),
    "relu": lambda n, m: RNNCell(n, m, nonlinearity="relu"),
    "gru": lambda n, m: GRUCell(n, m),
    "lstm": lambda n, m: LSTMCell(n, m),
}


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("scale", [0.5, 8.0], ids=["moderate", "saturated"])
def test_state_jacobian_matches_autograd(kind, scale):
    torch.manual_seed(2)
    n, m, batch = 3, 5, 4
    cell = CELLS[kind](n, m)
    with torch.no_grad():  # large weights drive the gates and tanh into saturation
        for p in cell.parameters():
            p.mul_(scale)
    x = torch.randn(batch, n)
    s = torch.randn(batch, cell.state_size) * scale
    expected = torch.func.vmap(torch.func.jacrev(cell.step, argnums=1))(x, s)
    actual = cell.state_jacobian(x, s)
    assert actual.shape == (batch, cell.state_size, cell.state_size)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)
    if scale > 1:  # the saturated case really is saturated: some derivatives are ~0
        assert (actual.abs() < 1e-6).float().mean() > 0.05


def test_lstm_jacobian_takes_the_tuple_state_and_unbatched_input():
    torch.manual_seed(3)
    cell = LSTMCell(2, 3)
    x, h, c = torch.randn(2), torch.randn(3), torch.randn(3)
    jac = cell.state_jacobian(x, (h, c))
    assert jac.shape == (6, 6)
    expected = torch.func.jacrev(lambda s: cell.step(x, s))(torch.cat([h, c]))
    torch.testing.assert_close(jac, expected)


# -- initialisation -------------------------------------------------------------------------


@pytest.mark.parametrize("cell_cls", [RNNCell, GRUCell, LSTMCell])
def test_default_init_is_torchs_uniform(cell_cls):
    """torch's own draw, parameter for parameter: the same seed gives the same weights."""
    torch.manual_seed(4)
    cell = cell_cls(8, 64)
    torch.manual_seed(4)
    reference = cell_cls._torch_cell(8, 64)
    for name, p in reference.named_parameters():
        assert torch.equal(getattr(cell, name), p), name


@pytest.mark.parametrize("cell_cls", [RNNCell, GRUCell, LSTMCell])
def test_init_scale_is_the_gain_of_the_default_recurrent_weights(cell_cls):
    cells = []
    for scale in (1.0, 2.5):
        torch.manual_seed(6)
        cells.append(cell_cls(3, 8, init_scale=scale))
    plain, scaled = (dict(c.named_parameters()) for c in cells)
    for name, p in plain.items():
        expected = 2.5 * p if name == "weight_hh" else p
        torch.testing.assert_close(scaled[name], expected, rtol=0, atol=0)


@pytest.mark.parametrize("cell_cls", [RNNCell, GRUCell, LSTMCell])
def test_orthogonal_init_makes_each_gate_block_orthogonal(cell_cls):
    torch.manual_seed(5)
    m = 16
    cell = cell_cls(3, m, init="orthogonal", init_scale=0.9)
    for block in cell.weight_hh.detach().split(m):
        torch.testing.assert_close(block @ block.t(), 0.81 * torch.eye(m), atol=1e-6, rtol=0)
    singular = torch.linalg.svdvals(cell.weight_hh.detach()[:m])
    torch.testing.assert_close(singular, torch.full((m,), 0.9), atol=1e-6, rtol=0)


def test_identity_init_is_the_scaled_identity_with_zero_biases():
    cell = RNNCell(2, 6, nonlinearity="relu", init="identity", init_scale=0.5)
    assert torch.equal(cell.weight_hh.detach(), 0.5 * torch.eye(6))
    assert not cell.bias_ih.any() and not cell.bias_hh.any()
    # so a relu IRNN with zero input carries a positive state unchanged but for the scale
    h = torch.rand(6)
    torch.testing.assert_close(cell(torch.zeros(2), h), 0.5 * h)


def test_lstm_constant_forget_bias():
    cell = LSTMCell(2, 5, forget_bias=1.0)
    total = (cell.bias_ih + cell.bias_hh).detach()
    assert torch.equal(total[5:10], torch.ones(5))


def test_lstm_chrono_init_ranges():
    torch.manual_seed(6)
    t_max = 100
    cell = LSTMCell(2, 500, chrono_max_len=t_max)
    total = (cell.bias_ih + cell.bias_hh).detach()
    forget, input_gate = total[500:1000], total[:500]
    assert forget.min() >= 0 and forget.max() <= math.log(t_max - 1)
    # the whole range is used: exp(b_f) is U(1, T_max - 1), so of 500 draws some land in its
    # lowest and its highest 5% (each missed with probability 0.95^500 = 7e-12)
    assert forget.exp().min() < 1 + 0.05 * (t_max - 2)
    assert forget.exp().max() > t_max - 1 - 0.05 * (t_max - 2)
    torch.testing.assert_close(input_gate, -forget)
    # the characteristic forgetting times 1/(1 - sigma(b_f)) then span about 2 .. T_max
    times = 1 / (1 - torch.sigmoid(forget))
    assert times.min() >= 2 - 1e-9 and times.max() <= t_max


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: RNNCell(2, 0), "hidden_size must be an integer >= 1, got 0"),
        (lambda: RNNCell(2, 3, nonlinearity="gelu"), "nonlinearity must be one of tanh, relu"),
        (lambda: GRUCell(2, 3, init="xavier"), "init must be one of default, orthogonal"),
        (lambda: LSTMCell(2, 3, forget_bias=1.0, chrono_max_len=10), "exclusive"),
        (lambda: LSTMCell(2, 3, chrono_max_len=1), "chrono_max_len must be an integer >= 3"),
        (lambda: LSTMCell(2, 3, forget_bias=-math.inf), "forget_bias must be null or a finite"),
        (lambda: RNNCell(2, 3.0), r"hidden_size must be an integer >= 1, got 3.0"),
        (lambda: RNNCell(3, 4)(torch.randn(3, 3), torch.randn(1, 4)), r"shape \(3, 4\) for input"),
        (lambda: RNNCell(3, 4)(torch.randn(3), torch.randn(2, 4)), r"shape \(4,\) .* got \(2, 4\)"),
        (
            lambda: LSTMCell(3, 4)(torch.randn(2, 3), torch.randn(2, 8)),
            r"shape \(\(2, 4\), \(2, 4\)\) for input of shape \(2, 3\), got \(2, 8\)",
        ),
        (lambda: RNNCell(3, 4).state_jacobian(torch.randn(2, 3), torch.randn(1, 4)), "(flat)"),
        (
            lambda: RNNCell(3, 4).fast_scan(torch.randn(5, 2, 3), torch.randn(2, 4).float()),
            "state must have the inputs' dtype torch.float64, got torch.float32",
        ),
    ],
)
def test_bad_arguments_say_what_is_allowed(make, message):
    """Including a state that torch's cells refuse and ours would silently broadcast."""
    with pytest.raises(ValueError, match=message):
        make()


def test_numpy_integers_are_integers():
    """As torch's cells take them: a sweep over np.arange(...) should not fail on its type."""
    cell = LSTMCell(np.int64(3), np.int32(4), chrono_max_len=np.int64(10))
    assert (cell.input_size, cell.hidden_size, cell.chrono_max_len) == (3, 4, 10)
    assert type(cell.hidden_size) is int
    assert "chrono_max_len=10" in repr(cell) and "init_scale=2.0" in repr(
        RNNCell(2, 3, init_scale=2.0)
    )


# -- worked examples: one unit, weights by hand, inputs 1..5 --------------------------------

INPUTS = [1.0, 2.0, 3.0, 4.0, 5.0]


def _one_unit(cell, **params):
    with torch.no_grad():
        for name, values in params.items():
            getattr(cell, name).copy_(torch.tensor(values).view_as(getattr(cell, name)))
    xs = torch.tensor(INPUTS).view(5, 1, 1)
    states = cell.scan(xs)
    jacobians = [cell.state_jacobian(xs[t], states[t]).squeeze().tolist() for t in range(5)]
    return states[1:, 0, 0].tolist(), jacobians


def sig(a):
    return 1 / (1 + math.exp(-a))


def test_worked_example_tanh_rnn():
    cell = RNNCell(1, 1)
    hs, jacs = _one_unit(cell, weight_ih=[0.5], weight_hh=[0.8], bias_ih=[0.1], bias_hh=[-0.2])
    h, expected, expected_jac = 0.0, [], []
    for x in INPUTS:
        h = math.tanh(0.5 * x + 0.8 * h - 0.1)
        expected.append(h)
        expected_jac.append((1 - h * h) * 0.8)
    assert expected[0] == pytest.approx(math.tanh(0.4))  # 0.379949
    assert hs == pytest.approx(expected, abs=1e-12)
    assert jacs == pytest.approx(expected_jac, abs=1e-12)


def test_worked_example_relu_rnn():
    cell = RNNCell(1, 1, nonlinearity="relu")
    hs, jacs = _one_unit(cell, weight_ih=[-0.5], weight_hh=[1.1], bias_ih=[1.0], bias_hh=[0.0])
    # h1 = relu(-0.5 + 1) = 0.5; h2 = relu(-1 + 0.55 + 1) = 0.55; h3 = relu(-1.5 + 0.605 + 1)
    expected = [0.5, 0.55, 0.105, 0.0, 0.0]
    # h4: -2 + 0.1155 + 1 < 0, h5: -2.5 + 0 + 1 < 0; slopes 1.1 while active, then 0
    assert hs == pytest.approx(expected, abs=1e-12)
    assert jacs == pytest.approx([1.1, 1.1, 1.1, 0.0, 0.0], abs=1e-12)


def test_worked_example_gru():
    cell = GRUCell(1, 1)
    hs, jacs = _one_unit(
        cell,
        weight_ih=[0.3, -0.2, 0.5],  # r, z, n
        weight_hh=[0.4, 0.6, -0.7],
        bias_ih=[0.0, 0.1, 0.0],
        bias_hh=[0.1, 0.0, 0.2],
    )
    h, expected, expected_jac = 0.0, [], []
    for x in INPUTS:
        r = sig(0.3 * x + 0.4 * h + 0.1)
        z = sig(-0.2 * x + 0.6 * h + 0.1)
        q = -0.7 * h + 0.2
        n = math.tanh(0.5 * x + r * q)
        dn = (1 - n * n) * (r * -0.7 + q * r * (1 - r) * 0.4)
        expected_jac.append((1 - z) + (n - h) * z * (1 - z) * 0.6 + z * dn)
        h = (1 - z) * h + z * n
        expected.append(h)
    assert hs == pytest.approx(expected, abs=1e-12)
    assert jacs == pytest.approx(expected_jac, abs=1e-12)


def test_worked_example_lstm():
    cell = LSTMCell(1, 1)
    hs, jacs = _one_unit(
        cell,
        weight_ih=[0.2, -0.1, 0.4, 0.3],  # i, f, g, o
        weight_hh=[0.5, 0.6, -0.3, 0.2],
        bias_ih=[0.0, 1.0, 0.0, 0.0],
        bias_hh=[0.1, 0.0, -0.1, 0.2],
    )
    h = c = 0.0
    expected, expected_jac = [], []
    for x in INPUTS:
        i = sig(0.2 * x + 0.5 * h + 0.1)
        f = sig(-0.1 * x + 0.6 * h + 1.0)
        g = math.tanh(0.4 * x - 0.3 * h - 0.1)
        o = sig(0.3 * x + 0.2 * h + 0.2)
        c_new = f * c + i * g
        k = o * (1 - math.tanh(c_new) ** 2)
        dc_dh = g * i * (1 - i) * 0.5 + c * f * (1 - f) * 0.6 + i * (1 - g * g) * -0.3
        dh_dh = k * dc_dh + math.tanh(c_new) * o * (1 - o) * 0.2
        expected_jac.append([[dh_dh, k * f], [dc_dh, f]])
        h, c = o * math.tanh(c_new), c_new
        expected.append(h)
    assert hs == pytest.approx(expected, abs=1e-12)
    for got, want in zip(jacs, expected_jac, strict=True):
        assert got[0] == pytest.approx(want[0], abs=1e-12)
        assert got[1] == pytest.approx(want[1], abs=1e-12)


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("bias", [True, False])
def test_jacobian_vector_product_applies_the_same_jacobian(kind, bias):
    torch.manual_seed(9)
    n, m, batch, k = 3, 5, 4, 3
    cell, _ = _paired(kind, n, m, bias)
    x, s = torch.randn(batch, n), torch.randn(batch, cell.state_size)
    v = torch.randn(batch, cell.state_size, k)
    expected = cell.state_jacobian(x, s) @ v
    torch.testing.assert_close(cell.jacobian_vector_product(x, s, v), expected)


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("bias", [True, False])
def test_left_jacobian_product_applies_the_same_jacobian(kind, bias):
    """The factored form the snapshots multiply by (the LSTM's: its h-columns and two
    diagonals), into a fresh tensor and into `out`, and with autograd on."""
    torch.manual_seed(11)
    n, m, batch = 3, 5, 4
    cell, _ = _paired(kind, n, m, bias)
    x, s = torch.randn(batch, n), torch.randn(batch, cell.state_size)
    p = torch.randn(batch, 2, cell.state_size)
    expected = p @ cell.state_jacobian(x, s)
    factors = cell.jacobian_factors(x, s)
    torch.testing.assert_close(cell.left_jacobian_product(p, factors), expected)
    as_forward_takes_it = cell.jacobian_factors(x, cell.unflatten_state(s))  # (h, c): LSTM
    torch.testing.assert_close(cell.left_jacobian_product(p, as_forward_takes_it), expected)
    with torch.no_grad():
        out = torch.empty_like(p)
        assert cell.left_jacobian_product(p, factors, out=out) is out
        torch.testing.assert_close(out, expected)


def test_an_lstm_subclass_that_changes_the_jacobian_multiplies_by_its_own():
    """LSTMCell's factored product describes LSTMCell's J only: a subclass gets p @ its J."""

    class Halved(LSTMCell):
        def _jacobian(self, x, s):
            return 0.5 * super()._jacobian(x, s)

    torch.manual_seed(12)
    cell = Halved(2, 3)
    x, s, p = torch.randn(4, 2), torch.randn(4, 6), torch.randn(4, 2, 6)
    expected = p @ cell.state_jacobian(x, s)
    torch.testing.assert_close(cell.left_jacobian_product(p, cell.jacobian_factors(x, s)), expected)
    ours = LSTMCell(2, 3)
    ours.load_state_dict(cell.state_dict())
    product = ours.left_jacobian_product(p, ours.jacobian_factors(x, s))
    torch.testing.assert_close(product, 2 * expected)  # the test can tell the two apart


def test_a_subclass_that_changes_the_equations_falls_back_to_its_own_jacobian():
    class Leaky(RNNCell):  # h' = 0.5 h + 0.5 tanh(...): not what RNNCell's factors describe
        def _forward(self, x, h):
            return 0.5 * h + 0.5 * super()._forward(x, h)

        def _jacobian(self, x, h):
            slope = 1 - torch.tanh(self._preactivation(x, h)) ** 2
            return 0.5 * torch.eye(self.hidden_size) + 0.5 * slope.unsqueeze(-1) * self.weight_hh

    torch.manual_seed(10)
    cell = Leaky(2, 3)
    x, s, v = torch.randn(4, 2), torch.randn(4, 3), torch.randn(4, 3, 2)
    torch.testing.assert_close(cell.jacobian_vector_product(x, s, v), cell.state_jacobian(x, s) @ v)
    p = v.mT
    factors = cell.jacobian_factors(x, s)
    torch.testing.assert_close(
        cell.left_jacobian_product(p, factors), p @ cell.state_jacobian(x, s)
    )
    xs = torch.randn(5, 4, 2)
    torch.testing.assert_close(cell.fast_scan(xs), cell.scan(xs))


@pytest.mark.parametrize("kind", list(CELLS))
def test_a_cell_given_a_step_of_its_own_leaves_the_fused_path(kind):
    """`self._forward = ...` on the object (in a subclass's __init__, say) changes the step as
    overriding it in the class does: fast_scan follows it, the Jacobian check then runs."""
    torch.manual_seed(15)
    cell = CELLS[kind](2, 3)
    base = cell._forward

    def halved(x, s):  # the LSTM's step gives (h, c)
        out = base(x, s)
        return tuple(0.5 * t for t in out) if isinstance(out, tuple) else 0.5 * out

    cell._forward = halved
    xs = torch.randn(5, 4, 2)
    assert builtin_equations(cell) is None and builtin_equations(type(cell)) is not None
    torch.testing.assert_close(cell.fast_scan(xs), cell.scan(xs))
    with pytest.raises(ValueError, match="disagrees with autograd of its step"):
        check_jacobian(cell)


@pytest.mark.parametrize("kind", list(CELLS))
def test_a_sequence_of_no_steps_is_its_start_state(kind):
    cell = CELLS[kind](2, 3)
    s0 = torch.randn(4, cell.state_size)
    torch.testing.assert_close(cell.fast_scan(torch.empty(0, 4, 2), s0), s0.unsqueeze(0))


def test_a_subclass_that_only_changes_the_init_keeps_the_fused_path():
    """Overriding the initialisation keeps RNNCell's equations, so its fused BPTT and factored
    Jacobian; overriding `_linear` (here adding a constant) changes them, so `fast_scan` is
    `scan`, which follows the new step, and J is autograd's of it."""

    class Scaled(RNNCell):
        def reset_parameters(self):
            super().reset_parameters()
            with torch.no_grad():
                self.weight_hh.mul_(0.5)

    class Shifted(RNNCell):
        def _linear(self, x, h):
            gi, gh = super()._linear(x, h)
            return gi + 1.0, gh

        _jacobian = RecurrentCell._jacobian

    class Tag(RecurrentCell):  # a mixin that adds a name and overrides nothing
        tag = "mine"

    class Tagged(RNNCell, Tag):
        pass

    class Mixin(RecurrentCell):
        def _linear(self, x, h):
            gi, gh = super()._linear(x, h)
            return gi + 1.0, gh

    class AfterIt(RNNCell, Mixin):  # MRO: AfterIt, RNNCell, Mixin, RecurrentCell
        pass

    assert builtin_equations(Scaled) is RNNCell and builtin_equations(Shifted) is None
    assert builtin_equations(AfterIt) is None  # the mixin's _linear changes the step
    assert builtin_equations(Tagged) is RNNCell
    with pytest.raises(TypeError, match="Shifted changes the equations of torch.nn.RNNCell's"):
        Shifted(2, 3).to_torch()
    assert type(Scaled(2, 3).to_torch()) is nn.RNNCell
    torch.manual_seed(13)
    xs = torch.randn(5, 4, 2, requires_grad=True)
    scaled, shifted = Scaled(2, 3), Shifted(2, 3)
    assert type(scaled.fast_scan(xs).grad_fn).__name__ == "RNNScanBackward"
    plain = RNNCell(2, 3)
    plain.load_state_dict(shifted.state_dict())
    torch.testing.assert_close(shifted.fast_scan(xs), shifted.scan(xs))
    assert not torch.allclose(shifted.fast_scan(xs), plain.fast_scan(xs))
    x, s = torch.randn(4, 2), torch.randn(4, 3)
    expected = torch.autograd.functional.jacobian(lambda s1: shifted.step(x[:1], s1), s[:1])
    torch.testing.assert_close(shifted.state_jacobian(x, s)[:1], expected.squeeze(2))
