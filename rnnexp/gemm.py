"""The fused unrolls' per-step products, through oneDNN where this machine runs it faster.

torch's CPU matmul is MKL's. On an AMD CPU with AVX-512, MKL takes its AVX2 kernels while
oneDNN, which torch.nn.LSTM runs on, takes AVX-512: on a 2-core AMD EPYC of this project's a
512^3 float32 GEMM took 1.6 ms through MKL and 0.72-0.81 ms through oneDNN, and the LSTM's
per-step product at m = 256, B = 64 (64 x 256 by 256 x 1024) 228 us against 103 us. On an
AVX2 CPU the two ran alike (README, "Speed"), and everywhere each oneDNN call has a fixed cost
of about 12 us (its Python entry, its primitive lookup), more than MKL takes for a whole small
product. Hence the rule, the same for every run on one machine:

- oneDNN for a float32 CPU product of at least MIN_FLOPS on an AMD CPU that torch runs with
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
    """What the rule gives a float32 product of MIN_FLOPS or more on `device`. A run's
    summary records it: its tables' last digits depend on it."""
    if torch.device(device).type != "cpu" or FORCE == "mkl" or not _onednn_available():
        return False
    return FORCE == "onednn" or mkl_lacks_avx512()


def uses_onednn(weight: Tensor, rows: int) -> bool:
    """Whether step_product(weight, rows) goes through oneDNN here."""
    if weight.dtype != torch.float32:
        return False
    out_features, in_features = weight.shape
    large = 2 * rows * in_features * out_features >= MIN_FLOPS
    return (large or FORCE == "onednn") and large_products_use_onednn(weight.device)


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
