"""Jacobian products, state gradients, Lyapunov exponents and memory horizons of any cell.

Everything here is cell-agnostic: it sees a cell only through its flat-state interface
(`fast_scan`, `step`, `jacobian_factors` and `left_jacobian_product`, `jacobian_vector_product`,
`hidden`, `initial_state`, `flatten_state`, `state_size`), whose defaults come from
`state_jacobian`, so a new cell needs nothing but `_forward` to be measured: its `_jacobian`
comes from autograd unless it writes a closed form, which `check_jacobian` then holds to
autograd on first use.

Notation. s_0 ... s_T are the flat states of a run over inputs x_1 ... x_T (stored as
inputs[0] ... inputs[T-1]), J_k = ds_k/ds_{k-1} = `cell.state_jacobian(inputs[k-1], s_{k-1})`,
and the lag-(T - t) product is ds_T/ds_t = J_T J_{T-1} ... J_{t+1}, the identity at t = T.
"""

from __future__ import annotations

import copy
import math
import numbers
import weakref

import torch
from torch import Tensor

from rnnexp.cells import RecurrentCell, builtin_equations
from rnnexp.lapack import split_batch
from rnnexp.model import SequenceModel
from rnnexp.tasks import Task

NORMS = (2, "fro")
_LN10 = math.log(10.0)
_CHUNK_BYTES = 16 * 2**20  # per chunk of one-step Jacobians (and, for ord=2, of products)
_SUBSPACE_DIM = 8  # leading left singular vectors carried from one lag to the next
_MIN_SUBSPACE_DIM = 2  # the fewest carried on, halving after each chunk certified at once
_EXTRA_ITERATIONS = 4  # of subspace iteration for a P not certified at first


# the cells check_jacobian passed, and at what tolerance
_checked: weakref.WeakKeyDictionary[RecurrentCell, float] = weakref.WeakKeyDictionary()


@torch.no_grad()
def check_jacobian(cell: RecurrentCell, tol: float = 1e-8) -> None:
    """That a cell's closed-form Jacobian, and the factored products the snapshots and the
    Lyapunov exponents take from it, are autograd's J of its step: checked on 2 random inputs
    and states, in float64 (on a CPU copy), once per cell object, by every function here that
    uses them (and by the trainer at start-up), for any cell but those with a built-in cell's
    equations (which the tests hold to torch's). A subclass that changes `_forward` and keeps
    its parent's `_jacobian` would otherwise be measured wrong, silently. Raises ValueError."""
    cls = type(cell)
    if builtin_equations(cell) is not None or _checked.get(cell, math.inf) <= tol:
        return
    c = copy.deepcopy(cell).double().cpu()
    gen = torch.Generator().manual_seed(0)
    x, s = (
        torch.randn(2, n, generator=gen, dtype=torch.float64) for n in (c.input_size, c.state_size)
    )
    p = torch.randn(2, 3, c.state_size, generator=gen, dtype=torch.float64)
    j = RecurrentCell._jacobian(c, x, s)
    pairs = {
        "_jacobian": (c.state_jacobian(x, s), j),
        "left_jacobian_product": (c.left_jacobian_product(p, c.jacobian_factors(x, s)), p @ j),
        "jacobian_vector_product": (c.jacobian_vector_product(x, s, p.mT), j @ p.mT),
    }
    for name, (got, expected) in pairs.items():
        scale = expected.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
        same_shape = got.shape == expected.shape
        error = float((got - expected).abs().max() / scale) if same_shape else math.inf
        if error <= tol:
            continue
        owner = next(k for k in cls.__mro__ if name in vars(k))
        fix = (
            f"fix it, or delete {name} to use autograd's"
            if owner is cls
            else f"it is {owner.__name__}'s: write one for {cls.__name__}'s equations, or set "
            "`_jacobian = RecurrentCell._jacobian` in the class to use autograd's"
        )
        raise ValueError(
            f"{cls.__name__}.{name} disagrees with autograd of its step (largest error "
            f"{error:.2g} of the largest entry): {fix}"
        )
    _checked[cell] = tol


def _check_inputs(inputs: Tensor) -> None:
    if inputs.dim() != 3 or inputs.shape[0] < 1 or inputs.shape[1] < 1:
        shape = tuple(inputs.shape)
        raise ValueError(f"inputs must have shape (T, B, n) with T, B >= 1, got {shape}")


def _jacobian_chunks(
    cell: RecurrentCell, inputs: Tensor, states: Tensor, budget: int, reverse: bool = False
):
    """Yield (k0, factors) with factors[j][i] the j-th of `cell.jacobian_factors` of
    J_{k0 + i + 1}, for chunks of at most ~`budget` bytes of (B, S, S) Jacobians.

    One `jacobian_factors` call per chunk: time is folded into the batch, so the closed forms
    run as a few large tensor ops instead of T small ones.
    """
    T, B = inputs.shape[:2]
    S = states.shape[-1]
    per_step = B * S * S * states.element_size()
    size = max(1, min(T, budget // per_step))
    starts = range(0, T, size)
    for k0 in reversed(starts) if reverse else starts:
        k1 = min(k0 + size, T)
        x = inputs[k0:k1].flatten(0, 1)
        s = states[k0:k1].flatten(0, 1)
        factors = cell.jacobian_factors(x, s)
        yield k0, [f.view(k1 - k0, B, *f.shape[1:]) for f in factors]


def _orthonormal_rows(z: Tensor) -> Tensor:
    """An orthonormal basis of the row space of each z (B, k, S), k <= S, as rows.

    Householder QR (geqrf + householder_product: no R formed), stable even when the rows are
    nearly parallel, as they become under repeated multiplication by G.
    """
    return torch.linalg.householder_product(*torch.geqrf(z.mT)).mT


def _ritz_pairs(m: Tensor) -> tuple[Tensor, Tensor]:
    """(eigenvalues (N, k) ascending, top unit eigenvector (N, 1, k)) of the symmetric part of
    each m (N, k, k).

    k = 2, where the subspace mostly ends up, in closed form: LAPACK's eigh costs about 0.6 us
    per 2x2 matrix here (4 us per 8x8), most of a chunk's Rayleigh-Ritz.
    """
    m = (m + m.mT) / 2
    if m.shape[-1] != 2:
        theta, y = torch.linalg.eigh(m)
        return theta, y[..., -1:].mT
    a, b, d = m[:, 0, 0], m[:, 0, 1], m[:, 1, 1]
    radius = torch.hypot((a - d) / 2, b)
    theta = torch.stack([(a + d) / 2 - radius, (a + d) / 2 + radius], -1)
    # (M - theta_2 I) y = 0 gives y = (theta_2 - d, b) and y = (b, theta_2 - a): the one with
    # the entry |a - d| / 2 + radius, a sum of two non-negatives, has no cancellation
    lead = (a - d).abs() / 2 + radius
    y = torch.where((a >= d)[:, None], torch.stack([lead, b], -1), torch.stack([b, lead], -1))
    norm = torch.linalg.vector_norm(y, dim=-1, keepdim=True)
    y = torch.where(norm > 0, y / norm.clamp_min(torch.finfo(y.dtype).tiny), y.new_tensor([1, 0]))
    return theta, y[:, None, :]  # norm 0: M a multiple of I, any y is an eigenvector


def _ritz_certificate(
    q: Tensor, gq: Tensor, trace: Tensor, gram_sq: Tensor | None, tol: float
) -> tuple[Tensor, Tensor, Tensor]:
    """(theta_1, certified, gap) from Rayleigh-Ritz of G in span(q); gap: theta_1 > eta.

    See _certified_top_eigenvalue.
    """
    theta, y1 = _ritz_pairs(gq @ q.mT)
    top = theta[:, -1]
    second = theta[:, -2] if theta.shape[-1] > 1 else torch.zeros_like(top)
    rho_sq = (y1 @ gq - top[:, None, None] * (y1 @ q)).square().sum((-2, -1))
    eta = trace - theta.sum(-1) + second
    if gram_sq is not None:
        eta = torch.minimum(eta, (gram_sq - theta.square().sum(-1) + second**2).clamp_min(0).sqrt())
    gap = top > eta
    done = (gap & (rho_sq <= tol * top * (top - eta))) | (trace == 0)
    return top, done, gap


def _rows(t: Tensor, mask: Tensor) -> Tensor:
    """t[mask], without the copy when mask keeps every row: at S = 256 the first lags' P and G
    all go on (8 MB per chunk each), and the copies took 7% of a snapshot."""
    return t if mask.all() else t[mask]


def _certified_top_eigenvalue(p: Tensor, q: Tensor, gq: Tensor, tol: float) -> tuple[Tensor, bool]:
    """(lambda_1(G) = ||P||_2^2 of each P (N, S, S), G = P P^T, exact to `tol` (relative);
    whether the first Rayleigh-Ritz certified them all).

    q (N, k, S): orthonormal rows spanning a guess of G's leading eigenvectors, gq = q G.
    Rayleigh-Ritz in span(q) gives Ritz values theta_1 >= ... >= theta_k with
    theta_i <= lambda_i (interlacing). So theta_1 <= lambda_1, and lambda_2 is at most
    eta = tr G - sum_{i != 2} theta_i (lambda_2 = tr G - lambda_1 - sum_{i>=3} lambda_i), or
    the same in squares, sqrt(||G||_F^2 - sum_{i != 2} theta_i^2), which is much tighter while
    no direction dominates yet but needs G itself (S^3). Temple's inequality then bounds
    lambda_1 <= theta_1 + rho^2 / (theta_1 - eta), rho = ||G v - theta_1 v|| for the top Ritz
    vector v. Those P not certified by the trace bound get G, the squares bound and, where
    eta < theta_1, up to _EXTRA_ITERATIONS more subspace iterations; an exact eigvalsh of G
    decides the rest.
    """
    trace = torch.linalg.vector_norm(p, dim=(-2, -1)).square()
    finite = trace.isfinite()
    if not finite.all():  # a run that overflowed: NaN, which eigh could fail to converge on
        top = torch.full_like(trace, math.nan)
        top[finite] = _certified_top_eigenvalue(p[finite], q[finite], gq[finite], tol)[0]
        return top, False
    top, done, _ = _ritz_certificate(q, gq, trace, None, tol)
    pending = ~done
    if not pending.any():
        return top, True
    todo = pending.nonzero().squeeze(-1)
    p, q, gq, trace = (_rows(t, pending) for t in (p, q, gq, trace))
    g = p @ p.mT
    gram_sq = torch.linalg.vector_norm(g, dim=(-2, -1)).square()  # no S x S temporary
    for iteration in range(_EXTRA_ITERATIONS + 1):
        if iteration:  # one more subspace iteration, now that G is at hand
            q = _orthonormal_rows(gq)
            gq = q @ g
        theta, done, gap = _ritz_certificate(q, gq, trace, gram_sq, tol)
        top[todo[done]] = theta[done]
        # Iterating on helps only where eta is already below theta_1; the others (no dominant
        # direction yet) and what is left after the last iteration get the exact eigvalsh.
        more = ~done & gap if iteration < _EXTRA_ITERATIONS else torch.zeros_like(done)
        exact = ~done & ~more
        if exact.any():
            top[todo[exact]] = split_batch(torch.linalg.eigvalsh, _rows(g, exact))[:, -1]
        todo, g, q, gq, trace, gram_sq = (_rows(t, more) for t in (todo, g, q, gq, trace, gram_sq))
        if not len(todo):
            break
    return top, False


@torch.no_grad()
def state_jacobian_norms(
    cell: RecurrentCell,
    inputs: Tensor,
    state: Tensor | tuple[Tensor, Tensor] | None = None,
    *,
    ord: int | str = 2,
    log: bool = False,
) -> Tensor:
    """||ds_T/ds_t|| for every t = 0..T and sample: (T+1, B), row T the identity's norm.

    inputs: (T, B, n); `state` is s_0 (zeros if None). ord=2 is the spectral norm, "fro" the
    Frobenius norm. With log=False the norms come in the inputs' dtype and under- or overflow
    as any product of T matrices would; log=True gives log10 of the norms in float64, finite
    however small they get (1e-600 after 2000 contracting steps), and -inf where a norm is
    exactly 0 (every unit of a relu layer dead at some step, say).

    States come from one scan, the one-step Jacobians from `jacobian_factors` with time folded
    into the batch (in chunks), and the products from one backward accumulation
    P <- P J_k (`left_jacobian_product`), k = T down to 1, in the cell's dtype. P is divided by
    its largest entry after every step and the logs of those factors summed in float64, so it
    never leaves floating-point range: the norms are the accumulated scale times those of the
    normalised P.

    ||P||_2 without an SVD per lag. Measured on 2 CPU threads, float32, T=200, B=16, a tanh RNN
    with S=64 (an LSTM, S=128): the 3200 ||P_t||_2 took 600 (2900) ms with matrix_norm(ord=2),
    600-700 (2900) ms with svdvals and 350 (2000) ms with eigvalsh of P P^T, each batched into
    one call after the loop, against 45-65 (200-260) ms for everything else; LAPACK's cost per
    small matrix is the problem. A warm-started, certified power iteration on one vector could
    not certify 3196 of the 3200 in float32: the two leading singular values are too close
    (ratio ~0.8) to converge in a few iterations. Used here instead: per lag one step of
    subspace iteration on k = 8 vectors carried over from the previous lag (P_t = P_{t+1} J_{t+1}
    only adds factors on the right, so its leading left singular subspace moves little), then
    per chunk one batched 8x8 Rayleigh-Ritz and a certificate (Temple's bound,
    `_certified_top_eigenvalue`) that ||P||_2^2 is within 32 machine epsilons of the working
    dtype (relative). Only the first 5-20 lags, before any direction dominates, need more
    iterations or an exact eigvalsh (50-110 of the 3200). That adds 75-95 (180-230) ms, 4x
    (9x) less than the batched eigvalsh, and is as exact. Where no direction ever dominates (an
    orthogonal RNN at scale 1, a chrono-initialised LSTM, an identity IRNN) nearly every P_t
    falls back and the cost is about that of the batched eigvalsh. Past those first lags the
    spectrum of G has mostly fallen off enough for fewer vectors to certify as well as 8, so
    after each chunk whose lags all certified at the first Rayleigh-Ritz only the leading half
    are carried on, down to 2 (whose Rayleigh-Ritz is in closed form), and after a chunk that
    did not, the last half set aside comes back and the subspace shrinks no more. 8 to 4 took
    10-14% off the snapshot for the rnn at m = 64, 4-21% for the GRU, within noise for the LSTM
    and at S = 256, with the same fallbacks at m = 64 (carrying 4 throughout made 20-70% more of
    them); 4 to 2, with the 2x2 in closed form, took 0-7% more off (paired runs of 31-41 rounds:
    rnn 0-7%, 4% typical; GRU 6%; LSTM 3-6%), again with the same fallbacks (going from 8
    straight to 2 made 40% more of them for the LSTM). At S = 256 a chunk is a few lags, and the
    one chunk of too few before the return cost up to 46 ms more (of 400-550).
    """
    if ord not in NORMS:
        raise ValueError(f"ord must be 2 (spectral) or 'fro' (Frobenius); got {ord!r}")
    _check_inputs(inputs)
    check_jacobian(cell)
    states = cell.fast_scan(inputs, state)  # (T+1, B, S)
    T, B = inputs.shape[:2]
    S = states.shape[-1]
    dtype, device = states.dtype, states.device
    spectral = ord == 2

    out = torch.empty(T + 1, B, dtype=torch.float64, device=device)
    out[T] = 0.0 if spectral else 0.5 * math.log10(S)
    p = torch.eye(S, dtype=dtype, device=device).expand(B, S, S)
    log_scale = torch.zeros(B, dtype=torch.float64, device=device)
    k = min(S, _SUBSPACE_DIM)
    gen = torch.Generator().manual_seed(0)  # a fixed start; the global RNG is left alone
    q = torch.linalg.qr(torch.randn(S, k, generator=gen, dtype=torch.float64)).Q.mT
    q = q.to(dtype=dtype, device=device).expand(B, k, S)  # orthonormal rows
    dropped: list[Tensor] = []  # the rows set aside at each halving of the subspace
    may_shrink = True
    budget = _CHUNK_BYTES // 2 if spectral else _CHUNK_BYTES  # the P_t of a chunk are kept too
    for k0, factors in _jacobian_chunks(cell, inputs, states, budget, reverse=True):
        n = factors[0].shape[0]
        scales = torch.empty(n, B, dtype=dtype, device=device)
        if spectral:
            ps = torch.empty(n, B, S, S, dtype=dtype, device=device)
            qs = torch.empty(n, B, q.shape[1], S, dtype=dtype, device=device)
            gqs = torch.empty_like(qs)
        else:
            frobs = torch.empty(n, B, dtype=dtype, device=device)
        steps = list(zip(*(f.unbind(0) for f in factors), strict=True))  # per-step views at once
        for i in range(n - 1, -1, -1):  # P_{j-1} = P_j J_j for j = k0 + i + 1
            p = cell.left_jacobian_product(p, steps[i], out=ps[i] if spectral else None)
            # largest entry scaled to 1 (P = 0 stays 0): unlike the Frobenius norm, the max
            # cannot underflow in a step that shrinks P by more than sqrt(tiny) at once. A max
            # below tiny (subnormal) is divided by as it is: clamped, it would be logged wrong,
            # or leave P subnormal and imprecise in the next product
            scale = torch.amax(p.abs(), dim=(-2, -1), out=scales[i])  # vector_norm(inf): 6-14x
            p.div_(torch.where(scale > 0, scale, 1)[:, None, None])
            if spectral:  # one subspace iteration on G = P P^T, then what Rayleigh-Ritz needs
                q = _orthonormal_rows((q @ p) @ p.mT)
                qs[i] = q
                torch.matmul(q @ p, p.mT, out=gqs[i])
            else:
                torch.linalg.vector_norm(p, dim=(-2, -1), out=frobs[i])
        # the scale of P_{k0+i}: log_scale + sum_{j >= i} log scales[j]; -inf once P is 0
        logs = log_scale + scales.double().log().flip(0).cumsum(0).flip(0)
        log_scale = logs[0]
        if spectral:
            flat = (t.flatten(0, 1) for t in (ps, qs, gqs))
            top, at_once = _certified_top_eigenvalue(*flat, tol=32 * torch.finfo(dtype).eps)
            if at_once and may_shrink and q.shape[1] > _MIN_SUBSPACE_DIM:  # the leading rows
                dropped.append(q[:, q.shape[1] // 2 :])  # span what fewer rows would
                q = q[:, : q.shape[1] // 2]
            elif not at_once and dropped:  # too few: the last rows set aside come back, and
                q, may_shrink = _orthonormal_rows(torch.cat([q, dropped.pop()], 1)), False
            logs = logs + 0.5 * top.double().log().view(n, B)  # not +=: log_scale is a view
        else:
            logs = logs + frobs.double().log()
        out[k0 : k0 + n] = logs / _LN10
    return out if log else torch.pow(10.0, out).to(dtype)


def gradient_norms(model: SequenceModel, task: Task, inputs: Tensor, targets: Tensor) -> Tensor:
    """||dL/ds_t|| of the task loss for every t = 0..T and sample b: (T+1, B), column b sample b.

    Total derivatives from one backward pass through a reference unroll with `cell.step`, so
    they include every scored step (all of them on the copy task) and the readout, exactly what
    training sees. `torch.autograd.grad` leaves the parameters' `.grad` untouched. A state the
    loss does not depend on (s_T when the last step is not scored) gets a zero gradient.

    The norms come in float64: in float32 the squares of entries below ~1e-19 are subnormal,
    and a norm below ~4e-23 would be 0 for a gradient that training still sees as non-zero
    (down to float32's ~1e-45). L is the task's loss, a mean over the batch (adding) or over
    the batch and every step (copy), so each sample's gradient carries a factor 1/B, on copy
    also 1/T: compare levels at equal B (and T).
    """
    _check_inputs(inputs)
    cell = model.cell
    with torch.enable_grad():
        s = cell.initial_state(inputs[0]).detach().requires_grad_()
        states = [s]
        for x in inputs:
            s = cell.step(x, s)
            states.append(s)
        hidden = cell.hidden(torch.stack(states[1:])[task.output_steps])
        loss = task.loss(model.readout(hidden), targets)
        grads = torch.autograd.grad(loss, states, allow_unused=True, materialize_grads=True)
    return torch.linalg.vector_norm(torch.stack(grads).double(), dim=-1)


@torch.no_grad()
def lyapunov_exponents(
    cell: RecurrentCell,
    inputs: Tensor,
    state: Tensor | tuple[Tensor, Tensor] | None = None,
    *,
    k: int = 1,
    warmup: int = 0,
) -> Tensor:
    """The k leading Lyapunov exponents of each sample's run: (B, k), per step, natural log.

    Benettin's QR method on the one-step Jacobians along the run: Q <- qr(J_t Q), summing
    log|diag R| over the steps after `warmup` (which let Q align with the leading directions)
    and dividing by their number. Column i estimates exponent i: descending once Q has
    converged, and, not sorted, the same for every k >= i (a short run's columns may still be
    out of order). Q starts as a fixed random orthonormal k-frame (a private generator, so the
    global RNG is untouched): the first k coordinate axes could sit in an invariant subspace
    and miss the leading directions. A Jacobian that kills
    a direction exactly gives -inf. J_t Q comes from `cell.jacobian_vector_product`, the
    factored one-step Jacobian applied to the k columns without forming J_t.
    """
    _check_inputs(inputs)
    S = cell.state_size
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= S:
        raise ValueError(f"k must be an integer in [1, state_size={S}], got {k!r}")
    T, B = inputs.shape[:2]
    if isinstance(warmup, bool) or not isinstance(warmup, numbers.Integral) or not 0 <= warmup < T:
        raise ValueError(f"warmup must be an integer in [0, T={T}), got {warmup!r}")
    k, warmup = int(k), int(warmup)
    check_jacobian(cell)
    states = cell.fast_scan(inputs, state)
    gen = torch.Generator().manual_seed(0)
    # the first k rows of one S x S draw, so that the first j columns are the same for every
    # k >= j (a (k, S) draw's first row depends on k where S is not a multiple of 16: torch's
    # normal sampler): Q's leading columns evolve independently of the later ones, and
    # exponent i does not depend on k
    start = torch.randn(S, S, generator=gen, dtype=torch.float64)[:k].T
    q = torch.linalg.qr(start).Q
    q = q.to(dtype=states.dtype, device=states.device).expand(B, S, k)
    total = torch.zeros(B, k, dtype=torch.float64, device=states.device)
    for t in range(T):
        q, r = torch.linalg.qr(cell.jacobian_vector_product(inputs[t], states[t], q))
        if t >= warmup:
            total += r.diagonal(dim1=-2, dim2=-1).abs().double().log()
    return total / (T - warmup)


def memory_horizon(log10_norms: Tensor, threshold: float = 1e-3) -> tuple[float, float]:
    """(decay_rate, horizon) of a (T+1, B) table of log10 ||ds_T/ds_t|| (log=True output).

    At each lag T - t the median over the batch is taken (the mean of the two middle values for
    an even batch; a -inf stays -inf, a NaN in the batch makes it NaN, as in torch.quantile).
    decay_rate is the least-squares slope of that median against the lag over its finite
    values, in log10 units per step (negative: vanishing; nan with fewer than two finite lags,
    or where a median is NaN: a run that overflowed). horizon is the first lag at which the
    median falls below `threshold` (-inf counts as below), or T if it never does; nan if a NaN
    median comes first.
    """
    if log10_norms.dim() != 2 or 0 in log10_norms.shape:
        raise ValueError(
            f"log10_norms must have shape (T+1, B), T >= 0, B >= 1, got {tuple(log10_norms.shape)}"
        )
    if not 0 < threshold < math.inf:
        raise ValueError(f"threshold must be a finite number > 0, got {threshold!r}")
    x = log10_norms.detach().double().cpu().flip(0)  # row = lag
    T = x.shape[0] - 1
    ordered = x.sort(dim=1).values  # NaN last
    B = x.shape[1]
    low, high = ordered[:, (B - 1) // 2], ordered[:, B // 2]
    median = torch.where(ordered[:, -1].isnan(), math.nan, (low + high) / 2)
    lags = torch.arange(T + 1, dtype=torch.float64)

    finite = median.isfinite()
    if median.isnan().any():  # an overflowed run: no rate, and no horizon past the NaN
        decay_rate = math.nan
    elif finite.sum() >= 2:
        lag, y = lags[finite], median[finite]
        lag_c = lag - lag.mean()
        decay_rate = float((lag_c * (y - y.mean())).sum() / lag_c.square().sum())
    else:
        decay_rate = math.nan
    ends = ((median < math.log10(threshold)) | median.isnan()).nonzero()
    if not len(ends):
        return decay_rate, float(T)
    lag = int(ends[0, 0])
    return decay_rate, math.nan if median[lag].isnan() else float(lag)
