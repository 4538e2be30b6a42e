"""Initialisation matters: Jacobian decay rate at init against final accuracy, one marker a run.

python scripts/plot_init.py SWEEP_DIR [--out SWEEP_DIR/figures] [--name init]
    [--task adding] [--seq-len 100] [--hidden-size 64] [--cell rnn rnn_orth irnn ...]
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
        name="init",
        tables=("summary", "jacobians"),
        draw=lambda t, args: plots.init_figure(t["summary"], t["jacobians"]),
    )


if __name__ == "__main__":
    sys.exit(main())
