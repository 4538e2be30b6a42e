"""Where each cell succeeds: final accuracy (or solved fraction) over seq_len x hidden size.

    python scripts/plot_success_heatmap.py SWEEP_DIR [--out SWEEP_DIR/figures] [--name STEM]
        [--value accuracy|solved] [--task adding] [--cell ...] [--seed ...]

The default stem is success_accuracy or success_solved, after --value.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rnnexp import plots


def _value_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--value",
        choices=("accuracy", "solved"),
        default="accuracy",
        help="mean final eval accuracy, or the fraction of runs that reached solved accuracy",
    )


def main(argv: Sequence[str] | None = None) -> int:
    return plots.script_main(
        argv,
        description=__doc__.splitlines()[0],
        prog=Path(__file__).name,
        name=lambda args: f"success_{args.value}",
        tables=("summary",),
        draw=lambda t, args: plots.success_heatmap_figure(t["summary"], value=args.value),
        one_of=("task", "steps"),
        add_arguments=_value_option,
    )


if __name__ == "__main__":
    sys.exit(main())
