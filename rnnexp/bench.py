"""`python -m rnnexp.bench [--quick]`: how fast rnnexp is, as ratios measured in one run.

Every number is a ratio of two timings taken side by side in this process (or its children),
the contenders alternated round by round and the median kept, so that drifts in the load of a
shared machine hit both alike. Nothing is asserted: targets live in the README.

Sections (`--only` picks some):
  train      a training step (forward, backward, Adam) of our model over torch.nn.RNN/GRU/LSTM
             of the same sizes, and over the FLOP-bound time (the step's matmul FLOPs at the
             matmul throughput measured here, the faster of MKL's and oneDNN's); B=64, T=100,
             the adding task, m = 32, 128, 256. `reference` is the readable per-step unroll
             (SequenceModel(fused=False)); `products`, the library of our per-step products,
             `weight_grads` that of our weight gradients (and input projection).
  jacobian   an all-lag snapshot state_jacobian_norms(ord=2) at T=200, m=64, B=16 over brute
             force (torch.func.jacrev of s_t -> s_T for each t) and over one training step.
  sweep      an 8-run sweep with the joblib launcher (2 jobs, 1 torch thread each) over the
             same sweep run sequentially by the basic launcher (torch's default threads, and
             1 thread), whole commands.
  cli        `python -m rnnexp.train` (300 steps, LSTM m=128, T=100, B=64, default
             diagnostics and evaluation) over a minimal script doing the same 300 steps with
             torch.nn.LSTM (plain torch: glibc's default allocator thresholds), whole commands.
  diagnostics  a run with every default, with and without diagnostics: what they add.

The in-process sections run under `retain_freed_memory()`, as a training run does, for ours
and torch's alike. Results go to results/bench/<section>.csv, and a Markdown table to stdout;
last, every target of issues 7 and 4 next to what the run measured (targets.csv).
`--quick` (about a minute) runs the training section at m = 32 and 128 for 3 rounds, the brute
force at 2 lags, and one round of the whole-command sections with short runs (20 steps, a
2-run sweep, the CLI run with 2 snapshots instead of 6), and writes to results/bench/quick/: a
smoke check of the suite, its ratios only indicative. Its nine whole commands are mostly
start-up, about 5 s each (importing torch, and torch._dynamo, which torch.optim imports).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from rnnexp import gemm
from rnnexp.allocator import retain_freed_memory
from rnnexp.cells import GRUCell, LSTMCell, RNNCell
from rnnexp.jacobians import state_jacobian_norms
from rnnexp.model import SequenceModel
from rnnexp.tasks import AddingTask

OURS = {"rnn": RNNCell, "gru": GRUCell, "lstm": LSTMCell}
TORCH = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
REPO = Path(__file__).resolve().parents[1]


def alternate(
    contenders: dict[str, Callable[[], object]], rounds: int, warmup: bool = True
) -> dict[str, float]:
    """Median seconds of each contender, run in turn `rounds` times (after one warm-up each)."""
    for fn in contenders.values() if warmup else ():
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def matmul_flops_per_second(rounds: int) -> dict[str, float]:
    """Throughput of a large float32 GEMM on this machine, now, through MKL (torch's matmul)
    and, where torch has it, oneDNN (torch.nn.LSTM's): the FLOP bound takes the faster.

    On an AMD CPU with AVX-512 oneDNN's is about twice MKL's (rnnexp.gemm)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    contenders = {"mkl": gemm._mkl(b, None)}
    if gemm._onednn_available():
        contenders["onednn"] = gemm._onednn(b, 1024)
    seconds = alternate({name: lambda p=p: p(a) for name, p in contenders.items()}, rounds)
    return {name: 2 * 1024**3 / s for name, s in seconds.items()}


def step_flops(cell: str, m: int, n: int, batch: int, seq_len: int) -> float:
    """Matmul FLOPs of a training step: forward (input and recurrent products), dL/dh through
    W_hh, and the weight gradients of W_hh and W_ih."""
    rows = GATES[cell] * m
    return 2 * seq_len * batch * rows * (3 * m + 2 * n)


def _adam_step(model: nn.Module, optimizer, loss_fn) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss_fn().backward()
    optimizer.step()


def train_contenders(cell: str, m: int, inputs, targets) -> dict[str, Callable[[], None]]:
    """One Adam step each of our fused model, our reference unroll and torch's module."""
    n = inputs.shape[-1]
    ours = SequenceModel(OURS[cell](n, m), 1)
    reference = SequenceModel(OURS[cell](n, m), 1, fused=False)
    torch_rnn, readout = TORCH[cell](n, m), nn.Linear(m, 1)
    opt_ours = torch.optim.Adam(ours.parameters())
    opt_ref = torch.optim.Adam(reference.parameters())
    opt_torch = torch.optim.Adam([*torch_rnn.parameters(), *readout.parameters()])
    last = slice(-1, None)

    def torch_loss():
        hs, _ = torch_rnn(inputs)
        return F.mse_loss(readout(hs[last]), targets)

    return {
        "ours": lambda: _adam_step(
            ours, opt_ours, lambda: F.mse_loss(ours(inputs, None, last), targets)
        ),
        "torch": lambda: _adam_step(torch_rnn, opt_torch, torch_loss),
        "reference": lambda: _adam_step(
            reference, opt_ref, lambda: F.mse_loss(reference(inputs, None, last), targets)
        ),
    }


def bench_train(rounds: int, sizes: list[int]) -> pd.DataFrame:
    batch, seq_len = 64, 100
    inputs, targets = AddingTask(seq_len).sample(batch, torch.Generator().manual_seed(0))
    gemms = matmul_flops_per_second(rounds)
    flops_per_second = max(gemms.values())
    print("GEMM 1024^3, GFLOP/s: " + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in gemms.items()))
    rows = []
    for cell in OURS:
        for m in sizes:
            torch.manual_seed(0)
            t = alternate(train_contenders(cell, m, inputs, targets), rounds)
            weight_hh = torch.empty(GATES[cell] * m, m)  # the per-step products' shape
            h_t, grad_pre = torch.empty(m, seq_len * batch), torch.empty(seq_len * batch, 1)
            grad_pre = grad_pre.expand(-1, GATES[cell] * m)  # dW_hh^T = h^T dL/d(pre-activations)
            bound = step_flops(cell, m, inputs.shape[-1], batch, seq_len) / flops_per_second
            rows.append(
                {
                    "cell": cell,
                    "hidden_size": m,
                    "ours_ms": 1e3 * t["ours"],
                    "torch_ms": 1e3 * t["torch"],
                    "reference_ms": 1e3 * t["reference"],
                    "flop_bound_ms": 1e3 * bound,
                    "ours_over_torch": t["ours"] / t["torch"],
                    "reference_over_torch": t["reference"] / t["torch"],
                    "ours_over_flop_bound": t["ours"] / bound,
                    "products": "onednn" if gemm.uses_onednn(weight_hh, batch) else "mkl",
                    "weight_grads": "onednn" if gemm.sequence_uses_onednn(h_t, grad_pre) else "mkl",
                }
            )
            print(_row(rows[-1]), flush=True)
    return pd.DataFrame(rows)


@torch.no_grad()  # jacrev still differentiates, without a graph back to the parameters
def brute_force_norms(
    cell,
    inputs: torch.Tensor,
    t_values: Iterable[int],
    ord: int | str = 2,
    states: torch.Tensor | None = None,
) -> dict[int, torch.Tensor]:
    """||ds_T/ds_t|| (B,) for each t in t_values by autograd, one t at a time (issue 4's brute
    force: "computed separately for each t"): jacrev of s_t -> s_T over the remaining steps.
    The tests hold state_jacobian_norms to it, so the benchmark's baseline computes what the
    snapshot does. `states`: the cell's scan of `inputs`, if made already."""
    states = cell.scan(inputs) if states is None else states

    def run(s, xs):
        for x in xs:
            s = cell.step(x, s)
        return s

    jacobian = torch.func.vmap(torch.func.jacrev(run), in_dims=(0, 1))
    return {t: torch.linalg.matrix_norm(jacobian(states[t], inputs[t:]), ord=ord) for t in t_values}


def autograd_norms(cell, inputs: torch.Tensor, ord: int | str = 2) -> torch.Tensor:
    """||ds_T/ds_t|| (T+1, B) for every t from one reverse pass of autograd: the gradients of
    the S entries of s_T with respect to every s_t, batched (is_grads_batched). The best one
    does with autograd alone, O(T S) vector-Jacobian products where the brute force's are
    O(T^2 S): a fairer baseline than that one, which the targets name."""
    T, B, _ = inputs.shape
    S = cell.state_size
    eye = torch.eye(S, dtype=inputs.dtype, device=inputs.device)
    with torch.enable_grad():
        states = [inputs.new_zeros(B, S).requires_grad_()]
        for x in inputs:
            states.append(cell.step(x, states[-1]))
        rows = eye.unsqueeze(1).expand(S, B, S)  # row i: the cotangent of s_T's entry i
        grads = torch.autograd.grad(states[-1], states[:-1], rows, is_grads_batched=True)
    jacobians = torch.stack(grads).transpose(1, 2)  # (T, B, S, S): [t, b] = ds_T/ds_t
    return torch.linalg.matrix_norm(torch.cat([jacobians, eye.expand(1, B, S, S)]), ord=ord)


def bench_jacobian(rounds: int, stride: int) -> pd.DataFrame:
    """The brute force is timed at every `stride`-th t (mid-block) and scaled by `stride`: its
    cost is about linear in T - t, so that estimates the full sum without bias; the scan it
    starts from is timed on its own and counted once."""
    seq_len, m, batch = 200, 64, 16
    inputs, targets = AddingTask(seq_len).sample(batch, torch.Generator().manual_seed(0))
    t_values = list(range(stride // 2, seq_len, stride))
    rows = []
    for name, cls in OURS.items():
        torch.manual_seed(0)
        cell = cls(inputs.shape[-1], m)
        model = SequenceModel(cls(inputs.shape[-1], m), 1)
        optimizer = torch.optim.Adam(model.parameters())

        def loss(model=model):
            return F.mse_loss(model(inputs, None, slice(-1, None)), targets)

        states = cell.scan(inputs)
        t = alternate(
            {
                "snapshot": lambda cell=cell: state_jacobian_norms(cell, inputs, log=True),
                "train_step": lambda m=model, o=optimizer, f=loss: _adam_step(m, o, f),
                "scan": lambda cell=cell: cell.scan(inputs),
                "brute": lambda c=cell, s=states: brute_force_norms(c, inputs, t_values, states=s),
                "autograd": lambda cell=cell: autograd_norms(cell, inputs),
            },
            rounds,
        )
        exact = 10 ** state_jacobian_norms(cell, inputs, log=True)  # float64
        brute = brute_force_norms(cell, inputs, t_values, states=states)
        pairs = [(exact[t], b) for t, b in brute.items()]
        pairs.append((exact[:-1], autograd_norms(cell, inputs)[:-1]))  # every t at once
        normal = torch.finfo(torch.float32).tiny  # below it the brute force itself is imprecise
        errors = [((e - b.double()).abs() / b.double())[b > normal] for e, b in pairs]
        error = torch.cat(errors).max().item()
        brute_seconds = t["scan"] + t["brute"] * stride
        rows.append(
            {
                "cell": name,
                "seq_len": seq_len,
                "hidden_size": m,
                "batch": batch,
                "snapshot_ms": 1e3 * t["snapshot"],
                "brute_force_s": brute_seconds,
                "train_step_ms": 1e3 * t["train_step"],
                "autograd_s": t["autograd"],
                "snapshot_over_brute_force": t["snapshot"] / brute_seconds,
                "snapshot_over_autograd": t["snapshot"] / t["autograd"],
                "snapshot_over_train_step": t["snapshot"] / t["train_step"],
                "max_relative_error": error,
            }
        )
        print(_row(rows[-1]), flush=True)
    return pd.DataFrame(rows)


def train_command(*overrides: str, multirun: bool = False) -> list[str]:
    """`python -m rnnexp.train` as timed here: no bar, and a fresh run every round (rerun=true:
    no skip of the finished one). -m must come before the overrides (Hydra's argparse)."""
    flags = ["-m"] if multirun else []
    return [
        sys.executable,
        "-m",
        "rnnexp.train",
        *flags,
        "progress=false",
        "rerun=true",
        *overrides,
    ]


def commands_seconds(commands: dict[str, list[str]], rounds: int) -> list[float]:
    """Median wall seconds of whole commands run in turn, start-up included, no warm-up."""
    runs = {
        name: lambda c=command: subprocess.run(c, cwd=REPO, check=True, capture_output=True)
        for name, command in commands.items()
    }
    return list(alternate(runs, rounds, warmup=False).values())


def bench_sweep(rounds: int, steps: int = 400, cells: str = "rnn,gru,lstm,irnn") -> pd.DataFrame:
    """Two seeds of each cell (8 runs of 5-10 s by default): joblib with 2 jobs (1 torch
    thread each) against the basic launcher running them one after the other with torch's
    default threads, and with 1 thread (pure process parallelism). Every round starts fresh
    (rerun=true), start-up costs included."""
    runs = 2 * len(cells.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        base = train_command(
            f"cell={cells}",
            "seed=0,1",
            "cell.hidden_size=64",
            "task.seq_len=50",
            f"train.steps={steps}",
            "train.eval_every=100",
            "diagnostics.enabled=false",
            multirun=True,
        )
        commands = {
            "joblib_2_jobs": [
                *base,
                "hydra/launcher=joblib",
                "hydra.launcher.n_jobs=2",
                f"hydra.sweep.dir={tmp}/joblib",
            ],
            "sequential": [*base, f"hydra.sweep.dir={tmp}/basic"],
            "sequential_1_thread": [*base, "threads=1", f"hydra.sweep.dir={tmp}/basic1"],
        }
        joblib_s, sequential_s, single_s = commands_seconds(commands, rounds)
    row = {
        "runs": runs,
        "steps": steps,
        "joblib_2_jobs_s": joblib_s,
        "sequential_s": sequential_s,
        "sequential_1_thread_s": single_s,
        "joblib_over_sequential": joblib_s / sequential_s,
        "joblib_over_sequential_1_thread": joblib_s / single_s,
    }
    print(_row(row), flush=True)
    return pd.DataFrame([row])


MINIMAL_SCRIPT = """\
{prelude}import torch
from torch import nn
import torch.nn.functional as F
from rnnexp.tasks import AddingTask

torch.manual_seed(0)
task, data = AddingTask(100), torch.Generator().manual_seed(0)
lstm, readout = nn.LSTM(2, 128), nn.Linear(128, 1)
optimizer = torch.optim.Adam([*lstm.parameters(), *readout.parameters()], lr=1e-3)
for step in range({steps}):
    inputs, targets = task.sample(64, data)
    hs, _ = lstm(inputs)
    loss = F.mse_loss(readout(hs[-1:]), targets)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_([*lstm.parameters(), *readout.parameters()], 1.0)
    optimizer.step()
print(loss.item())
"""


def bench_cli(rounds: int, steps: int = 300, snapshots: int | None = None) -> pd.DataFrame:
    """The whole command, start-up and default diagnostics included, and without diagnostics
    (what they cost), against the minimal torch.nn.LSTM script, as written and with the
    allocator setting the command runs under (`retain_freed_memory`). `snapshots`, if given,
    replaces the default number of diagnostics snapshots: --quick's 20 steps would otherwise
    be mostly six snapshots."""
    with tempfile.TemporaryDirectory() as tmp:
        script, retained = Path(tmp) / "minimal.py", Path(tmp) / "minimal_retained.py"
        script.write_text(MINIMAL_SCRIPT.format(prelude="", steps=steps))
        # the same with our allocator setting, which the CLI runs under: torch's LSTM then
        # skips the page faults of its workspace (results/bench/README.md)
        prelude = "from rnnexp.allocator import retain_freed_memory\nretain_freed_memory()\n"
        retained.write_text(MINIMAL_SCRIPT.format(prelude=prelude, steps=steps))
        cli = train_command(
            "cell=lstm",
            "cell.hidden_size=128",
            "task=adding",
            "task.seq_len=100",
            f"train.steps={steps}",
            "train.batch_size=64",
            f"hydra.run.dir={tmp}/run",
            *([] if snapshots is None else [f"diagnostics.snapshots={snapshots}"]),
        )
        commands = {
            "cli": cli,
            "cli_no_diagnostics": [*cli, "diagnostics.enabled=false"],
            "minimal": [sys.executable, str(script)],
            "minimal_retained": [sys.executable, str(retained)],
        }
        cli_s, bare_s, minimal_s, retained_s = commands_seconds(commands, rounds)
    row = {
        "steps": steps,
        "cli_s": cli_s,
        "cli_no_diagnostics_s": bare_s,
        "minimal_torch_script_s": minimal_s,
        "minimal_retained_s": retained_s,
        "cli_over_minimal": cli_s / minimal_s,
        "cli_over_minimal_retained": cli_s / retained_s,
        "diagnostics_share": (cli_s - bare_s) / cli_s,
    }
    print(_row(row), flush=True)
    return pd.DataFrame([row])


def bench_diagnostics(rounds: int, steps: int = 1000) -> pd.DataFrame:
    """What the diagnostics add to a run with every default (LSTM m=64, adding T=100, 1000
    steps, 6 snapshots on 16 sequences), whole commands with and without them."""
    with tempfile.TemporaryDirectory() as tmp:
        base = train_command(f"train.steps={steps}")
        commands = {
            "default": [*base, f"hydra.run.dir={tmp}/on"],
            "no_diagnostics": [*base, "diagnostics.enabled=false", f"hydra.run.dir={tmp}/off"],
        }
        on, off = commands_seconds(commands, rounds)
    row = {
        "steps": steps,
        "default_s": on,
        "no_diagnostics_s": off,
        "diagnostics_added": on / off - 1,
    }
    print(_row(row), flush=True)
    return pd.DataFrame([row])


def markdown(table: pd.DataFrame) -> str:
    """A GitHub Markdown table, numbers to 3 significant digits."""
    cells = [
        [f"{v:.3g}" if isinstance(v, float) else str(v) for v in row]
        for row in table.itertuples(index=False)
    ]
    lines = [list(table.columns), ["---"] * len(table.columns), *cells]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def _row(row: dict) -> str:
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()} "
        f"({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} torch "
        f"threads, torch {torch.__version__}, Python {platform.python_version()}"
    )


SECTIONS = ("train", "jacobian", "sweep", "cli", "diagnostics")

# (section, the rows it applies to, ratio, at most): issue 7's targets on a 2-core CPU, and
# issue 4's for what the default diagnostics add to a run
TARGETS = (
    ("train", {"cell": ("gru", "lstm"), "hidden_size": (128,)}, "ours_over_torch", 1.0),
    ("train", {"hidden_size": (32,)}, "ours_over_torch", 1.5),
    ("train", {"hidden_size": (256,)}, "ours_over_torch", 1.0),
    ("train", {"hidden_size": (256,)}, "ours_over_flop_bound", 2.0),
    ("jacobian", {}, "snapshot_over_brute_force", 0.01),
    ("jacobian", {}, "snapshot_over_train_step", 1.0),
    ("sweep", {}, "joblib_over_sequential", 0.6),
    ("cli", {}, "cli_over_minimal", 1.2),
    ("diagnostics", {}, "diagnostics_added", 0.2),
)


def against_targets(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every target next to what this run measured, one row per measured row it applies to
    (a section not run, or --quick's missing m = 256, has none): the README's targets table,
    from one command."""
    rows = []
    for section, where, ratio, limit in TARGETS:
        if section not in tables:
            continue
        for measured in tables[section].to_dict("records"):
            if all(measured[key] in allowed for key, allowed in where.items()):
                label = " ".join(
                    f"{k}={measured[k]}" for k in ("cell", "hidden_size") if k in measured
                )
                value = measured[ratio]
                rows.append(
                    {
                        "section": section,
                        "row": label or "-",
                        "ratio": ratio,
                        "target": limit,
                        "measured": value,
                        "met": "yes" if value <= limit else "no",
                    }
                )
    return pd.DataFrame(rows, columns=["section", "row", "ratio", "target", "measured", "met"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rnnexp.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one round, short runs, into results/bench/quick/",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        metavar="SECTION",
        help=f"run only these sections, of: {', '.join(SECTIONS)} (default: all)",
    )
    parser.add_argument("--out", type=Path, help="default: results/bench[/quick]")
    args = parser.parse_args(argv)
    retain_freed_memory()  # as every training run does; ours and torch's alike
    print(f"# rnnexp benchmark ({machine()})")
    if args.quick:
        runs = {
            "train": lambda: bench_train(3, [32, 128]),
            "jacobian": lambda: bench_jacobian(1, 100),
            "sweep": lambda: bench_sweep(1, steps=20, cells="lstm"),
            "cli": lambda: bench_cli(1, steps=20, snapshots=2),
            "diagnostics": lambda: bench_diagnostics(1, steps=20),
        }
    else:
        runs = {
            "train": lambda: bench_train(21, [32, 128, 256]),
            "jacobian": lambda: bench_jacobian(7, 10),
            "sweep": lambda: bench_sweep(3),
            "cli": lambda: bench_cli(3),
            "diagnostics": lambda: bench_diagnostics(3),
        }
    args.out = args.out or REPO / "results" / "bench" / ("quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    tables = {}
    for section in args.only:
        print(f"\n## {section}")
        tables[section] = table = runs[section]()
        table.to_csv(args.out / f"{section}.csv", index=False, float_format="%.4g")
        print(markdown(table))
    targets = against_targets(tables)
    targets.to_csv(args.out / "targets.csv", index=False, float_format="%.4g")
    met = (targets.met == "yes").sum()
    print(f"\n## targets: {met} of {len(targets)} met" + (" (indicative: --quick)" * args.quick))
    print(markdown(targets))
    print(f"\ntables in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
