"""Vanishing gradients: log10 ||ds_T/ds_t|| against the lag, per cell, at init and after training.

python scripts/plot_vanishing.py SWEEP_DIR [--out SWEEP_DIR/figures] [--name vanishing]
    [--task adding] [--seq-len 100] [--hidden-size 64] [--cell rnn lstm] [--seed 0 1]
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
        name="vanishing",
        tables=("jacobians", "summary"),
        draw=lambda t, args: plots.vanishing_figure(t["jacobians"], t["summary"]),
    )


if __name__ == "__main__":
    sys.exit(main())
