"""Figures from the result tables: one function per figure, DataFrames in, a Figure out.

The functions read only what `rnnexp.results.load_runs` returns, so a figure can be redrawn
from a sweep folder long after the code that trained it has changed. They build figures
without pyplot (no backend to choose, no global list of open figures) inside `style()`, the one
place the paper style lives; `save` writes a PNG for the README and a PDF for papers. A cell
keeps its colour in every figure (`cell_color`) and cells appear in one fixed order
(`cell_order`), so figures can be read side by side.

Data conventions, shared by every figure: a cell with no rows is left out; curves use runs
with status ok only (a diverged run has no meaningful curve); NaN and ±inf (a dead relu gives
log10 0 = -inf) are missing values; several seeds of a cell are averaged. Runs that differ in
anything but the seed are never silently pooled: the task, seq_len and hidden size must be
single-valued where a figure averages over runs (`ValueError` otherwise), and a warning names
any other config key that varies within a cell.

`scripts/plot_*.py` are thin command-line wrappers around `script_main`.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

from rnnexp.results import atomic_path, load_runs

# --- style -------------------------------------------------------------------------------------

SINGLE_COLUMN = 3.3  # inches: one column of a two-column paper
DOUBLE_COLUMN = 6.8  # inches: the full text width
PNG_DPI = 200

# Okabe & Ito's palette: distinct under the common colour-vision deficiencies. A variant shares
# its base cell's hue family (rnn/rnn_orth: reds, lstm/lstm_chrono: blues).
CELL_COLORS = {
    "rnn": "#d55e00",  # vermillion
    "rnn_orth": "#e69f00",  # orange
    "irnn": "#cc79a7",  # reddish purple
    "gru": "#009e73",  # bluish green
    "lstm": "#0072b2",  # blue
    "lstm_chrono": "#56b4e9",  # sky blue
}
CELL_ORDER = tuple(CELL_COLORS)  # legend order; unknown cells follow, alphabetically
FALLBACK_COLORS = ("#000000", "#7f7f7f", "#8c564b", "#bcbd22", "#17becf", "#9467bd")

STYLE: dict[str, Any] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "figure.titlesize": 7,
    "mathtext.fontset": "dejavusans",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "axes.titlepad": 3.0,
    "axes.labelpad": 2.0,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.minor.width": 0.4,
    "ytick.minor.width": 0.4,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "xtick.minor.size": 1.5,
    "ytick.minor.size": 1.5,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "legend.frameon": False,
    "legend.handlelength": 1.6,
    "legend.borderaxespad": 0.3,
    "image.cmap": "viridis",
    "figure.dpi": 100,
    "savefig.dpi": PNG_DPI,
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays text, editable by journals
    "ps.fonttype": 42,
    "figure.constrained_layout.h_pad": 0.03,
    "figure.constrained_layout.w_pad": 0.03,
}

BAND_ALPHA = 0.2
NOTE_COLOR = "0.35"
REF_LINE = {"color": "0.55", "lw": 0.6, "ls": ":"}  # reference lines: norm 1, rate 0, y = T
CAP_SHADE = "0.93"  # past the sequence's end, where no horizon can be found


def style() -> AbstractContextManager:
    """The paper style (8 pt text, light axes), as a context: figures are styled when built."""
    return mpl.rc_context(STYLE)


def cell_color(cell: str, among: Iterable[str] = ()) -> str:
    """The cell's colour in every figure. An unknown name's comes from its CRC32, so it too is
    the same in every figure and every process (Python's `hash` of a str is salted), unless
    one of the figure's cells (`among`) before it in `cell_order` already has that colour:
    then it takes the palette's next free one, so that no two cells of a figure share a colour
    while FALLBACK_COLORS lasts."""
    if cell in CELL_COLORS:
        return CELL_COLORS[cell]
    n, colors, taken = len(FALLBACK_COLORS), {}, set()
    for other in (c for c in cell_order([*among, cell]) if c not in CELL_COLORS):
        if len(taken) == n:  # more unknown cells than colours: they repeat from here
            taken.clear()
        start = zlib.crc32(other.encode()) % n
        free = (c for i in range(n) if (c := FALLBACK_COLORS[(start + i) % n]) not in taken)
        colors[other] = next(free)
        taken.add(colors[other])
    return colors[cell]


def cell_order(cells: Iterable[Any]) -> list[str]:
    """Cells in legend order: the known ones as in CELL_ORDER, then the others alphabetically."""
    present = {str(c) for c in cells if not pd.isna(c)}
    return [c for c in CELL_ORDER if c in present] + sorted(present - set(CELL_ORDER))


def _cell_panels(axes: np.ndarray, cells: list[str]) -> Iterable[tuple[int, Any, str]]:
    """(index, axis, cell) for each cell, in order; the grid's spare axes are removed."""
    for i, ax in enumerate(axes.flat):
        if i < len(cells):
            yield i, ax, cells[i]
        else:
            ax.remove()


def save(fig: Figure, out_dir: str | Path, name: str) -> list[Path]:
    """Write `out_dir/name.png` (200 dpi, for the README) and `out_dir/name.pdf` (for papers).

    Each file is written atomically; the PDF has no creation date, so a redrawn figure of the
    same tables is byte-identical and does not show up as changed.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    with style():
        for fmt, kwargs in (
            ("png", {"dpi": PNG_DPI}),
            ("pdf", {"metadata": {"CreationDate": None}}),
        ):
            path = out / f"{name}.{fmt}"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, bbox_inches="tight", pad_inches=0.02, **kwargs)
            paths.append(path)
    return paths


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kwargs) -> tuple:
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def _grid(n: int) -> tuple[int, int]:
    """(rows, columns) of one panel per cell: one row up to 4, then 3 or 4 columns, so that
    a panel stays wide enough to read at full text width."""
    if n <= 4:
        return 1, n
    ncols = 3 if n <= 6 else 4
    return math.ceil(n / ncols), ncols


def _note(fig: Figure, text: str) -> None:
    """A caption-like line above the panels: what was averaged over what."""
    fig.suptitle(text, x=0.01, ha="left", color=NOTE_COLOR)


def _cell_legend(
    fig: Figure, cells: Sequence[str], extra: Sequence[Line2D] = (), **handle: Any
) -> None:
    """One legend for the figure, right of the panels, the cells in legend order first."""
    handles = [Line2D([], [], color=cell_color(c, cells), label=c, **handle) for c in cells]
    fig.legend(handles=[*handles, *extra], loc="outside right upper")


def _spans_decades(values: Iterable[float], factor: float = 5) -> bool:
    """Whether positive values span `factor` or more: from 5 a log scale reads better (a
    copy-task loss falls from ln 9 to near its baseline, 0.3 at delay 50: a factor of 7)."""
    x = np.asarray([v for v in values if np.isfinite(v) and v > 0], dtype=float)
    return len(x) > 1 and x.max() / x.min() >= factor


def _plain_log_labels(axis) -> None:
    """A log axis over a decade or two labelled 0.2, 0.3, 0.5, 1, 2 rather than only at powers
    of 10 (too few to read values off) or as 3 x 10^-1."""

    def label(value: float, _position: int) -> str:
        mantissa = round(value / 10 ** math.floor(math.log10(value)), 6) if value > 0 else 0
        return f"{value:g}" if mantissa in (1, 2, 3, 5) else ""

    axis.set_major_formatter(FuncFormatter(label))
    axis.set_minor_formatter(FuncFormatter(label))


def _minus(text: str) -> str:
    return text.replace("-", "\N{MINUS SIGN}")


# --- data --------------------------------------------------------------------------------------

JAC = "log10_jacobian_norm"
GRAD = "log10_grad_norm_median"
NORM_LABELS = {"2": r"_2", "fro": r"_F"}


def _require(df: pd.DataFrame | None, columns: Iterable[str], table: str) -> pd.DataFrame:
    if df is None or len(df) == 0:
        raise ValueError(f"no {table} rows to plot (empty table, or filters that left no run)")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"the {table} table has no column {', '.join(missing)}")
    return df


def _run_key(*frames: pd.DataFrame | None) -> str:
    """The column naming a run: its folder if every table has one (run_ids repeat across
    sweeps that ran the same config), else its run_id."""
    present = [f for f in frames if f is not None]
    return "run_dir" if all("run_dir" in f.columns for f in present) else "run_id"


STATUS_RANK = {"ok": 0, "diverged": 1, "failed": 2}  # which copy of a run to keep


def _once_each(df: pd.DataFrame, table: str, summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """One folder per run_id: the same config and seed found in several folders (a sweep
    copied, or the same point in two sweeps under results/) is one run, not one more seed.
    The folder whose run went furthest is kept (ok, then diverged, then failed, by df's own
    status column or `summary`'s: a failed single run's folder beside a finished sweep's must
    not hide it), the first by name among equals, with a warning."""
    if not {"run_id", "run_dir"} <= set(df.columns):
        return df
    folders = df[["run_id", "run_dir"]].drop_duplicates()
    source = df if "status" in df.columns else summary
    rank = pd.Series(len(STATUS_RANK), index=folders.index)
    if source is not None and {"run_dir", "status"} <= set(source.columns):
        status = source.drop_duplicates("run_dir").set_index("run_dir")["status"]
        rank = folders["run_dir"].map(status).map(STATUS_RANK).fillna(len(STATUS_RANK))
    first = folders.assign(_rank=rank).sort_values(["_rank", "run_dir"]).drop_duplicates("run_id")
    if len(first) == len(folders):
        return df
    warnings.warn(
        f"{table}: {folders.run_id.duplicated().sum()} more folder(s) of runs already found "
        f"elsewhere (same config and seed) left out: each run counts once",
        stacklevel=3,
    )
    return df[df["run_dir"].isin(first["run_dir"])]


def _ok_runs(df: pd.DataFrame, summary: pd.DataFrame | None, table: str) -> pd.DataFrame:
    """`df` restricted to runs whose status is ok, from its own column or from `summary`,
    each run once (`_once_each`).

    Warns of the runs left out, by status: a figure's "2 seeds" counts the kept runs only.
    """
    df = _once_each(df, table, summary)
    key = _run_key(df, summary)
    if "status" in df.columns:
        runs = df[[key, "status"]].drop_duplicates(key)
    elif summary is not None and len(summary) and "status" in summary.columns:
        runs = summary.loc[summary[key].isin(df[key]), [key, "status"]].drop_duplicates(key)
    else:
        return df
    kept = df[df[key].isin(runs.loc[runs["status"] == "ok", key])]
    if kept.empty:
        raise ValueError(f"no {table} rows of a run with status ok")
    left_out = runs.loc[runs["status"] != "ok", "status"].value_counts()
    if len(left_out):
        counts = ", ".join(f"{n} {status}" for status, n in left_out.items())
        warnings.warn(f"{table}: left out {counts} (runs whose status is not ok)", stacklevel=3)
    return kept


def _finite(df: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """±inf as NaN, so that means, bands and colour maps skip them."""
    return df.assign(
        **{c: df[c].astype(float).where(np.isfinite(df[c].astype(float))) for c in columns}
    )


def _single(df: pd.DataFrame, columns: Iterable[str], table: str) -> dict[str, Any]:
    """The one value each of `columns` takes in `df` (absent columns skipped); several values
    raise: averaging runs of different lengths or sizes would be meaningless."""
    values = {}
    for col in columns:
        if col not in df.columns:
            continue
        found = sorted(df[col].dropna().unique().tolist())
        if len(found) > 1:
            option = "--" + col.replace("_", "-")
            raise ValueError(
                f"the {table} rows hold several {col} values ({', '.join(map(str, found))}): "
                f"select one (scripts: {option})"
            )
        if found:
            values[col] = found[0]
    return values


def _warn_mixed(df: pd.DataFrame, table: str, allowed: Iterable[str] = ()) -> None:
    """Warn if runs pooled into one curve or marker differ in a config key other than the seed.

    `allowed` are the keys a figure spreads along an axis: runs are pooled per cell and value
    of those, so a key that follows them (lstm_chrono's chrono_max_len is its seq_len) mixes
    nothing.
    """
    names = list(df.columns)
    config = names[: names.index("run_id")] if "run_id" in names else []
    allowed = [c for c in allowed if c in df.columns]
    ignore = {"cell", "seed", *allowed}
    mixed_by_cell: dict[str, set[str]] = {}
    for key, group in df.groupby(["cell", *allowed], dropna=False):
        mixed = {c for c in config if c not in ignore and group[c].nunique(dropna=False) > 1}
        mixed_by_cell.setdefault(key[0], set()).update(mixed)
    for cell, mixed in mixed_by_cell.items():
        if mixed:
            listed = ", ".join(c for c in config if c in mixed)
            warnings.warn(f"{table}: the {cell} runs pooled differ in {listed}", stacklevel=3)


def _setting(values: dict[str, Any]) -> str:
    """'adding, T = 100, m = 64': the fixed settings of a figure, for its note."""
    parts = [str(values["task"])] if "task" in values else []
    if "seq_len" in values:
        symbol = "delay" if values.get("task") == "copy" else "$T$"
        parts.append(f"{symbol} = {values['seq_len']}")
    if "hidden_size" in values:
        parts.append(f"$m$ = {values['hidden_size']}")
    return ", ".join(parts)


def _length_label(task: Any) -> str:
    """The seq_len axis: the copy task's seq_len is its delay, not its length (delay + 20)."""
    return "copy delay (steps)" if task == "copy" else "sequence length $T$"


def _seeds_text(df: pd.DataFrame, key: str, by: Sequence[str] = ("cell",)) -> str:
    """'2 seeds' (or '1–3 seeds'): how many seeds each plotted point or line pools, and how
    many runs where that is more (runs that differ in another key, of which _warn_mixed
    warns): '3 seeds (6 runs)'."""

    def span(counts: pd.Series) -> tuple[str, int]:
        low, high = int(counts.min()), int(counts.max())
        return (str(low) if low == high else f"{low}\N{EN DASH}{high}"), high

    groups = df.groupby(list(by))
    runs = groups[key].nunique()
    seeds = groups["seed"].nunique() if "seed" in df.columns else runs
    n, high = span(seeds)
    text = f"{n} seed{'s' if high > 1 else ''}"
    return text if runs.equals(seeds) else f"{text} ({span(runs)[0]} runs)"


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


# --- 1. vanishing gradients --------------------------------------------------------------------


def _decay_curves(jac: pd.DataFrame) -> pd.DataFrame:
    """Per cell and lag: the batch median, q10 and q90 of log10 ||ds_T/ds_t||, mean over runs.

    -inf in any run makes the mean -inf (a gap), not the mean of the other runs."""
    cols = [f"{JAC}_median", f"{JAC}_q10", f"{JAC}_q90"]
    return _finite(jac.groupby(["cell", "lag"])[cols].mean().reset_index(), cols)


def _fit_rate(curve: pd.DataFrame) -> float:
    """Least-squares slope of the median against the lag (log10 units per step)."""
    ok = curve[f"{JAC}_median"].notna()
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(curve.loc[ok, "lag"], curve.loc[ok, f"{JAC}_median"], 1)[0])


def _draw_decay(ax, jac: pd.DataFrame, cells: Sequence[str], rates: dict[str, float]) -> None:
    """One median line (label: cell and decay rate) and q10-q90 band per cell."""
    curves = _decay_curves(jac)
    ax.axhline(0.0, **REF_LINE)
    for cell in cells:
        c = curves[curves["cell"] == cell].sort_values("lag")
        if c[f"{JAC}_median"].notna().sum() == 0:
            continue
        color = cell_color(cell, cells)
        ax.fill_between(
            c["lag"], c[f"{JAC}_q10"], c[f"{JAC}_q90"], color=color, alpha=BAND_ALPHA, lw=0
        )
        rate = rates.get(cell, math.nan)
        if not np.isfinite(rate):
            rate = _fit_rate(c)
        label = f"{cell}  {_minus(f'{rate:.3f}')}" if np.isfinite(rate) else cell
        ax.plot(c["lag"], c[f"{JAC}_median"], color=color, label=label)
    ax.set_xlabel(r"lag $T - t$ (steps)")
    ax.set_xlim(left=0)
    ax.legend(title=r"cell, decay ($\log_{10}$/step)", loc="best")


def _summary_rates(summary: pd.DataFrame | None, runs: pd.Series, key: str, when: str) -> dict:
    """Each cell's mean decay rate over `runs`, from the summary's `log10_decay_rate_<when>`."""
    col = f"log10_decay_rate_{when}"
    if summary is None or col not in summary.columns or key not in summary.columns:
        return {}
    s = summary[summary[key].isin(runs)]
    return _finite(s, [col]).groupby("cell")[col].mean().dropna().to_dict()


def vanishing_figure(jacobians: pd.DataFrame, summary: pd.DataFrame | None = None) -> Figure:
    """log10 ||ds_T/ds_t|| against the lag T - t, per cell, at initialisation and after training.

    Each cell: the batch median, a q10-q90 band, both averaged over its seeds. The legend gives
    the decay rate (log10 units per step): the summary's `log10_decay_rate_init/_final` (mean
    over seeds) when `summary` is given, else the slope fitted to the plotted median. With
    `summary`, runs that are not ok are left out. "After training" is each run's last snapshot.
    """
    cols = ["cell", "step", "lag", f"{JAC}_median", f"{JAC}_q10", f"{JAC}_q90"]
    jac = _ok_runs(_require(jacobians, cols, "jacobians"), summary, "jacobians")
    fixed = _single(jac, ("task", "seq_len", "hidden_size", "norm"), "jacobians")
    _warn_mixed(jac, "jacobians")
    key = _run_key(jac, summary)
    last = jac.groupby(key)["step"].transform("max")
    phases = {
        "init": jac[jac["step"] == 0],
        "final": jac[(jac["step"] == last) & (last > 0)],
    }
    cells = cell_order(jac["cell"].unique())
    final_steps = sorted(phases["final"]["step"].unique().tolist())
    after = f"step {final_steps[0]}" if len(final_steps) == 1 else "last snapshot"
    titles = {"init": "at initialisation (step 0)", "final": f"after training ({after})"}
    norm = NORM_LABELS.get(str(fixed.get("norm", "2")), "")
    with style():
        fig, axes = _figure(DOUBLE_COLUMN, 2.5, 1, 2, sharey=True)
        for ax, (when, frame) in zip(axes[0], phases.items(), strict=True):
            ax.set_title(titles[when], loc="left")
            if frame.empty:
                ax.text(0.5, 0.5, "no snapshot", transform=ax.transAxes, ha="center")
                continue
            rates = _summary_rates(summary, frame[key].unique(), key, when)
            _draw_decay(ax, frame, cells, rates)
        axes[0, 0].set_ylabel(
            r"$\log_{10}\,\|\partial s_T / \partial s_t\|" + norm + "$" + " (batch median)"
        )
        _note(
            fig,
            _join(
                _setting(fixed),
                f"line: median over the batch, band: q10\N{EN DASH}q90; "
                f"both averaged over {_seeds_text(jac, key)}",
            ),
        )
    return fig


# --- 2. learning curves ------------------------------------------------------------------------


def _baseline(summary: pd.DataFrame | None, key: str, runs: pd.Series, column: str) -> float:
    """The runs' task baseline from the summary (one task, so one value), or nan."""
    if summary is None or column not in summary.columns or key not in summary.columns:
        return math.nan
    values = summary.loc[summary[key].isin(runs), column].dropna().unique()
    return float(values[0]) if len(values) else math.nan


def learning_curves_figure(metrics: pd.DataFrame, summary: pd.DataFrame | None = None) -> Figure:
    """Eval loss and eval accuracy against the training step, per cell: the mean over seeds and
    a min-max band. With `summary`: runs that are not ok are left out, and the task's baseline
    loss and accuracy (what a model that learnt nothing scores: chance) are dashed lines."""
    cols = ["cell", "step", "eval_loss", "eval_accuracy"]
    m = _ok_runs(_require(metrics, cols, "metrics"), summary, "metrics")
    fixed = _single(m, ("task", "seq_len", "hidden_size"), "metrics")
    _warn_mixed(m, "metrics")
    key = _run_key(m, summary)
    m = _finite(m, ["eval_loss", "eval_accuracy"])
    m = m[m["eval_loss"].notna() | m["eval_accuracy"].notna()]
    if m.empty:
        raise ValueError("no evaluated metrics rows (eval_loss and eval_accuracy all missing)")
    baseline, chance = (
        _baseline(summary, key, m[key], f"baseline_{x}") for x in ("loss", "accuracy")
    )
    cells = cell_order(m["cell"].unique())
    with style():
        fig, axes = _figure(DOUBLE_COLUMN, 2.3, 1, 2, sharex=True)
        loss_ax, acc_ax = axes[0]
        for cell in cells:
            stats = (
                m[m["cell"] == cell]
                .groupby("step")[["eval_loss", "eval_accuracy"]]
                .agg(["mean", "min", "max"])
            )
            for ax, col in ((loss_ax, "eval_loss"), (acc_ax, "eval_accuracy")):
                s = stats[col].dropna()
                if s.empty:
                    continue
                color = cell_color(cell, cells)
                if (s["max"] > s["min"]).any():
                    ax.fill_between(
                        s.index, s["min"], s["max"], color=color, alpha=BAND_ALPHA, lw=0
                    )
                ax.plot(s.index, s["mean"], color=color, label=cell)
        extra = []
        for ax, level in ((loss_ax, baseline), (acc_ax, chance)):
            if np.isfinite(level):
                ax.axhline(level, color="0.2", lw=0.8, ls="--")
        if np.isfinite(baseline) or np.isfinite(chance):
            label = "baseline (learns nothing)"
            extra.append(Line2D([], [], color="0.2", lw=0.8, ls="--", label=label))
        losses = [*m["eval_loss"], baseline]
        if _spans_decades(losses):
            loss_ax.set_yscale("log")
            if not _spans_decades(losses, factor=100):
                _plain_log_labels(loss_ax.yaxis)
        loss_ax.set_ylabel("eval loss")
        acc_ax.set_ylabel("eval accuracy")
        acc_ax.set_ylim(-0.02, 1.02)
        for ax in axes[0]:
            ax.set_xlabel("training step")
            ax.set_xlim(left=0)
        _cell_legend(fig, cells, extra)
        _note(
            fig,
            _join(_setting(fixed), f"mean and min\N{EN DASH}max over {_seeds_text(m, key)}"),
        )
    return fig


# --- 3. where each cell succeeds ---------------------------------------------------------------


def success_heatmap_figure(summary: pd.DataFrame, value: str = "accuracy") -> Figure:
    """Final eval accuracy (value="accuracy") or the fraction of runs that reached the task's
    solved accuracy (value="solved": `solved_step` set) over seq_len x hidden size, one panel
    per cell, the mean over seeds written in each square; one colour scale, 0 to 1.

    A failed run (a crash) is no result and is left out. A diverged run is a failure to learn:
    its accuracy counts as 0 (its solved_step as recorded); a '*' marks the squares that hold one.
    """
    if value not in ("accuracy", "solved"):
        raise ValueError(f"value must be 'accuracy' or 'solved', got {value!r}")
    col = "final_eval_accuracy" if value == "accuracy" else "solved_step"
    cols = ["cell", "seq_len", "hidden_size", "status", col]
    s = _once_each(_require(summary, cols, "summary"), "summary")
    s = s[s["status"] != "failed"]
    if s.empty:
        raise ValueError("no summary rows of a run that finished (every run failed)")
    fixed = _single(s, ("task",), "summary")
    _warn_mixed(s, "summary", allowed=("seq_len", "hidden_size"))
    diverged = s["status"] == "diverged"
    if value == "accuracy":
        score = _finite(s, [col])[col].mask(diverged, 0.0)
    else:
        score = s[col].notna().astype(float)
    s = s.assign(_score=score, _diverged=diverged)
    grid = s.groupby(["cell", "hidden_size", "seq_len"]).agg(
        score=("_score", "mean"), diverged=("_diverged", "any")
    )
    cells = cell_order(s["cell"].unique())
    lengths = sorted(s["seq_len"].unique().tolist())
    sizes = sorted(s["hidden_size"].unique().tolist())
    nrows, ncols = _grid(len(cells))
    # at least 3 squares wide: a one-length panel is otherwise narrower than its x label
    width = min(DOUBLE_COLUMN, 0.9 + ncols * (0.42 * max(len(lengths), 3) + 0.35))
    height = 0.45 + nrows * (0.3 * len(sizes) + 0.55)
    label = "final eval accuracy" if value == "accuracy" else "fraction of runs solved"
    with style():
        fig, axes = _figure(width, height, nrows, ncols, sharey=True)
        image, used = None, []
        for i, ax, cell in _cell_panels(axes, cells):
            used.append(ax)
            table = grid.loc[cell] if cell in grid.index.get_level_values(0) else grid.iloc[:0]
            z = np.full((len(sizes), len(lengths)), np.nan)
            star = np.zeros_like(z, dtype=bool)
            for (size, length), row in table.iterrows():
                z[sizes.index(size), lengths.index(length)] = row["score"]
                star[sizes.index(size), lengths.index(length)] = row["diverged"]
            image = ax.imshow(
                np.ma.masked_invalid(z), vmin=0, vmax=1, origin="lower", aspect="auto"
            )
            for (r, c), v in np.ndenumerate(z):
                if np.isfinite(v):
                    ax.text(
                        c,
                        r,
                        f"{v:.2f}" + ("*" if star[r, c] else ""),
                        ha="center",
                        va="center",
                        fontsize=6.5,
                        color="white" if v < 0.6 else "black",
                    )
            ax.set_title(cell, loc="left", color=cell_color(cell, cells))
            ax.set_xticks(range(len(lengths)), [str(x) for x in lengths])
            ax.set_yticks(range(len(sizes)), [str(x) for x in sizes])
            ax.tick_params(length=0)
            for spine in ax.spines.values():
                spine.set_visible(False)
            if i % ncols == 0:
                ax.set_ylabel("hidden size $m$")
            if i + ncols >= len(cells):
                ax.set_xlabel(_length_label(fixed.get("task")))
        bar = fig.colorbar(image, ax=used, shrink=0.9, aspect=15, pad=0.02)
        bar.set_label(label)
        bar.outline.set_visible(False)
        notes = [
            str(fixed.get("task", "")),
            f"mean over {_seeds_text(s, _run_key(s), ('cell', 'hidden_size', 'seq_len'))}",
        ]
        if s["_diverged"].any():
            notes.append(
                "* includes diverged runs" + (", counted as 0" if value == "accuracy" else "")
            )
        _note(fig, _join(*notes))
    return fig


# --- 4. gradient flow during training ----------------------------------------------------------


def gradient_flow_figure(gradients: pd.DataFrame, summary: pd.DataFrame | None = None) -> Figure:
    """log10 ||dL/ds_t|| over (snapshot step, t), one panel per cell, one colour scale.

    Each square: the batch median, mean over seeds. Rows are the snapshot steps (evenly spaced
    whatever the schedule, labelled with the step); grey squares are -inf in some seed: the
    float32 gradient training sees is exactly 0 there (it underflowed, below ~1e-45), or the
    state does not reach the loss.
    """
    cols = ["cell", "step", "t", GRAD]
    g = _ok_runs(_require(gradients, cols, "gradients"), summary, "gradients")
    fixed = _single(g, ("task", "seq_len", "hidden_size"), "gradients")
    _warn_mixed(g, "gradients")
    key = _run_key(g, summary)
    cells = cell_order(g["cell"].unique())
    ts = sorted(g["t"].unique().tolist())
    grids = {  # a mean with -inf in any run is -inf: grey, not the other runs' mean
        cell: g[g["cell"] == cell]
        .groupby(["step", "t"])[GRAD]
        .mean()
        .unstack("t")
        .reindex(columns=ts)
        .replace([np.inf, -np.inf], np.nan)
        for cell in cells
    }
    values = np.concatenate([x.to_numpy(dtype=float).ravel() for x in grids.values()])
    if np.isnan(values).all():
        raise ValueError("no finite gradient norm in the gradients rows")
    vmin, vmax = np.nanmin(values), np.nanmax(values)
    cmap = mpl.colormaps["viridis"].with_extremes(bad="0.88")
    nrows, ncols = _grid(len(cells))
    with style():
        fig, axes = _figure(DOUBLE_COLUMN, 0.5 + 1.75 * nrows, nrows, ncols)
        image, used = None, []
        for i, ax, cell in _cell_panels(axes, cells):
            used.append(ax)
            z = grids[cell]
            image = ax.imshow(
                np.ma.masked_invalid(z.to_numpy(dtype=float)),
                cmap=cmap,
                vmin=vmin,
                vmax=vmax,
                origin="lower",
                aspect="auto",
                interpolation="nearest",
                extent=(ts[0] - 0.5, ts[-1] + 0.5, -0.5, len(z) - 0.5),
            )
            steps = z.index.tolist()
            every = max(1, math.ceil(len(steps) / 10))
            ax.set_yticks(range(0, len(steps), every), [str(s) for s in steps[::every]])
            ax.yaxis.set_minor_locator(NullLocator())
            ax.set_title(cell, loc="left", color=cell_color(cell, cells))
            for spine in ax.spines.values():
                spine.set_visible(False)
            if i % ncols == 0:
                ax.set_ylabel("training step")
            if i + ncols >= len(cells):
                ax.set_xlabel("time step $t$")
        bar = fig.colorbar(image, ax=used, shrink=0.9, aspect=20, pad=0.02)
        bar.set_label(r"$\log_{10}\,\|\partial L / \partial s_t\|$")
        bar.outline.set_visible(False)
        _note(
            fig,
            _join(
                _setting(fixed),
                f"batch median, mean over {_seeds_text(g, key)}; grey: gradient exactly 0",
            ),
        )
    return fig


# --- 5. memory horizon against sequence length -------------------------------------------------


def _dodge(x: np.ndarray, i: int, n: int, log: bool, span: float) -> np.ndarray:
    """Shift cell i of n sideways a little, so markers at the same seq_len do not hide."""
    shift = (i - (n - 1) / 2) * 0.012 * span
    return x * 10**shift if log else x + shift


def _shade_above(ax, cap: pd.Series) -> None:
    """Grey above the sequence's length (cap: length by seq_len): a horizon found nowhere in
    the sequence is drawn at the length, and on the grey's edge it reads as censored, not as
    a horizon that grows with T. The axis is raised to show some of the grey."""
    bottom, top = ax.get_ylim()
    log = ax.get_yscale() == "log"
    high = cap.max()
    top = max(top, high * 1.6 if log else high + 0.15 * (high - bottom))
    x = cap.index.to_numpy(dtype=float)
    if len(x) == 1:
        ax.axhspan(cap.iloc[0], top, color=CAP_SHADE, lw=0, zorder=0)
    else:
        left, right = ax.get_xlim()
        xs = np.r_[left, x, right]
        ys = np.interp(xs, x, cap.to_numpy(dtype=float))  # flat past the ends
        ax.fill_between(xs, ys, top, color=CAP_SHADE, lw=0, zorder=0)
        ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)


def memory_horizon_figure(summary: pd.DataFrame, jacobians: pd.DataFrame | None = None) -> Figure:
    """Memory horizon and Jacobian decay rate against seq_len, per cell, at init and at the end.

    The horizon is the first lag at which the batch-median ||ds_T/ds_t|| falls below the
    diagnostics threshold, the sequence's length where it never does: a point on that cap
    means a horizon of at least the length. With `jacobians` (only their largest lag is read)
    the cap is drawn as a dotted line; the summary alone does not say it, since a task's
    sequence may be longer than its seq_len (copy: the delay + 20). Markers: the mean over
    seeds (ok runs); bars: min to max.
    """
    cols = ["cell", "seq_len", "status"] + [
        f"{q}_{w}" for q in ("memory_horizon", "log10_decay_rate") for w in ("init", "final")
    ]
    s = _ok_runs(_require(summary, cols, "summary"), None, "summary")
    fixed = _single(s, ("task", "hidden_size"), "summary")
    _warn_mixed(s, "summary", allowed=("seq_len",))
    s = _finite(s, cols[3:])
    cells = cell_order(s["cell"].unique())
    lengths = np.array(sorted(s["seq_len"].unique().tolist()), dtype=float)
    log_x = _spans_decades(lengths)
    span = math.log10(lengths.max() / lengths.min()) if log_x else np.ptp(lengths)
    span = span or 0.4 * lengths[0]  # one length: the axis is drawn 20% either side of it
    cap = pd.Series(dtype=float)
    if jacobians is not None and len(jacobians) and {"seq_len", "lag"} <= set(jacobians.columns):
        key = _run_key(s, jacobians)
        runs = jacobians[jacobians[key].isin(s[key])]
        cap = runs.groupby("seq_len")["lag"].max().sort_index()
    with style():
        fig, axes = _figure(DOUBLE_COLUMN, 2.4, 1, 2, sharex=True)
        h_ax, r_ax = axes[0]
        extra = [
            Line2D([], [], color="0.3", ls="--", marker="o", mfc="white", label="at init"),
            Line2D([], [], color="0.3", ls="-", marker="o", label="after training"),
        ]
        if len(cap) == 1:  # one length: a line through one point would not show
            h_ax.axhline(cap.iloc[0], **REF_LINE)
        elif len(cap):
            h_ax.plot(cap.index, cap.to_numpy(), **REF_LINE)
        if len(cap):
            extra.append(
                Patch(
                    facecolor=CAP_SHADE,
                    edgecolor=REF_LINE["color"],
                    lw=REF_LINE["lw"],
                    ls=REF_LINE["ls"],
                    label="past the sequence's end:\na horizon on its edge\nis a lower bound",
                )
            )
        r_ax.axhline(0.0, **REF_LINE)
        for i, cell in enumerate(cells):
            stats = s[s["cell"] == cell].groupby("seq_len")[cols[3:]].agg(["mean", "min", "max"])
            x = _dodge(stats.index.to_numpy(dtype=float), i, len(cells), log_x, span)
            color = cell_color(cell, cells)
            for ax, quantity in ((h_ax, "memory_horizon"), (r_ax, "log10_decay_rate")):
                for when, ls, face in (("init", "--", "white"), ("final", "-", color)):
                    st = stats[f"{quantity}_{when}"]
                    ax.errorbar(
                        x,
                        st["mean"],
                        yerr=[st["mean"] - st["min"], st["max"] - st["mean"]],
                        color=color,
                        ls=ls,
                        marker="o",
                        mfc=face,
                        mew=0.9,
                        lw=1.0,
                        elinewidth=0.7,
                        capsize=0,
                    )
        if log_x:
            for ax in axes[0]:
                ax.set_xscale("log")
        if len(lengths) == 1:  # else the axis would span only the dodge's few hundredths
            h_ax.set_xlim(lengths[0] - span / 2, lengths[0] + span / 2)  # (x is shared)
        if _spans_decades([*s["memory_horizon_init"], *s["memory_horizon_final"]]):
            h_ax.set_yscale("log")
            _plain_log_labels(h_ax.yaxis)  # 5, 10, 20, 50, 100: values read off, not 10^1
        if len(cap):
            _shade_above(h_ax, cap)
        for ax in axes[0]:
            ax.set_xticks(lengths, [str(int(x)) for x in lengths])
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xlabel(_length_label(fixed.get("task")))
        h_ax.set_ylabel("memory horizon (steps)")
        r_ax.set_ylabel(r"decay rate ($\log_{10}$/step)")
        _cell_legend(fig, cells, extra)
        _note(
            fig,
            _join(
                _setting(fixed),
                "mean and min\N{EN DASH}max over "
                + _seeds_text(s, _run_key(s), ("cell", "seq_len")),
            ),
        )
    return fig


# --- 6. initialisation matters -----------------------------------------------------------------


def _stacked(runs: pd.DataFrame, x: str, y: str, x_span: float) -> list[tuple[tuple, int]]:
    """Points of `runs` that hide others (within 1.5% of the x span and 0.015 in y, about a
    marker), with how many runs each stands for: two IRNNs at rate 0 and chance accuracy
    would otherwise read as one run."""
    groups: list[list[tuple[float, float]]] = []
    for px, py in zip(runs[x], runs[y], strict=True):
        near = (
            g for g in groups if abs(g[0][0] - px) <= 0.015 * x_span and abs(g[0][1] - py) <= 0.015
        )
        group = next(near, None)
        if group is None:
            groups.append([(px, py)])
        else:
            group.append((px, py))
    return [(g[0], len(g)) for g in groups if len(g) > 1]


def init_figure(summary: pd.DataFrame, jacobians: pd.DataFrame | None = None) -> Figure:
    """The Jacobian decay rate at initialisation against final accuracy, one marker per run,
    coloured by cell: do the initialisations that keep ||ds_T/ds_t|| from decaying learn?

    For the variants of one task/seq_len (e.g. rnn, rnn_orth, irnn, lstm, lstm_chrono). A
    diverged run is drawn as a cross at accuracy 0; failed runs are left out. With `jacobians`,
    a second panel shows the decay curves at initialisation (as in `vanishing_figure`).
    """
    cols = ["cell", "status", "log10_decay_rate_init", "final_eval_accuracy"]
    s = _once_each(_require(summary, cols, "summary"), "summary")
    s = s[s["status"] != "failed"]
    if s.empty:
        raise ValueError("no summary rows of a run that finished (every run failed)")
    fixed = _single(s, ("task", "seq_len", "hidden_size"), "summary")
    s = _finite(s, cols[2:])
    cells = cell_order(s["cell"].unique())
    jac = None
    if jacobians is not None and len(jacobians):
        key = _run_key(s, jacobians)
        jac = _require(jacobians, ["cell", "step", "lag", f"{JAC}_median"], "jacobians")
        jac = jac[(jac["step"] == 0) & jac[key].isin(s.loc[s["status"] == "ok", key])]
        jac = jac if len(jac) else None
    if jac is not None:
        _warn_mixed(jac, "jacobians")
    with style():
        if jac is None:
            fig, axes = _figure(SINGLE_COLUMN + 0.9, 2.4)
        else:
            fig, axes = _figure(DOUBLE_COLUMN, 2.4, 1, 2)
        ax = axes[0, 0]
        ax.axvline(0.0, **REF_LINE)
        rates = s["log10_decay_rate_init"]
        span = (rates.max() - rates.min()) if rates.notna().any() else 0.0
        for cell in cells:
            c = s[s["cell"] == cell]
            ok, bad = c[c["status"] == "ok"], c[c["status"] == "diverged"]
            color = cell_color(cell, cells)
            ax.scatter(
                ok["log10_decay_rate_init"],
                ok["final_eval_accuracy"],
                s=16,
                color=color,
                edgecolors="white",
                linewidths=0.4,
                label=cell,
                zorder=3,
            )
            if len(bad):
                ax.scatter(
                    bad["log10_decay_rate_init"], np.zeros(len(bad)), s=18, color=color, marker="x"
                )
            for (x, y), n in _stacked(ok, "log10_decay_rate_init", "final_eval_accuracy", span):
                ax.annotate(
                    f"\N{MULTIPLICATION SIGN}{n}",
                    (x, y),
                    xytext=(4, 3),
                    textcoords="offset points",
                    color=color,
                    fontsize="small",
                )
        chance = _baseline(s, "run_id", s.get("run_id", pd.Series()), "baseline_accuracy")
        if np.isfinite(chance):
            ax.axhline(chance, color="0.2", lw=0.8, ls="--")
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.set_xlabel(r"decay rate at init ($\log_{10}$/step)")
        ax.set_ylabel("final eval accuracy")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title("one marker per run", loc="left")
        extra = []
        if np.isfinite(chance):
            extra.append(Line2D([], [], color="0.2", lw=0.8, ls="--", label="chance accuracy"))
        if (s["status"] == "diverged").any():
            extra.append(
                Line2D([], [], color="0.3", marker="x", ls="", label="diverged (accuracy 0)")
            )
        if jac is not None:
            ax2 = axes[0, 1]
            _draw_decay(ax2, jac, cells, _summary_rates(s, jac[key].unique(), key, "init"))
            ax2.get_legend().remove()
            ax2.set_title("decay at initialisation", loc="left")
            norm = NORM_LABELS.get(str(jac["norm"].iloc[0]) if "norm" in jac else "2", "")
            ax2.set_ylabel(r"$\log_{10}\,\|\partial s_T / \partial s_t\|" + norm + "$")
        marker = {"marker": "o"} if jac is not None else {"marker": "o", "ls": ""}
        _cell_legend(fig, cells, extra, **marker)
        curves = ""
        if jac is not None:
            curves = f"right: batch median, q10\N{EN DASH}q90, mean over {_seeds_text(jac, key)}"
        _note(fig, _join(_setting(fixed), curves))
    return fig


# --- scripts -----------------------------------------------------------------------------------

# option (its argparse dest) -> the config column it filters on, present in every loaded table
FILTERS = {
    "task": "task",
    "seq_len": "seq_len",
    "hidden_size": "hidden_size",
    "cell": "cell",
    "seed": "seed",
    "steps": "steps",
    "norm": "diagnostics_norm",
}


REFERENCE_FIGURES = Path(__file__).resolve().parents[1] / "results" / "figures"
DIAGNOSTICS = ("jacobians", "gradients", "lyapunov")  # the tables that diagnostics write


def figure_parser(description: str, prog: str | None = None) -> argparse.ArgumentParser:
    """The options every plot script takes: the sweep folder, where to write, and filters."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("sweep_dir", type=Path, help="a sweep (or run) folder")
    parser.add_argument(
        "--out",
        type=Path,
        help="output folder; default: SWEEP_DIR/figures (the reference figures under "
        "results/figures/ are make reproduce's)",
    )
    parser.add_argument("--name", help="file stem of the figure (.png and .pdf)")
    parser.add_argument("--task", help="only this task")
    parser.add_argument("--seq-len", type=int, help="only this sequence length")
    parser.add_argument("--hidden-size", type=int, help="only this hidden size")
    parser.add_argument("--cell", nargs="+", action="extend", help="only these cells")
    parser.add_argument("--seed", nargs="+", action="extend", type=int, help="only these seeds")
    parser.add_argument("--steps", type=int, help="only runs of this many training steps")
    parser.add_argument("--norm", choices=("2", "fro"), help="only this diagnostics.norm")
    return parser


def select(
    tables: dict[str, pd.DataFrame],
    args: argparse.Namespace,
    one_of: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
) -> dict[str, pd.DataFrame]:
    """Apply the filters in `args` to every table; for each column of `one_of` left unset that
    holds several values, keep one (the first task, the largest seq_len, hidden size or
    steps, among the runs that did not fail) and say so through `log`, so that a script draws
    something sensible on a sweep."""
    tables = dict(tables)
    for option, col in FILTERS.items():
        wanted = getattr(args, option, None)
        if wanted is None:
            continue
        wanted = wanted if isinstance(wanted, list) else [wanted]
        for name, df in tables.items():
            if col not in df.columns:
                raise ValueError(f"the {name} table has no column {col} to filter on")
            absent = [w for w in wanted if not (df[col] == w).any()]
            if absent and not df.empty:  # a typo among several values is not dropped silently
                found = ", ".join(map(str, sorted(df[col].dropna().unique().tolist())))
                flag = "--" + option.replace("_", "-")
                raise ValueError(
                    f"no {name} rows with {flag} {' '.join(map(str, absent))}; "
                    f"the runs have {found}"
                )
            tables[name] = df[df[col].isin(wanted)]
    for col in one_of:  # each pick among the runs the previous ones kept (adding's lengths)
        reference = tables.get("summary", next(iter(tables.values())))
        if getattr(args, col, None) is not None or col not in reference.columns:
            continue
        every = set(reference[col].dropna())
        if "status" in reference.columns:  # a value only failed runs have has nothing to draw
            reference = reference[reference["status"] != "failed"]
        found = sorted(reference[col].dropna().unique().tolist())
        if not found or (len(found) == 1 and every == set(found)):
            continue
        chosen = found[0] if col == "task" else found[-1]
        if log is not None and len(found) > 1:
            option = "--" + col.replace("_", "-")
            log(
                f"several {col} values ({', '.join(map(str, found))}): plotting {chosen} ({option})"
            )
        tables = {n: df[df[col] == chosen] if col in df.columns else df for n, df in tables.items()}
    return tables


def script_main(
    argv: Sequence[str] | None,
    *,
    description: str,
    name: str | Callable[[argparse.Namespace], str],
    tables: Sequence[str],
    draw: Callable[[dict[str, pd.DataFrame], argparse.Namespace], Figure],
    one_of: Sequence[str] = ("task", "seq_len", "hidden_size", "steps"),
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    prog: str | None = None,
) -> int:
    """The body of every `scripts/plot_*.py`: parse, load `tables` with `load_runs`, filter,
    draw, save; prints the paths written. Returns 0, 1 if there is nothing to plot (the reason
    on stderr), 2 if the folder does not exist. `prog` names the script in its messages (by
    default sys.argv[0], which is the caller's when another script calls `main`)."""
    parser = figure_parser(description, prog)
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    prog = parser.prog
    if not args.sweep_dir.is_dir():
        print(f"{prog}: error: {args.sweep_dir} is not a folder", file=sys.stderr)
        return 2
    out = args.out or args.sweep_dir / "figures"
    if args.out is None and out.resolve() == REFERENCE_FIGURES:  # `plot_x.py results`
        print(
            f"{prog}: error: {out} holds the reference figures (make reproduce's): give --out",
            file=sys.stderr,
        )
        return 2
    try:
        with warnings.catch_warnings():  # and restores it: one line per warning, not two
            warnings.showwarning = lambda message, *_: print(
                f"{prog}: warning: {message}", file=sys.stderr
            )
            loaded = {}
            for table in tables:
                loaded[table] = load_runs(args.sweep_dir, table=table)
                if loaded[table].empty:
                    why = " (runs with diagnostics.enabled=false write none)"
                    why = why if table in DIAGNOSTICS else ""
                    raise ValueError(
                        f"no finished run under {args.sweep_dir} has a {table} table{why}"
                    )
            loaded = select(
                loaded, args, one_of, log=lambda m: print(f"{prog}: {m}", file=sys.stderr)
            )
            fig = draw(loaded, args)
    except ValueError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    stem = args.name or (name(args) if callable(name) else name)
    try:
        paths = save(fig, out, stem)
    except OSError as e:
        print(
            f"{prog}: error: cannot write the figure to {out}: {e.strerror or e}", file=sys.stderr
        )
        return 2
    for path in paths:
        print(path)
    return 0
