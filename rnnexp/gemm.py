"""The fused unrolls' products, per step and over whole sequences, through oneDNN where this
machine runs them faster.

torch's CPU matmul is MKL's. On an AMD CPU with AVX-512, MKL takes its AVX2 kernels while
oneDNN, which torch.nn.LSTM runs on, takes AVX-512: on a 2-core AMD EPYC of this project's a
512^3 float32 GEMM took 1.6 ms through MKL and 0.72-0.81 ms through oneDNN, and the LSTM's
per-step product at m = 256, B = 64 (64 x 256 by 256 x 1024) 228 us against 103 us. On an
AVX2 CPU the two ran alike (results/bench/README.md), and everywhere each oneDNN call has a
fixed cost of about 12 us (its Python entry, its primitive lookup), more than MKL takes for a
whole small product. Hence the rule, the same for every run on one machine:

- oneDNN for a float32 CPU product of at least MIN_FLOPS per step, or SEQUENCE_MIN_FLOPS or
  SEQUENCE_MIN_OUTPUTS results over a whole sequence, on an AMD CPU that torch runs with
  AVX-512 (where MKL falls back to AVX2);
- MKL for everything else, float64 included (oneDNN has no float64 GEMM).

Both are IEEE float32 GEMMs, alike against a float64 product: the choice moves results by
rounding, never by accuracy. It reads the CPU, not a clock: an earlier rule timed a probe GEMM
once per process, and under load two processes on one machine chose differently, so a
resumed sweep's runs differed in their last digits from an uninterrupted one's.
`FORCE` ("mkl" or "onednn") overrides the rule, for a benchmark's A/B and for the tests.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

MIN_FLOPS = 16e6  # 2 * rows * in * out; the LSTM's step at m = 256, B = 64 is 33.5e6
# A sequence product (`sequence_product`) goes to oneDNN from more FLOPs, or from this many
# elements in its result: at m = 32 (T = 100, B = 64) the LSTM and GRU steps were 2-7% slower
# with theirs there, though alone the products ran 0.6-0.9 of MKL's time, and the rnn's at
# m = 128 (2e8 FLOPs) 2-3%
SEQUENCE_MIN_FLOPS = 3e8
SEQUENCE_MIN_OUTPUTS = 2**20
FORCE: str | None = None  # "mkl" or "onednn": every float32 CPU product through that one

Product = Callable[..., Tensor]


@functools.cache
def _onednn_available() -> bool:
    if not torch.backends.mkldnn.is_available():
        return False
    try:  # private ops of torch's (inductor fuses linear layers with them): here or not
        ops = torch.ops.mkldnn
        return callable(ops._linear_pointwise.binary) and callable(ops._reorder_linear_weight)
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def mkl_lacks_avx512() -> bool:
    """Whether torch runs with AVX-512 on an AMD CPU, where MKL takes its AVX2 kernels: there a
    512^3 float32 GEMM ran 2.0-2.3 times as fast through oneDNN, on an AVX2 CPU alike."""
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return "AuthenticAMD" in cpuinfo.read()  # vendor_id's value
    except OSError:  # no /proc/cpuinfo (not Linux): MKL, torch's own choice
        return False


def large_products_use_onednn(device: torch.device | str = "cpu") -> bool:
    """What the rule gives a large float32 product on `device`. A run's summary records it:
    its tables' last digits depend on it."""
    force = _forced()
    if torch.device(device).type != "cpu" or force == "mkl" or not _onednn_available():
        return False
    return force == "onednn" or mkl_lacks_avx512()


def _forced() -> str | None:
    if FORCE not in (None, "mkl", "onednn"):  # a typo would silently leave the rule in charge
        raise ValueError(f"rnnexp.gemm.FORCE must be None, 'mkl' or 'onednn', got {FORCE!r}")
    return FORCE


def _rule(t: Tensor, large: bool) -> bool:
    if t.dtype != torch.float32:
        return False
    return (large or _forced() == "onednn") and large_products_use_onednn(t.device)


def uses_onednn(weight: Tensor, rows: int) -> bool:
    """Whether step_product(weight, rows) goes through oneDNN here."""
    out_features, in_features = weight.shape
    return _rule(weight, 2 * rows * in_features * out_features >= MIN_FLOPS)


def sequence_uses_onednn(a: Tensor, b: Tensor) -> bool:
    """Whether sequence_product(a, b) goes through oneDNN here."""
    (rows, inner), cols = a.shape, b.shape[1]
    flops, outputs = 2 * rows * inner * cols, rows * cols
    return _rule(a, flops >= SEQUENCE_MIN_FLOPS or outputs >= SEQUENCE_MIN_OUTPUTS)


def sequence_product(a: Tensor, b: Tensor, bias: Tensor | None = None) -> Tensor:
    """a @ b (+ bias) for (M, K) a and (K, N) b: the unrolls' products over a whole sequence,
    the input projection and the weight gradients, with T * B rows or a contraction over them.

    These are made once per sequence, so oneDNN's fixed cost is nothing to them, and MKL runs
    their shapes slowly: a contraction over few columns (the inputs: x_t W_ih^T, the input
    side of the gradients) or the T * B rows of a weight gradient. oneDNN took the LSTM's at
    m = 128 (T = 100, B = 64) from 5.0 to 2.9 ms (the weight gradient) and 0.80 to 0.20 ms
    (the input projection). oneDNN computes a @ w^T, w = b^T read in place whether b or b^T is
    contiguous, while a is copied where it is not contiguous, its rows padded to a multiple of
    16 on the way: a weight gradient with M = 259 (the LSTM's [h, x, 1] at m = 256) took 17.8 ms
    unpadded, 10.9 padded (18.8 through MKL).
    """
    if not sequence_uses_onednn(a, b):
        return a @ b if bias is None else torch.addmm(bias, a, b)
    rows = a.shape[0]
    if not a.is_contiguous():  # a copy anyway: padded on the way
        a = torch.cat([a, a.new_zeros(-rows % 16, a.shape[1])])
    w = b.t() if b.is_contiguous() or b.t().is_contiguous() else b.t().contiguous()
    return torch.ops.mkldnn._linear_pointwise.default(a, w, bias, "none", [], "")[:rows]


def step_product(weight: Tensor, rows: int, bias: Tensor | None = None) -> Product:
    """x -> x @ weight.T (+ bias) (+ add), for the (rows, in) x of every step of an unroll.

    Called as `product(x, add=None, out=None)`: the result goes into `out` if given, else it
    may be written into `add`'s memory (add: (rows, out), bias: (out,)).
    Made once per sequence: oneDNN's weight is reordered into its blocked layout for `rows`.
    """
    return _onednn(weight, rows, bias) if uses_onednn(weight, rows) else _mkl(weight, bias)


def _mkl(weight: Tensor, bias: Tensor | None) -> Product:
    weight_t = weight.t()

    def product(x: Tensor, add: Tensor | None = None, out: Tensor | None = None) -> Tensor:
        if add is None:
            if bias is None:
                return torch.mm(x, weight_t, out=out)
            return torch.addmm(bias, x, weight_t, out=out)
        y = add.addmm_(x, weight_t) if out is None else torch.addmm(add, x, weight_t, out=out)
        return y if bias is None else y.add_(bias)

    return product


def _onednn(weight: Tensor, rows: int, bias: Tensor | None = None) -> Product:
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), rows)
    linear = torch.ops.mkldnn._linear_pointwise.default
    linear_add = torch.ops.mkldnn._linear_pointwise.binary

    def product(x: Tensor, add: Tensor | None = None, out: Tensor | None = None) -> Tensor:
        if add is None:
            y = linear(x, packed, bias, "none", [], "")
        else:
            y = linear_add(x, add, packed, bias, "add")
        return y if out is None else out.copy_(y)

    return product
