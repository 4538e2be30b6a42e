"""The figures, on synthetic tables: each draws what it claims and writes a PNG and a PDF."""

from __future__ import annotations

import importlib.util
import itertools
import math
import os
import runpy
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_hex
from matplotlib.image import AxesImage

from rnnexp import plots
from rnnexp.results import load_runs, write_table

REPO = Path(__file__).resolve().parents[1]
CELLS = ("lstm", "rnn", "gru")  # not in legend order, on purpose
SEQ_LENS, SIZES, SEEDS, STEPS = (10, 20), (8, 16), (0, 1), 20
SNAPSHOTS = (0, 5, STEPS)
RATE = {"rnn": -0.2, "gru": -0.1, "lstm": -0.05}  # log10 decay per step at init
CONFIG = [
    "cell",
    "task",
    "seed",
    "hidden_size",
    "init",
    "init_scale",
    "nonlinearity",
    "forget_bias",
    "chrono_max_len",
    "steps",
    "batch_size",
    "optimizer",
    "lr",
    "seq_len",
    "diagnostics_norm",
    "device",
]


def accuracy(cell: str, seq_len: int, hidden: int, seed: int) -> float:
    """A final accuracy the heatmap test can recompute: falls with length, rises with size."""
    return round(0.9 - 0.3 * CELLS.index(cell) - seq_len / 100 + hidden / 100 + 0.04 * seed, 3)


def make_runs() -> list[dict[str, pd.DataFrame]]:
    """Per run, its tables as the trainer writes them: summary with config columns, the
    per-step tables without (load_runs adds those)."""
    runs = []
    for cell in CELLS:
        for seq_len in SEQ_LENS:
            for hidden in SIZES:
                for seed in SEEDS:
                    runs.append(make_run(cell, seq_len, hidden, seed))
    return runs


def make_run(cell: str, seq_len: int, hidden: int, seed: int) -> dict[str, pd.DataFrame]:
    run_id = f"{cell}-{seq_len}-{hidden}-{seed}"
    rate = RATE[cell] + 0.01 * seed
    config = {
        "cell": cell,
        "task": "adding",
        "seed": seed,
        "hidden_size": hidden,
        "init": "default",
        "init_scale": 1.0,
        "nonlinearity": "tanh" if cell == "rnn" else None,
        "forget_bias": math.nan,
        "chrono_max_len": math.nan,
        "steps": STEPS,
        "batch_size": 8,
        "optimizer": "adam",
        "lr": 1e-3,
        "seq_len": seq_len,
        "diagnostics_norm": "2",
        "device": "cpu",
        "run_id": run_id,
    }
    acc = accuracy(cell, seq_len, hidden, seed)
    results = {
        "status": "ok",
        "error": None,
        "steps_done": STEPS,
        "final_eval_loss": 0.2 * (1 - acc) + 1e-3,
        "final_eval_accuracy": acc,
        "best_eval_accuracy": acc,
        "baseline_loss": 1 / 6,
        "baseline_accuracy": 0.0784,
        "solved_step": 10 if acc >= 0.5 else None,
        "n_params": 100 * hidden,
        "memory_horizon_init": min(seq_len, -3 / rate),
        "log10_decay_rate_init": rate,
        "lyapunov_exponent_init": rate * math.log(10),
        "memory_horizon_final": min(seq_len, -6 / rate),
        "log10_decay_rate_final": rate / 2,
        "lyapunov_exponent_final": rate / 2 * math.log(10),
        "wall_seconds": 1.0,
    }
    summary = pd.DataFrame([config | results]).astype(
        {"steps_done": "Int64", "solved_step": "Int64", "n_params": "Int64"}
    )
    steps = np.arange(0, STEPS + 1, 5)
    metrics = pd.DataFrame(
        {
            "step": steps,
            "train_loss": np.r_[np.nan, np.linspace(1.0, 0.2, len(steps) - 1)],
            "grad_norm": 1.0,
            "grad_norm_max": 1.5,
            "eval_loss": np.linspace(2.0, results["final_eval_loss"], len(steps)),
            "eval_accuracy": np.linspace(0.0, acc, len(steps)),
            "wall_seconds": steps / 10,
        }
    )
    t = np.arange(seq_len + 1)
    lag = seq_len - t
    jac, grad = [], []
    for step in SNAPSHOTS:
        r = rate if step == 0 else rate / 2
        median = r * lag.astype(float)
        if cell == "rnn" and step == STEPS:
            median[0] = -np.inf  # a dead unit: log10 of an exactly zero norm
        jac.append(
            pd.DataFrame(
                {
                    "step": step,
                    "t": t,
                    "lag": lag,
                    "norm": "2",
                    "log10_jacobian_norm_median": median,
                    "log10_jacobian_norm_mean": median,
                    "log10_jacobian_norm_q10": median - 0.2,
                    "log10_jacobian_norm_q90": median + 0.2,
                }
            )
        )
        g = median - 1.0
        g[-1] = -np.inf if step == 0 else g[-1]  # a state that does not reach the loss
        grad.append(
            pd.DataFrame(
                {
                    "step": step,
                    "t": t,
                    "log10_grad_norm_median": g,
                    "log10_grad_norm_mean": g,
                    "log10_grad_norm_q10": g - 0.3,
                    "log10_grad_norm_q90": g + 0.3,
                }
            )
        )
    return {
        "summary": summary,
        "metrics": metrics,
        "jacobians": pd.concat(jac, ignore_index=True),
        "gradients": pd.concat(grad, ignore_index=True),
    }


def as_loaded(runs: list[dict[str, pd.DataFrame]], table: str) -> pd.DataFrame:
    """What load_runs returns: per-step rows carry their run's config columns."""
    frames = []
    for run in runs:
        if table == "summary":
            frames.append(run["summary"])
        else:
            config = run["summary"][[*CONFIG, "run_id"]]
            frames.append(config.merge(run[table], how="cross"))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    runs = make_runs()
    return {
        name: as_loaded(runs, name) for name in ("summary", "metrics", "jacobians", "gradients")
    }


@pytest.fixture(scope="module")
def one(tables) -> dict[str, pd.DataFrame]:
    """The tables of one setting (seq_len 20, hidden size 16): two seeds per cell."""
    return {k: v[(v["seq_len"] == 20) & (v["hidden_size"] == 16)] for k, v in tables.items()}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A sweep folder in the trainer's layout, from the synthetic tables."""
    root = tmp_path_factory.mktemp("sweep")
    for run in make_runs():
        run_dir = root / run["summary"]["run_id"].iloc[0]
        run_dir.mkdir()
        (run_dir / "config.yaml").write_text("seed: 0\n")
        for name, df in run.items():
            write_table(df, run_dir / f"{name}.parquet")
    return root


def labelled_lines(ax) -> dict[str, str]:
    """label -> colour of the lines drawn with a label (reference lines have none)."""
    return {
        line.get_label(): to_hex(line.get_color())
        for line in ax.get_lines()
        if not line.get_label().startswith("_")
    }


def panels(fig) -> list:
    """The figure's data axes, colorbars left out."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


FIGURES = {
    "vanishing": lambda t: plots.vanishing_figure(t["jacobians"], t["summary"]),
    "learning_curves": lambda t: plots.learning_curves_figure(t["metrics"], t["summary"]),
    "success_accuracy": lambda t: plots.success_heatmap_figure(t["summary"]),
    "gradient_flow": lambda t: plots.gradient_flow_figure(t["gradients"], t["summary"]),
    "memory_horizon": lambda t: plots.memory_horizon_figure(t["summary"], t["jacobians"]),
    "init": lambda t: plots.init_figure(t["summary"], t["jacobians"]),
}
ALL_SETTINGS = {"success_accuracy", "memory_horizon"}


@pytest.mark.parametrize("name", FIGURES)
def test_figure_saves_png_and_pdf(name, tables, one, tmp_path):
    data = tables if name in ALL_SETTINGS else one
    if name == "memory_horizon":
        data = {k: v[v["hidden_size"] == 16] for k, v in tables.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is pooled that should not be
        fig = FIGURES[name](data)
    paths = plots.save(fig, tmp_path / "figs", name)
    assert [p.name for p in paths] == [f"{name}.png", f"{name}.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    assert all(p.stat().st_size > 1000 for p in paths)
    assert not list((tmp_path / "figs").glob(".*"))  # no temporary file left behind


def test_vanishing_two_panels_one_line_per_cell(one):
    fig = plots.vanishing_figure(one["jacobians"], one["summary"])
    axes = panels(fig)
    assert len(axes) == 2
    for ax, when in zip(axes, ("init", "final"), strict=True):
        lines = labelled_lines(ax)
        assert [label.split()[0] for label in lines] == ["rnn", "gru", "lstm"]  # legend order
        # the legend gives the summary's decay rate, averaged over the two seeds
        rate = one["summary"].groupby("cell")[f"log10_decay_rate_{when}"].mean()["gru"]
        label = next(lab for lab in lines if lab.startswith("gru"))
        assert label.endswith(f"{rate:.3f}".replace("-", "\N{MINUS SIGN}"))
    # the median line at init is the mean of the seeds' medians
    gru = next(line for line in axes[0].get_lines() if line.get_label().startswith("gru"))
    x, y = gru.get_data()
    assert np.allclose(y, np.mean([RATE["gru"], RATE["gru"] + 0.01]) * np.asarray(x))


def test_vanishing_fits_the_rate_without_a_summary(one):
    fig = plots.vanishing_figure(one["jacobians"])
    label = next(lab for lab in labelled_lines(panels(fig)[0]) if lab.startswith("lstm"))
    assert label.endswith(f"{RATE['lstm'] + 0.005:.3f}".replace("-", "\N{MINUS SIGN}"))


def test_vanishing_refuses_to_pool_lengths(tables):
    with pytest.raises(ValueError, match="several seq_len values"):
        plots.vanishing_figure(tables["jacobians"])


def test_each_automatic_pick_is_among_the_runs_the_previous_one_kept():
    """adding at T=10 (m=8 and 16), copy at T=20 (m=32): the first task is adding, and then
    the largest of adding's lengths and sizes, not of the whole folder's (no rows at all)."""
    runs = [("adding", 10, 8), ("adding", 10, 16), ("copy", 20, 32)]
    summary = pd.DataFrame(runs, columns=["task", "seq_len", "hidden_size"])
    args = plots.figure_parser("test").parse_args(["folder"])
    said = []
    kept = plots.select({"summary": summary}, args, ("task", "seq_len", "hidden_size"), said.append)
    assert kept["summary"].values.tolist() == [["adding", 10, 16]]
    assert said == [
        "several task values (adding, copy): plotting adding (--task)",
        "several hidden_size values (8, 16): plotting 16 (--hidden-size)",
    ]


def test_cell_colour_is_the_same_in_every_figure(one):
    curves = plots.learning_curves_figure(one["metrics"], one["summary"])
    vanishing = plots.vanishing_figure(one["jacobians"], one["summary"])
    init = plots.init_figure(one["summary"])
    in_curves = labelled_lines(panels(curves)[0])
    in_vanishing = {k.split()[0]: v for k, v in labelled_lines(panels(vanishing)[0]).items()}
    scatter = {
        c.get_label(): to_hex(c.get_facecolor()[0])
        for c in panels(init)[0].collections
        if isinstance(c, PathCollection)
    }
    for cell in CELLS:
        assert in_curves[cell] == in_vanishing[cell] == scatter[cell] == plots.cell_color(cell)
    # and the figure-level legends list the cells in the fixed order
    assert [t.get_text() for t in curves.legends[0].get_texts()][:3] == ["rnn", "gru", "lstm"]


def test_a_pick_is_never_a_value_only_failed_runs_have():
    """Every run at T=50 failed: the longest length with something to draw is 10."""
    runs = [(10, "ok"), (10, "diverged"), (50, "failed")]
    summary = pd.DataFrame(runs, columns=["seq_len", "status"])
    args = plots.figure_parser("test").parse_args(["folder"])
    said = []
    kept = plots.select({"summary": summary}, args, ("seq_len",), said.append)
    assert kept["summary"].seq_len.tolist() == [10, 10]
    assert said == []  # one length left to choose from: nothing to say


def test_cell_colours_and_order():
    assert plots.cell_order(["zeta", "lstm", "alpha", "rnn_orth", "rnn"]) == [
        "rnn",
        "rnn_orth",
        "lstm",
        "alpha",
        "zeta",
    ]
    assert len(set(plots.CELL_COLORS.values())) == len(plots.CELL_COLORS)
    # an unknown cell's colour comes from its name alone: not from the order the names are met
    # in, nor from the process (str hashes are salted per process)
    names = ["mycell", "leaky_rnn", "ugrnn", "mgu"]
    here = [plots.cell_color(name) for name in reversed(names)][::-1]
    assert set(here) <= set(plots.FALLBACK_COLORS)
    probe = f"from rnnexp import plots; print(*(plots.cell_color(n) for n in {names!r}))"
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        command = [sys.executable, "-c", probe]
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        assert result.stdout.split() == here, result.stderr


def test_unknown_cells_of_one_figure_never_share_a_colour():
    """Six fallback colours: two names may hash to one of them (indrnn and leaky_rnn do), and
    then the later in legend order takes the next free one in a figure that has both."""
    assert plots.cell_color("indrnn") == plots.cell_color("leaky_rnn")
    for names in (["indrnn", "leaky_rnn"], ["urnn", "mgu", "sru", "indrnn", "leaky_rnn", "x"]):
        cells = ["lstm", *names]
        colours = [plots.cell_color(c, cells) for c in cells]
        assert len(set(colours)) == len(cells)
        first = plots.cell_order(names)[0]  # the first unknown one in legend order keeps its own
        assert plots.cell_color(first, cells) == plots.cell_color(first)
    assert plots.cell_color("leaky_rnn", ["leaky_rnn", "lstm"]) == plots.cell_color("leaky_rnn")


def test_learning_curves_baseline_and_diverged_runs(one):
    summary, metrics = one["summary"].copy(), one["metrics"].copy()
    bad = summary["run_id"].iloc[0]
    summary.loc[summary["run_id"] == bad, "status"] = "diverged"
    metrics.loc[metrics["run_id"] == bad, "eval_loss"] = 1e6
    with pytest.warns(UserWarning, match=r"metrics: left out 1 diverged \(runs whose status"):
        fig = plots.learning_curves_figure(metrics, summary)
    loss_ax, acc_ax = panels(fig)
    dashed = [line for line in loss_ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and np.allclose(dashed[0].get_ydata(), 1 / 6)
    dashed = [line for line in acc_ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and np.allclose(dashed[0].get_ydata(), 0.0784)  # chance
    assert max(max(line.get_ydata()) for line in loss_ax.get_lines()) < 10  # the run is left out
    kept = metrics[(metrics["run_id"] != bad) & metrics["eval_loss"].notna()]
    lines = {line.get_label(): line for line in loss_ax.get_lines()}
    for cell in CELLS:  # each cell's line: its seeds' mean at every evaluation
        mean = kept[kept["cell"] == cell].groupby("step")["eval_loss"].mean()
        np.testing.assert_allclose(lines[cell].get_xdata(), mean.index)
        np.testing.assert_allclose(lines[cell].get_ydata(), mean.to_numpy(), rtol=1e-12)
    assert loss_ax.get_yscale() == "log"  # 2.0 down to about 0.01: two decades
    assert acc_ax.get_ylim()[1] <= 1.05


def test_learning_curves_loss_over_one_decade_is_log_with_plain_labels(one):
    """A copy-task loss: ln 9 down to near its baseline, a factor of 7."""
    metrics = one["metrics"].copy()
    metrics["eval_loss"] = np.interp(metrics["step"], [0, STEPS], [2.2, 0.28])
    fig = plots.learning_curves_figure(metrics, one["summary"])
    loss_ax = panels(fig)[0]
    assert loss_ax.get_yscale() == "log"
    fig.canvas.draw()
    ticks = loss_ax.yaxis.get_majorticklabels() + loss_ax.yaxis.get_minorticklabels()
    labels = {t.get_text() for t in ticks if t.get_text()}
    assert {"0.3", "0.5", "1", "2"} <= labels and not {"0.4", "0.6"} & labels, labels


def expected_squares(cell: str, score) -> list[str]:
    """A heatmap panel's texts, sorted: per length and size, the seeds' mean of score(acc)."""
    return sorted(
        f"{np.mean([score(accuracy(cell, T, m, s)) for s in SEEDS]):.2f}"
        for T in SEQ_LENS
        for m in SIZES
    )


def square_texts(ax) -> list[str]:
    return sorted(t.get_text() for t in ax.texts)


def test_heatmap_writes_mean_accuracies(tables):
    fig = plots.success_heatmap_figure(tables["summary"])
    axes = panels(fig)
    assert [ax.get_title(loc="left") for ax in axes] == ["rnn", "gru", "lstm"]
    for ax in axes:
        assert square_texts(ax) == expected_squares(ax.get_title(loc="left"), lambda a: a)
        (image,) = ax.get_images()
        assert image.get_clim() == (0, 1)
    assert len(fig.axes) == 4  # three panels, one colorbar


def test_heatmap_of_one_length_keeps_its_x_labels_apart(tables):
    """A one-length panel is one square wide: narrower than its x label, once."""
    summary = tables["summary"][tables["summary"]["seq_len"] == SEQ_LENS[0]]
    fig = plots.success_heatmap_figure(summary)
    fig.draw_without_rendering()  # lays the figure out, as saving it does
    boxes = [ax.xaxis.label.get_window_extent() for ax in panels(fig)]
    assert len(boxes) == 3
    assert all(left.x1 < right.x0 for left, right in itertools.pairwise(boxes))


def test_heatmap_diverged_counts_as_zero_and_solved_fraction(tables):
    summary = tables["summary"].copy()
    first = (summary["cell"] == "rnn") & (summary["seq_len"] == 10) & (summary["hidden_size"] == 8)
    summary.loc[first & (summary["seed"] == 0), "status"] = "diverged"
    summary.loc[first & (summary["seed"] == 1), "status"] = "failed"
    half = (summary["cell"] == "gru") & (summary["seq_len"] == 10) & (summary["hidden_size"] == 8)
    summary.loc[half & (summary["seed"] == 0), "status"] = "diverged"
    fig = plots.success_heatmap_figure(summary)
    texts = [t.get_text() for t in panels(fig)[0].texts]
    assert "0.00*" in texts  # the failed run is no result, the diverged one scored 0
    # one seed of two diverged: the mean counts it as 0, and the square is marked
    assert f"{accuracy('gru', 10, 8, 1) / 2:.2f}*" in [t.get_text() for t in panels(fig)[1].texts]
    solved = plots.success_heatmap_figure(tables["summary"], value="solved")
    for ax in panels(solved):  # the fraction of seeds that reached solved_accuracy (0.5 here)
        assert square_texts(ax) == expected_squares(ax.get_title(loc="left"), lambda a: a >= 0.5)
    with pytest.raises(ValueError, match="value must be"):
        plots.success_heatmap_figure(summary, value="loss")


def test_gradient_flow_shares_one_colour_scale(one):
    fig = plots.gradient_flow_figure(one["gradients"], one["summary"])
    images = [im for ax in panels(fig) for im in ax.get_images() if isinstance(im, AxesImage)]
    assert len(images) == 3
    assert len({im.get_clim() for im in images}) == 1
    assert len(fig.axes) == 4  # one colorbar for all panels
    grid = images[0].get_array()
    assert grid.shape == (len(SNAPSHOTS), 21)
    assert grid.mask[0, -1] and not grid.mask[1, -1]  # -inf is missing, not a colour
    assert [t.get_text() for t in panels(fig)[0].get_yticklabels()] == ["0", "5", "20"]


def test_minus_inf_in_one_seed_is_not_averaged_away(one):
    """A seed whose norm underflowed to 0 makes the mean over seeds -inf, not the other's."""
    seed = one["gradients"]["seed"].min()
    gradients, jacobians = one["gradients"].copy(), one["jacobians"].copy()
    at = (gradients["cell"] == "gru") & (gradients["seed"] == seed) & (gradients["t"] == 3)
    gradients.loc[at & (gradients["step"] == 5), "log10_grad_norm_median"] = -np.inf
    at = (jacobians["cell"] == "gru") & (jacobians["seed"] == seed) & (jacobians["lag"] == 7)
    jacobians.loc[at & (jacobians["step"] == 0), "log10_jacobian_norm_median"] = -np.inf

    fig = plots.gradient_flow_figure(gradients, one["summary"])
    gru = [im for ax in panels(fig) for im in ax.get_images()][1].get_array()
    assert gru.mask[1, 3] and not gru.mask[1, 2] and not gru.mask[0, 3]
    fig = plots.vanishing_figure(jacobians, one["summary"])
    line = next(x for x in panels(fig)[0].get_lines() if x.get_label().startswith("gru"))
    lag, median = line.get_data()
    assert np.isnan(median[lag == 7]).all() and np.isfinite(median[lag == 6]).all()


def test_memory_horizon_init_and_final_per_cell(tables):
    summary = tables["summary"][tables["summary"]["hidden_size"] == 8]
    fig = plots.memory_horizon_figure(summary)
    h_ax, r_ax = panels(fig)
    colours = {to_hex(line.get_color()) for line in r_ax.get_lines() if line.get_marker() == "o"}
    assert colours == {plots.cell_color(c) for c in CELLS}
    final = [line for line in r_ax.get_lines() if line.get_linestyle() == "-"]
    rnn = next(line for line in final if to_hex(line.get_color()) == plots.cell_color("rnn"))
    assert np.allclose(rnn.get_ydata(), (RATE["rnn"] + 0.005) / 2)
    one = tables["summary"].query("hidden_size == 8 and seq_len == 20")  # one length: its cap
    h_ax = panels(plots.memory_horizon_figure(one, tables["jacobians"]))[0]
    caps = [line.get_ydata() for line in h_ax.get_lines() if line.get_linestyle() == ":"]
    assert len(caps) == 1 and list(caps[0]) == [20, 20]  # a line across, not one point
    assert h_ax.get_xlim() == pytest.approx((16, 24))  # around the length, not the dodge's
    diverged = summary.assign(status=np.where(summary.index == summary.index[0], "diverged", "ok"))
    with pytest.warns(UserWarning, match=r"^summary: left out 1 diverged"):  # as the others do
        plots.memory_horizon_figure(diverged)


def test_memory_horizon_shades_past_the_sequence_and_labels_its_log_axis(tables):
    """A horizon on the cap is a lower bound: the grey starts at each length's cap (the
    jacobians' largest lag); a log horizon axis over a decade reads 5, 10, 20 (not only 10)."""
    summary = tables["summary"].query("hidden_size == 8").copy()
    summary["memory_horizon_final"] = np.where(summary["cell"] == "rnn", 4.0, summary["seq_len"])
    fig = plots.memory_horizon_figure(summary, tables["jacobians"])
    h_ax = panels(fig)[0]
    assert h_ax.get_yscale() == "log"
    grey = to_hex(plots.CAP_SHADE)
    shade = [c for c in h_ax.collections if grey in map(to_hex, c.get_facecolor())]
    edge = shade[0].get_paths()[0].vertices
    for length in SEQ_LENS:
        assert edge[np.isclose(edge[:, 0], length), 1].min() == pytest.approx(length)
    assert len(shade) == 1 and h_ax.get_ylim()[1] > max(SEQ_LENS)  # some grey shows
    fig.canvas.draw()
    ticks = h_ax.yaxis.get_majorticklabels() + h_ax.yaxis.get_minorticklabels()
    labels = {t.get_text() for t in ticks if t.get_text()}
    assert {"5", "10", "20"} <= labels and not {"4", "6"} & labels, labels


def test_memory_horizon_pools_runs_per_length(tables):
    """lstm_chrono's chrono_max_len is its seq_len: runs at different lengths are drawn apart,
    so no warning that they were pooled; a difference within one length still warns."""
    summary = tables["summary"].query("hidden_size == 8").copy()
    summary["chrono_max_len"] = summary["seq_len"].astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.memory_horizon_figure(summary)
        plots.success_heatmap_figure(summary)
    summary.loc[summary.index[0], "chrono_max_len"] = 99.0
    cell = summary["cell"].iloc[0]
    with pytest.warns(UserWarning, match=f"^summary: the {cell} runs pooled differ in chrono"):
        plots.memory_horizon_figure(summary)


def test_init_figure_one_marker_per_run(one):
    fig = plots.init_figure(one["summary"], one["jacobians"])
    scatter_ax, decay_ax = panels(fig)
    for c in scatter_ax.collections:
        if isinstance(c, PathCollection):
            runs = one["summary"][one["summary"]["cell"] == c.get_label()]
            assert np.allclose(np.sort(c.get_offsets()[:, 1]), np.sort(runs["final_eval_accuracy"]))
    assert len(labelled_lines(decay_ax)) == len(CELLS)
    dashed = [line for line in scatter_ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and np.allclose(dashed[0].get_ydata(), 0.0784)  # chance
    assert not scatter_ax.texts  # no two runs on one spot


def test_init_figure_says_how_many_runs_share_a_marker(one):
    summary = one["summary"].copy()
    gru = summary["cell"] == "gru"
    summary.loc[gru, "final_eval_accuracy"] = [0.065, 0.066]  # as the two IRNNs: one spot
    summary.loc[gru, "log10_decay_rate_init"] = [0.0, 0.0]
    scatter_ax = panels(plots.init_figure(summary))[0]
    assert [t.get_text() for t in scatter_ax.texts] == ["\N{MULTIPLICATION SIGN}2"]
    assert scatter_ax.texts[0].xy == pytest.approx((0.0, 0.065))


@pytest.mark.parametrize(
    ("call", "table"),
    [
        (lambda e: plots.vanishing_figure(e), "jacobians"),
        (lambda e: plots.learning_curves_figure(e), "metrics"),
        (lambda e: plots.success_heatmap_figure(e), "summary"),
        (lambda e: plots.gradient_flow_figure(e), "gradients"),
        (lambda e: plots.memory_horizon_figure(e), "summary"),
        (lambda e: plots.init_figure(e), "summary"),
    ],
)
def test_empty_table_is_a_value_error(call, table, tables):
    with pytest.raises(ValueError, match=f"no {table} rows") as info:
        call(tables[table].iloc[:0])
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=f"no {table} rows"):
        call(pd.DataFrame())


def test_no_ok_run_is_a_value_error(one):
    summary = one["summary"].assign(status="diverged")
    with pytest.raises(ValueError, match="status ok"):
        plots.learning_curves_figure(one["metrics"], summary)


def test_loaded_tables_match_the_synthetic_ones(sweep, tables):
    """The sweep fixture is what the script tests read: load_runs gives back the tables."""
    loaded = load_runs(sweep, table="jacobians")
    assert len(loaded) == len(tables["jacobians"])
    assert list(loaded.columns[: len(CONFIG)]) == CONFIG


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPTS = {
    "plot_vanishing": ([], "vanishing"),
    # named by the task, so that a folder's adding and copy figures do not overwrite each other
    "plot_learning_curves": (["--seq-len", "10", "--task", "adding"], "learning_curves_adding"),
    "plot_success_heatmap": (["--value", "solved"], "success_solved"),
    "plot_gradient_flow": (["--hidden-size", "8", "--cell", "rnn", "lstm"], "gradient_flow"),
    "plot_init": (["--seed", "0", "1", "--name", "init_variants"], "init_variants"),
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_main(script, sweep, tmp_path, capsys):
    extra, stem = SCRIPTS[script]
    out = tmp_path / "figures"
    assert load_script(script).main([str(sweep), "--out", str(out), *extra]) == 0
    captured = capsys.readouterr()
    printed = captured.out.split()
    if script == "plot_vanishing":  # a whole sweep: it picks one setting, and says so
        note = "plot_vanishing.py: several seq_len values (10, 20): plotting 20 (--seq-len)"
        assert note in captured.err
    assert printed == [str(out / f"{stem}.png"), str(out / f"{stem}.pdf")]
    assert all(Path(p).stat().st_size > 1000 for p in printed)


def test_script_errors(sweep, tmp_path, capsys):
    main = load_script("plot_learning_curves").main
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main([str(tmp_path), "--out", str(tmp_path)]) == 1  # no runs in it
    assert "no finished run" in capsys.readouterr().err
    assert main([str(sweep), "--cell", "nocell", "--out", str(tmp_path)]) == 1
    assert (
        "no metrics rows with --cell nocell; the runs have gru, lstm, rnn"
        in capsys.readouterr().err
    )
    assert main([str(sweep), "--cell", "rnn", "nocell", "--out", str(tmp_path)]) == 1  # a typo
    assert "no metrics rows with --cell nocell; the runs have" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert main([str(sweep), "--out", str(blocked / "figures")]) == 2
    assert f"error: cannot write the figure to {blocked / 'figures'}" in capsys.readouterr().err


def test_script_writes_beside_the_sweep_by_default_and_filters_on_norm(sweep, capsys):
    """Not into results/figures/, where a user's sweep would overwrite the reference figures."""
    main = load_script("plot_vanishing").main
    assert main([str(sweep), "--norm", "fro"]) == 1  # the sweep's snapshots are all spectral
    assert "with --norm fro; the runs have 2" in capsys.readouterr().err
    assert main([str(sweep), "--norm", "2", "--steps", str(STEPS)]) == 0
    assert capsys.readouterr().out.split()[0] == str(sweep / "figures" / "vanishing.png")


def test_script_refuses_to_overwrite_the_reference_figures(sweep, tmp_path, monkeypatch, capsys):
    """`plot_vanishing.py results`: every run under results/, and by default its figure into
    results/figures/, over the committed one. A diagnostics table that no run has says why."""
    results = tmp_path / "results"
    (results / "figures").mkdir(parents=True)
    monkeypatch.setattr(plots, "REFERENCE_FIGURES", results / "figures")
    main = load_script("plot_vanishing").main
    assert main([str(results)]) == 2
    assert "results/figures holds the reference figures (make reproduce's): give --out" in (
        capsys.readouterr().err
    )
    assert not list((results / "figures").iterdir())
    assert main([str(results), "--out", str(tmp_path / "mine")]) == 1  # let through: no runs
    assert "has a jacobians table (runs with diagnostics.enabled=false write none)" in (
        capsys.readouterr().err
    )


def test_script_warnings_take_one_line(sweep, tmp_path, capsys):
    """Runs pooled that differ in lr: the warning as `prog: warning: ...`, not Python's two
    lines (file:line: UserWarning, then the source line)."""
    mixed = tmp_path / "mixed"
    shutil.copytree(sweep, mixed)
    for path in mixed.glob("*/summary.parquet"):
        summary = pd.read_parquet(path)
        if (summary.cell == "rnn").all() and (summary.seed == 1).all():
            write_table(summary.assign(lr=0.5), path)
    main = load_script("plot_vanishing").main
    assert main([str(mixed), "--seq-len", "20", "--hidden-size", "16", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "plot_vanishing.py: warning: jacobians: the rnn runs pooled differ in lr" in err
    assert not any("UserWarning" in line for line in err)


def test_script_runs_as_a_file(sweep, tmp_path, monkeypatch, capsys):
    """`python scripts/plot_X.py ...`, as the README shows: the file's __main__ block, in
    process (a subprocess would spend seconds importing torch through the package). The
    memory-horizon script's test, so that it is not drawn twice."""
    script = REPO / "scripts" / "plot_memory_horizon.py"
    argv = [str(script), str(sweep), "--out", str(tmp_path), "--task", "adding"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(script), run_name="__main__")
    assert done.value.code == 0
    assert capsys.readouterr().out.split() == [
        str(tmp_path / "memory_horizon.png"),
        str(tmp_path / "memory_horizon.pdf"),
    ]


def test_a_run_in_two_folders_counts_once_and_seeds_are_not_runs(sweep, tmp_path, capsys):
    """results/ holding a sweep and its copy: each run once (with a warning), so the note
    says 2 seeds, not 4; runs that differ in steps as well are picked, not pooled."""
    root = tmp_path / "results"
    for name in ("sweep", "copy"):
        shutil.copytree(sweep, root / name)
    main = load_script("plot_learning_curves").main
    args = ["--seq-len", "20", "--hidden-size", "16", "--out", str(tmp_path / "figures")]
    assert main([str(root), *args]) == 0
    err = capsys.readouterr().err
    per_setting = len(CELLS) * len(SEEDS)  # the runs of that length and size
    assert f"warning: metrics: {per_setting} more folder(s) of runs already found" in err
    setting = "seq_len == 20 and hidden_size == 16"
    with pytest.warns(UserWarning, match=f"^metrics: {per_setting} more folder"):
        fig = plots.learning_curves_figure(load_runs(root, table="metrics").query(setting))
    note = " ".join(t.get_text() for t in fig.texts)
    assert "over 2 seeds" in note and "runs)" not in note
    longer = root / "copy"
    for path in longer.glob("*/summary.parquet"):
        write_table(
            pd.read_parquet(path).assign(steps=2 * STEPS, run_id=lambda d: d.run_id + "x"), path
        )
    assert main([str(root), *args]) == 0
    err = capsys.readouterr().err
    assert f"several steps values ({STEPS}, {2 * STEPS}): plotting {2 * STEPS} (--steps)" in err
    with pytest.warns(UserWarning, match="runs pooled differ in steps"):
        mixed = plots.learning_curves_figure(load_runs(root, table="metrics").query(setting))
    assert "over 2 seeds (4 runs)" in " ".join(t.get_text() for t in mixed.texts)


def test_a_failed_copy_of_a_run_does_not_hide_its_finished_one(sweep, tmp_path):
    """The same runs in two folders, the copy whose name sorts first failed (a single run of
    that config that crashed, say): the finished copy is the one drawn, and no cell is lost."""
    root = tmp_path / "results"
    shutil.copytree(sweep, root / "b_sweep")
    shutil.copytree(sweep, root / "a_runs")
    for path in (root / "a_runs").glob("gru-*/summary.parquet"):
        write_table(pd.read_parquet(path).assign(status="failed", error="boom"), path)
    summary = load_runs(root, table="summary")
    metrics = load_runs(root, table="metrics").query("seq_len == 20 and hidden_size == 16")
    with pytest.warns(UserWarning, match="more folder"):
        curves = plots.learning_curves_figure(metrics, summary)
    assert set(labelled_lines(panels(curves)[0])) == set(CELLS)
    with pytest.warns(UserWarning, match="more folder"):
        heatmap = plots.success_heatmap_figure(summary)
    assert [ax.get_title(loc="left") for ax in panels(heatmap)] == ["rnn", "gru", "lstm"]
