"""The per-step products against a float64 matmul, through MKL and oneDNN, and the rule that
picks one."""

import io

import pytest
import torch

from rnnexp import gemm

ONEDNN_HERE = gemm._onednn_available()
ONEDNN = pytest.mark.skipif(not ONEDNN_HERE, reason="torch built without oneDNN")
BACKENDS = ["mkl", pytest.param("onednn", marks=ONEDNN)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("with_add", [False, True])
@pytest.mark.parametrize("with_out", [False, True])
def test_step_product_is_x_times_weight_transposed(backend, with_bias, with_add, with_out):
    gen = torch.Generator().manual_seed(0)
    rows, n_in, n_out = 8, 5, 12
    x, weight, bias, add = (
        torch.randn(*shape, generator=gen)
        for shape in ((rows, n_in), (n_out, n_in), (n_out,), (rows, n_out))
    )
    expected = x.double() @ weight.double().T
    expected += bias.double() if with_bias else 0
    expected += add.double() if with_add else 0
    make = gemm._onednn if backend == "onednn" else lambda w, r, b: gemm._mkl(w, b)
    product = make(weight, rows, bias if with_bias else None)
    out = torch.full((rows, n_out), torch.nan)
    got = product(x, add=add.clone() if with_add else None, out=out if with_out else None)
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-6)
    if with_out:
        assert got.data_ptr() == out.data_ptr()


@pytest.mark.parametrize("backend", BACKENDS)
def test_step_product_takes_the_strided_rows_the_unrolls_pass(backend):
    """The LSTM's h_t is a column slice of its flat states, P's rows of a (T, B, 4m) buffer."""
    states = torch.randn(3, 4, 10)
    weight = torch.randn(8, 5)
    make = gemm._onednn if backend == "onednn" else lambda w, r: gemm._mkl(w, None)
    got = make(weight, 4)(states[1, :, :5])
    torch.testing.assert_close(got, states[1, :, :5] @ weight.T, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("b_layout", ["contiguous", "transposed", "strided"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_sequence_product_is_a_times_b(backend, b_layout, with_bias, monkeypatch):
    """a as the weight gradients pass it (x^T: not contiguous, its 21 rows padded to 32 for
    oneDNN), b in each layout: read in place, or copied where oneDNN could not."""
    monkeypatch.setattr(gemm, "FORCE", backend)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 21, generator=gen)
    b = {
        "contiguous": torch.randn(50, 12, generator=gen),
        "transposed": torch.randn(12, 50, generator=gen).t(),
        "strided": torch.randn(50, 24, generator=gen)[:, ::2],
    }[b_layout]
    bias = torch.randn(12, generator=gen) if with_bias else None
    for a in (x.t(), x.t().contiguous()):
        expected = a.double() @ b.double() + (bias.double() if with_bias else 0)
        got = gemm.sequence_product(a, b, bias)
        assert got.shape == (21, 12)
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    assert gemm.sequence_uses_onednn(x.t(), b) is (backend == "onednn" and ONEDNN_HERE)


def test_the_rule_large_float32_products_only_and_never_float64(monkeypatch):
    monkeypatch.setattr(gemm, "mkl_lacks_avx512", lambda: True)
    monkeypatch.setattr(gemm, "_onednn_available", lambda: True)
    big, small = torch.empty(1024, 256), torch.empty(128, 32)  # 2 * 64 * in * out: 33.5e6, 0.5e6
    assert gemm.uses_onednn(big, 64)
    assert gemm.uses_onednn(torch.empty(500, 250), 64)  # 2 * 64 * 250 * 500 = 16e6: from there
    assert not gemm.uses_onednn(torch.empty(499, 250), 64)
    assert not gemm.large_products_use_onednn("cuda")  # a GPU's products are the GPU's
    assert not gemm.uses_onednn(small, 64)
    assert not gemm.uses_onednn(big.double(), 64)  # oneDNN has no float64 GEMM
    monkeypatch.setattr(gemm, "mkl_lacks_avx512", lambda: False)  # an AVX2 machine, say
    assert not gemm.uses_onednn(big, 64)
    monkeypatch.setattr(gemm, "FORCE", "onednn")
    assert gemm.uses_onednn(small, 64) and not gemm.uses_onednn(big.double(), 64)
    monkeypatch.setattr(gemm, "FORCE", "mkl")
    monkeypatch.setattr(gemm, "mkl_lacks_avx512", lambda: True)
    assert not gemm.uses_onednn(big, 64)
    monkeypatch.setattr(gemm, "FORCE", "oneDNN")  # a typo is an error, not the rule again
    for weight in (big, small):
        with pytest.raises(ValueError, match="FORCE must be None, 'mkl' or 'onednn', got 'oneDNN'"):
            gemm.uses_onednn(weight, 64)


def test_the_rule_for_sequence_products_large_float32_only(monkeypatch):
    """By FLOPs (a weight gradient) or by the size of the result (an input projection)."""
    monkeypatch.setattr(gemm, "mkl_lacks_avx512", lambda: True)
    monkeypatch.setattr(gemm, "_onednn_available", lambda: True)
    rows = 6400  # T * B
    weight_grad = torch.empty(131, rows), torch.empty(rows, 512)  # 8.6e8 FLOPs
    projection = torch.empty(rows, 2), torch.empty(2, 512)  # 3.3e6 results
    small = torch.empty(35, rows), torch.empty(rows, 128)  # 5.7e7 FLOPs, 4480 results
    assert gemm.sequence_uses_onednn(*weight_grad)
    assert gemm.sequence_uses_onednn(*projection)
    assert not gemm.sequence_uses_onednn(*small)
    assert not gemm.sequence_uses_onednn(*(t.double() for t in weight_grad))
    monkeypatch.setattr(gemm, "mkl_lacks_avx512", lambda: False)
    assert not gemm.sequence_uses_onednn(*weight_grad)


def test_without_onednn_everything_goes_to_mkl(monkeypatch):
    monkeypatch.setattr(gemm, "_onednn_available", lambda: False)
    monkeypatch.setattr(gemm, "FORCE", "onednn")
    assert not gemm.uses_onednn(torch.empty(1024, 256), 64)


@pytest.mark.parametrize(
    ("capability", "vendor", "expected"),
    [
        ("AVX512", "AuthenticAMD", True),
        ("AVX512", "GenuineIntel", False),
        ("AVX2", "AuthenticAMD", False),
    ],
)
def test_onednn_is_chosen_from_the_cpu_not_from_a_clock(monkeypatch, capability, vendor, expected):
    """Two processes on one machine must agree, whatever the load: a resume depends on it."""
    cpuinfo = f"processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: fpu avx2\n"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr("builtins.open", lambda *args, **kwargs: io.StringIO(cpuinfo))
    gemm.mkl_lacks_avx512.cache_clear()
    try:
        assert gemm.mkl_lacks_avx512() is expected
    finally:
        gemm.mkl_lacks_avx512.cache_clear()
