"""Memory horizon and Jacobian decay rate against sequence length, at init and after training.

python scripts/plot_memory_horizon.py SWEEP_DIR [--out SWEEP_DIR/figures]
    [--name memory_horizon] [--task adding] [--hidden-size 64] [--cell ...]
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
        name="memory_horizon",
        tables=("summary", "jacobians"),
        draw=lambda t, args: plots.memory_horizon_figure(t["summary"], t["jacobians"]),
        one_of=("task", "hidden_size", "steps"),
    )


if __name__ == "__main__":
    sys.exit(main())
