"""`python -m rnnexp.aggregate SWEEP_DIR [--csv]`: rebuild a sweep's one table, and report.

The sweep callback does the same at the end of every multirun, but Hydra skips that callback
when a job process dies (out of memory, a segfault, a killed worker), so this command is the
one to trust: it reads whatever runs lie in the folder.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from rnnexp.results import is_held, load_runs, write_table

STATUSES = ("ok", "diverged", "failed")


def aggregate(sweep_dir: str | Path, csv: bool = False) -> pd.DataFrame:
    """Write `summary.parquet` (and `summary.csv` if asked, or if one is there already: a copy
    left as it was would go stale) at the sweep root: one row per finished run in the folder,
    whichever invocation of the sweep produced it."""
    sweep_dir = Path(sweep_dir)
    if (sweep_dir / "config.yaml").exists():  # its summary.parquet is the run's own
        raise ValueError(f"{sweep_dir} is a run's folder, not a sweep's")
    table = load_runs(sweep_dir)
    if table.empty:
        if (sweep_dir / "multirun.yaml").exists():  # a sweep's root (Hydra's file): no stale
            for name in ("summary.parquet", "summary.csv"):  # table of runs no longer there
                (sweep_dir / name).unlink(missing_ok=True)
        return table
    table = table.drop(columns="run_dir").sort_values("run_id", ignore_index=True)
    write_table(table, sweep_dir / "summary.parquet")
    if csv or (sweep_dir / "summary.csv").exists():
        table.to_csv(sweep_dir / "summary.csv", index=False)
    return table


def unfinished_runs(sweep_dir: str | Path, table: pd.DataFrame) -> tuple[int, int]:
    """(unfinished, held): run folders that were started (their config.yaml is written first)
    but are not in `table`, the folder's readable summaries (`aggregate`'s), and of those the
    ones another process is running now. The rest were killed or crashed, or have a summary
    truncated by a copy, of which `load_runs` has warned."""
    started = [c.parent for c in Path(sweep_dir).rglob("config.yaml") if c.parent.name != ".hydra"]
    return len(started) - len(table), sum(map(is_held, started))


def report(
    sweep_dir: str | Path,
    table: pd.DataFrame,
    skipped: int | None = None,
    missing: int = 0,
    in_folder: int | None = None,
    held: int = 0,
) -> str:
    """A one-screen account of a sweep: counts by status, and where the failures' logs are.

    skipped: how many runs this invocation found done (None: not a sweep's own report).
    missing: runs without a result, of which `held` are being run by another process.
    in_folder: the runs in the folder's table, when `table` is one grid's share of them.
    """
    sweep_dir = Path(sweep_dir)
    counts = table["status"].value_counts() if not table.empty else pd.Series(dtype=int)
    parts = [f"{counts.get(s, 0)} {s}" for s in STATUSES]
    done = "" if skipped is None else f" ({skipped} of them skipped as already done)"
    runs = f"{len(table)} run" + ("" if len(table) == 1 else "s")
    lines = [f"sweep {sweep_dir}: {runs}: " + ", ".join(parts) + done]
    if held:
        lines.append(
            f"{held} {'run is' if held == 1 else 'runs are'} being run by another process: a "
            "second launch of this sweep, whose report counts them when they finish, or a job "
            "process of a killed one, finishing its run (python -m rnnexp.aggregate then)."
        )
    if missing > held:
        lines.append(
            f"{missing - held} {'run has' if missing - held == 1 else 'runs have'} no result "
            "(unfinished: a job process died or was killed): run the same command again to "
            "resume; finished runs are skipped."
        )
    failed = table[table["status"] == "failed"] if not table.empty else table
    for _, row in failed.head(10).iterrows():
        lines.append(
            f"  failed {row['run_id']}: {row['error']}  log: "
            f"{sweep_dir / row['run_id'] / 'train.log'}"
        )
    if len(failed) > 10:
        lines.append(f"  ... and {len(failed) - 10} more failed runs")
    if not (len(table) if in_folder is None else in_folder):
        lines.append("no run has finished: no table written")
    elif in_folder is not None and in_folder > len(table):
        lines.append(f"table: {sweep_dir / 'summary.parquet'} (all {in_folder} runs in the folder)")
    else:
        lines.append(f"table: {sweep_dir / 'summary.parquet'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rnnexp.aggregate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder, e.g. results/sweeps/smoke")
    parser.add_argument("--csv", action="store_true", help="also write summary.csv")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir} is not a folder", file=sys.stderr)
        return 2
    try:
        table = aggregate(args.sweep_dir, csv=args.csv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    missing, held = unfinished_runs(args.sweep_dir, table)
    print(report(args.sweep_dir, table, missing=missing, held=held))
    return 1 if (not table.empty and (table["status"] == "failed").any()) else 0


if __name__ == "__main__":
    sys.exit(main())
