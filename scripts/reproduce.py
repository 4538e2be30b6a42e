"""Reproduce every reference figure: run the experiments, draw the figures, summarise.

    python scripts/reproduce.py                    # small scale, joblib on every core
    python scripts/reproduce.py --scale paper --launcher slurm

Experiments are Hydra multiruns (`conf/experiment/*.yaml`, `conf/experiment/paper/*.yaml`)
into one sweep folder per scale, `results/sweeps/<scale>/`; finished runs are skipped, so an
interrupted reproduction resumes where it stopped. Figures go to `results/figures/` (PNG and
PDF; `results/figures/paper/` at paper scale), the sweep's summary table to `results/tables/`.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from rnnexp.aggregate import aggregate
from rnnexp.plots import REFERENCE_FIGURES, cell_order

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = ("adding", "init", "copy")
CELLS = ["rnn", "irnn", "gru", "lstm"]
VARIANTS = ["rnn", "rnn_orth", "irnn", "lstm", "lstm_chrono"]


def _init_setting(adding: pd.DataFrame, variants: list[str]) -> list[str]:
    """--seq-len and --hidden-size for the init figure: where most of its variants ran (the
    init experiment's setting), the largest on ties. Left to the script, the pick would be the
    adding runs' longest T, which at paper scale holds only rnn, irnn and lstm."""
    ran = adding[adding.cell.isin(variants)].groupby(["seq_len", "hidden_size"]).cell.nunique()
    if ran.empty:
        return []
    seq_len, hidden_size = max(ran.index, key=lambda at: (ran[at], at))
    return ["--seq-len", str(seq_len), "--hidden-size", str(hidden_size)]


def figures(summary: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """Every figure to draw, as (plot script, its arguments): the adding ones, and copy
    learning curves for each delay. Each asks for those of its cells that the sweep ran (a
    plot script refuses a --cell value no run has); seq_len and hidden_size left out pick the
    largest in the sweep. The heatmap and the init figure draw diverged runs (as accuracy 0),
    the curves only finished ones, and none a failed run: a cell is asked for where it has
    such runs. A figure none of whose cells ran is left out."""
    ran = summary[summary.status != "failed"]
    finished = summary[summary.status == "ok"]
    adding = set(ran.loc[ran.task == "adding", "cell"])
    curves = set(finished.loc[finished.task == "adding", "cell"])
    cells = [c for c in CELLS if c in adding]
    curve_cells = [c for c in CELLS if c in curves]
    variants = [c for c in VARIANTS if c in adding]
    drawn = [
        ("plot_success_heatmap", cells, ["--name", "success_heatmap"]),
        ("plot_memory_horizon", curve_cells, []),
        ("plot_learning_curves", curve_cells, ["--name", "learning_curves_adding"]),
        ("plot_vanishing", curve_cells, []),
        ("plot_gradient_flow", curve_cells, []),
        ("plot_init", variants, _init_setting(ran[ran.task == "adding"], variants)),
    ]
    drawn = [(script, ["--task", "adding", "--cell", *c, *rest]) for script, c, rest in drawn if c]
    copy = finished[finished.task == "copy"]
    for d in sorted(copy.seq_len.unique()):
        at_delay = set(copy.loc[copy.seq_len == d, "cell"])
        if lstms := [c for c in ("lstm", "lstm_chrono") if c in at_delay]:
            options = ["--task", "copy", "--seq-len", str(d), "--cell", *lstms]
            drawn.append(
                ("plot_learning_curves", [*options, "--name", f"learning_curves_copy_{d}"])
            )
    return drawn


def run_experiment(name: str, scale: str, launcher: str, extra: list[str]) -> int:
    experiment = name if scale == "small" else f"{scale}/{name}"
    command = [
        sys.executable,
        "-m",
        "rnnexp.train",
        "-m",
        f"experiment={experiment}",
        f"hydra/launcher={launcher}",
        "progress=false",
        *extra,
    ]
    print(f"\n$ {' '.join(command[1:])}", flush=True)
    return subprocess.run(command, cwd=REPO).returncode


def plot_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _per_cell(runs: pd.DataFrame, with_decay: bool) -> list[str]:
    """One line per cell, in legend order: means over its runs (its seeds), ok or diverged.

    A diverged run's accuracy counts as 0, as in the heatmap, and its loss is left out; the
    measures at initialisation, taken before any update, count for every run."""
    lines = []
    for cell in cell_order(runs.cell):
        r = runs[runs.cell == cell]
        diverged = r.status == "diverged"
        accuracy = r.final_eval_accuracy.where(~diverged, 0.0).mean()
        line = (
            f"  {cell:<12} accuracy {accuracy:.3f}  loss {r.final_eval_loss[~diverged].mean():.4f}"
        )
        if with_decay:
            line += (
                f"  decay at init {r.log10_decay_rate_init.mean():+.4f} log10/step  "
                f"horizon at init {r.memory_horizon_init.mean():.0f} steps"
            )
        if diverged.any():
            line += f"  ({diverged.sum()} of {len(r)} seeds diverged)"
        lines.append(line)
    return lines


def _chance(runs: pd.DataFrame) -> str:
    """', chance accuracy 0.078' (tables written before baseline_accuracy existed: '')."""
    if "baseline_accuracy" not in runs or runs.baseline_accuracy.isna().all():
        return ""
    return f", chance accuracy {runs.baseline_accuracy.dropna().iloc[0]:.3f}"


def text_summary(summary: pd.DataFrame) -> str:
    """Per cell: accuracy at the longest adding length and the decay rate at initialisation;
    the copy task's loss against its memoryless baseline at each delay."""
    ran = summary[summary.status != "failed"]
    lines = []
    adding = ran[ran.task == "adding"]
    if not adding.empty:
        longest, widest = adding.seq_len.max(), adding.hidden_size.max()
        at = adding[(adding.seq_len == longest) & (adding.hidden_size == widest)]
        chance = _chance(at)
        lines.append(
            f"adding, T={longest}, m={widest} (mean over seeds, a diverged one's accuracy 0;"
            f" baseline loss 1/6{chance}):"
        )
        lines += _per_cell(at, with_decay=True)
    copy = ran[ran.task == "copy"]
    for delay in sorted(copy.seq_len.unique()):
        at = copy[copy.seq_len == delay]
        baseline = f"memoryless baseline {at.baseline_loss.iloc[0]:.4f}{_chance(at)}"
        lines.append(f"copy, delay {delay} ({baseline}):")
        lines += _per_cell(at, with_decay=False)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=("small", "paper"), default="small")
    parser.add_argument(
        "--launcher",
        default="joblib",
        help="a hydra/launcher option: joblib (default), basic, slurm, ...",
    )
    parser.add_argument("--figures-only", action="store_true", help="skip the experiments")
    parser.add_argument("--sweep", type=Path, help="default: results/sweeps/<scale>")
    parser.add_argument(
        "--out",
        type=Path,
        help="figures/ and tables/ go here; default: "
        "results/ (small), results/<folder>/<scale>/ otherwise",
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    sweep = args.sweep or REPO / "results" / "sweeps" / args.scale
    sub = "" if args.scale == "small" else args.scale
    figure_dir = args.out / "figures" if args.out else REFERENCE_FIGURES / sub
    tables = args.out / "tables" if args.out else REPO / "results" / "tables" / sub
    failed = []
    if not args.figures_only:
        overrides = [*args.overrides, *([f"hydra.sweep.dir={sweep}"] if args.sweep else [])]
        for name in EXPERIMENTS:
            if run_experiment(name, args.scale, args.launcher, overrides) != 0:
                failed.append(name)
    if not sweep.is_dir():
        print(f"error: no results under {sweep}", file=sys.stderr)
        return 1

    summary = aggregate(sweep, csv=True)
    print(f"\ndrawing figures into {figure_dir}", flush=True)
    for script, options in figures(summary):
        if plot_script(script)([str(sweep), "--out", str(figure_dir), *options]) != 0:
            failed.append(script)

    tables.mkdir(parents=True, exist_ok=True)
    for suffix in ("parquet", "csv"):
        shutil.copyfile(sweep / f"summary.{suffix}", tables / f"summary.{suffix}")
    minutes = (time.perf_counter() - start) / 60
    print(f"\nruns: {sweep}\nfigures: {figure_dir}\ntable: {tables / 'summary.parquet'} (.csv)")
    print(text_summary(summary))
    print(f"done in {minutes:.1f} min" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
