"""How much an all-lag Jacobian snapshot costs, against autograd and against training.

For each cell (tanh RNN, GRU, LSTM) at T=200, hidden size 64, batch 16, input size 2, float32:

    snapshot    state_jacobian_norms(ord=2, log=True): ||ds_T/ds_t||_2 for all t at once
    fro         the same with ord="fro", for what the exact spectral norm adds (not a ratio)
    brute       for each t on its own, torch.func.jacrev of s_t -> s_T over the remaining steps,
                vmapped over the batch, then matrix_norm(ord=2): what one would write without
                rnnexp.jacobians. Under no_grad: jacrev still differentiates, but no graph back
                to the (trainable) parameters is built, which otherwise makes it 2-8x slower and
                took an LSTM past 24 GB. Slow (10-60 s per cell), so by default it is timed on
                every 10th t, at the middle of each block of 10, and the sum extrapolated (its
                cost is about linear in T - t, so mid-block samples are unbiased); --full-brute
                times every t.
    train step  forward, backward and Adam step of SequenceModel(cell, 1), MSE on the last
                output, on an adding-task batch

Medians over repeats, the contenders alternated within each round so that drifts in machine
load hit them alike. Nothing is asserted; the script prints a table.

    python scripts/bench_jacobians.py [--quick] [--full-brute] [--threads N] [--cells tanh ...]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from rnnexp.cells import GRUCell, LSTMCell, RNNCell
from rnnexp.jacobians import state_jacobian_norms
from rnnexp.model import SequenceModel

T, HIDDEN, BATCH, INPUT = 200, 64, 16, 2
CELLS = {
    "tanh": lambda: RNNCell(INPUT, HIDDEN, nonlinearity="tanh"),
    "gru": lambda: GRUCell(INPUT, HIDDEN),
    "lstm": lambda: LSTMCell(INPUT, HIDDEN),
}


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """An adding-task batch if rnnexp.tasks has one, else random inputs and targets."""
    gen = torch.Generator().manual_seed(0)
    try:
        from rnnexp.tasks import AddingTask
    except ImportError:
        inputs = torch.rand(T, BATCH, INPUT, generator=gen)
        return inputs, torch.rand(1, BATCH, 1, generator=gen)
    return AddingTask(seq_len=T).sample(BATCH, gen)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Brute:
    """||ds_T/ds_t||_2 by autograd, one t at a time."""

    def __init__(self, cell, inputs: torch.Tensor) -> None:
        self.inputs = inputs
        with torch.no_grad():
            self.states = cell.scan(inputs)

        def run(s, xs):
            for x in xs:
                s = cell.step(x, s)
            return s

        self.jac = torch.func.vmap(torch.func.jacrev(run), in_dims=(0, 1))

    @torch.no_grad()  # jacrev still differentiates; no graph back to the parameters is kept
    def norm(self, t: int) -> torch.Tensor:
        return torch.linalg.matrix_norm(self.jac(self.states[t], self.inputs[t:]), ord=2)

    def total(self, lags: list[int], weight: float) -> tuple[float, dict[int, torch.Tensor]]:
        """(weight * seconds for the norms at `lags`, those norms)."""
        norms, seconds = {}, 0.0
        for t in lags:
            start = time.perf_counter()
            norms[t] = self.norm(t)
            seconds += time.perf_counter() - start
        return weight * seconds, norms


def train_step(model: SequenceModel, optimizer, inputs, targets) -> None:
    optimizer.zero_grad()
    outputs = model(inputs, output_steps=slice(-1, None))
    F.mse_loss(outputs, targets).backward()
    optimizer.step()


def bench(kind: str, rounds: int, inner: int, stride: int) -> dict[str, float]:
    torch.manual_seed(0)
    cell = CELLS[kind]()
    inputs, targets = batch()
    model = SequenceModel(copy.deepcopy(cell), 1)  # trains its own copy: `cell` stays put
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    brute = Brute(cell, inputs)
    lags = list(range(stride // 2, T, stride)) if stride > 1 else list(range(T))

    def snapshot(ord=2):
        return state_jacobian_norms(cell, inputs, ord=ord, log=True)

    reference = snapshot()  # also warms up every contender
    snapshot("fro")
    train_step(model, optimizer, inputs, targets)
    brute.norm(T - 1)

    snaps, fros, trains, brutes = [], [], [], []
    for _ in range(rounds):
        for _ in range(inner):
            snaps.append(timed(snapshot))
            trains.append(timed(lambda: train_step(model, optimizer, inputs, targets)))
            fros.append(timed(lambda: snapshot("fro")))
        seconds, norms = brute.total(lags, weight=stride)
        brutes.append(seconds)
    # below float32's normal range the brute force's own products are denormal and imprecise
    tiny = torch.finfo(torch.float32).tiny
    errors = [
        ((10 ** reference[t] - n.double()).abs() / n.double())[n > tiny] for t, n in norms.items()
    ]
    error = torch.cat(errors).max().item()
    return {
        "snapshot": statistics.median(snaps),
        "fro": statistics.median(fros),
        "brute": statistics.median(brutes),
        "train": statistics.median(trains),
        "error": error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, every 20th t")
    parser.add_argument("--full-brute", action="store_true", help="time the brute force at every t")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds, inner = (1, 3) if args.quick else (3, 5)
    stride = 1 if args.full_brute else (20 if args.quick else 10)

    print(
        f"T={T} hidden={HIDDEN} batch={BATCH} input={INPUT} float32, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; medians of {rounds * inner} snapshot and train "
        f"timings and {rounds} brute-force totals"
    )
    if stride > 1:
        print(
            f"brute force timed at {len(range(stride // 2, T, stride))} of {T} t "
            f"(t = {stride // 2}, {stride // 2 + stride}, ...), total extrapolated x{stride}"
        )
    header = (
        f"{'cell':<5} {'snapshot ms':>12} {'fro ms':>7} {'brute s':>8} {'train ms':>9} "
        f"{'snap/brute':>11} {'snap/train':>11} {'max rel err':>12}"
    )
    print(header)
    print("-" * len(header))
    for kind in args.cells:
        r = bench(kind, rounds, inner, stride)
        print(
            f"{kind:<5} {r['snapshot'] * 1e3:>12.1f} {r['fro'] * 1e3:>7.1f} {r['brute']:>8.2f} "
            f"{r['train'] * 1e3:>9.1f} "
            f"{r['snapshot'] / r['brute']:>11.4f} {r['snapshot'] / r['train']:>11.2f} "
            f"{r['error']:>12.1e}",
            flush=True,
        )
    print(
        "max rel err: snapshot vs brute force at the timed t, both float32, where the brute "
        "force's norm is in float32's normal range"
    )


if __name__ == "__main__":
    main()
