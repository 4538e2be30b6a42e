"""Gradient flow during training: log10 ||dL/ds_t|| over (snapshot step, t), one panel per cell.

python scripts/plot_gradient_flow.py SWEEP_DIR [--out SWEEP_DIR/figures]
    [--name gradient_flow] [--task adding] [--seq-len 100] [--hidden-size 64] [--cell ...]
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
        name="gradient_flow",
        tables=("gradients", "summary"),
        draw=lambda t, args: plots.gradient_flow_figure(t["gradients"], t["summary"]),
    )


if __name__ == "__main__":
    sys.exit(main())
