"""Learning curves: eval loss (with the task's baseline) and eval accuracy per cell.

python scripts/plot_learning_curves.py SWEEP_DIR [--out SWEEP_DIR/figures]
    [--name STEM] [--task adding] [--seq-len 100] [--hidden-size 64] [--cell ...]

The default stem is learning_curves_TASK with --task (so the two tasks' figures do not
overwrite each other in one folder), learning_curves without.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from rnnexp import plots


def main(argv: Sequence[str] | None = None) -> int:
    return plots.script_main(
        argv,
        description=__doc__.splitlines()[0],
        prog=Path(__file__).name,
        name=lambda args: "learning_curves" + (f"_{args.task}" if args.task else ""),
        tables=("metrics", "summary"),
        draw=lambda t, args: plots.learning_curves_figure(t["metrics"], t["summary"]),
    )


if __name__ == "__main__":
    sys.exit(main())
