"""The training entry point end to end, through the command line as a user runs it."""

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TESTS_CONF, TINY, cli, ok, user_env

from rnnexp.results import load_runs

METRICS = [
    "step",
    "train_loss",
    "grad_norm",
    "grad_norm_max",
    "eval_loss",
    "eval_accuracy",
    "wall_seconds",
]
RESULTS = [
    "status",
    "error",
    "steps_done",
    "final_eval_loss",
    "final_eval_accuracy",
    "best_eval_accuracy",
    "baseline_loss",
    "baseline_accuracy",
    "solved_step",
    "n_params",
    "memory_horizon_init",
    "log10_decay_rate_init",
    "lyapunov_exponent_init",
    "memory_horizon_final",
    "log10_decay_rate_final",
    "lyapunov_exponent_final",
    "torch_threads",
    "onednn_products",
    "wall_seconds",
]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """Every cell on both tasks, a few steps each, in one basic-launcher multirun."""
    out = tmp_path_factory.mktemp("grid")
    result = cli(
        "-m",
        "cell=rnn,irnn,gru,lstm",
        "task=adding,copy",
        *TINY,
        "diagnostics.lyapunov_k=3",
        f"hydra.sweep.dir={out}",
    )
    ok(result)
    return out


def test_every_cell_trains_on_both_tasks(grid):
    summary = load_runs(grid)
    assert sorted(zip(summary.cell, summary.task, strict=True)) == sorted(
        (c, t) for c in ("rnn", "irnn", "gru", "lstm") for t in ("adding", "copy")
    )
    assert (summary.status == "ok").all()
    assert summary.run_id.is_unique
    # a key only the copy runs have stays an integer column, <NA> on the adding runs
    assert summary.n_symbols.dtype == "Int64" and summary.seq_len.dtype == "int64"
    assert summary[summary.task == "copy"].n_symbols.tolist() == [8] * 4
    assert summary[summary.task == "adding"].n_symbols.isna().all()


def test_summary_columns(grid):
    s = load_runs(grid).set_index(["cell", "task"])
    config = ["hidden_size", "init", "lr", "optimizer", "seq_len", "seed", "batch_size", "steps"]
    assert set(config) <= set(s.columns)
    assert list(s.columns[-len(RESULTS) - 1 : -1]) == RESULTS  # then run_dir, added on load
    assert (s.hidden_size == 8).all() and (s.seq_len == 6).all() and (s.steps_done == 6).all()
    # every key the run id hashes has a column, so no two runs can pool unseen in a plot
    assert (s.diagnostics_lyapunov_k == 3).all() and (s.diagnostics_norm == "2").all()
    assert (s.diagnostics_batch_size == 4).all() and (s.batch_size == 8).all()
    assert (s.device == "cpu").all()
    assert s.loc[("irnn", "adding"), "init"] == "identity"
    assert s.loc[("irnn", "adding"), "nonlinearity"] == "relu"
    assert s.loc[("lstm", "adding"), "baseline_loss"] == pytest.approx(1 / 6)
    assert s.loc[("lstm", "copy"), "baseline_loss"] == pytest.approx(10 * math.log(8) / 26)
    assert s.loc[("lstm", "copy"), "baseline_accuracy"] == 1 / 8
    # n_params: 4 gates x (n + m + 2) x m, plus the readout m x out + out
    assert s.loc[("lstm", "adding"), "n_params"] == 4 * (2 + 8 + 2) * 8 + 8 + 1
    assert s.loc[("rnn", "copy"), "n_params"] == (10 + 8 + 2) * 8 + 9 * 8 + 9
    assert s.solved_step.dtype == "Int64"
    assert s.error.isna().all()
    for column in RESULTS[3:-1]:
        assert pd.api.types.is_numeric_dtype(s[column]), column
    assert s.final_eval_accuracy.between(0, 1).all()


def test_metrics_table(grid):
    m = load_runs(grid, table="metrics")
    columns = list(m.columns)
    assert columns[columns.index("run_id") + 1 :] == [*METRICS, "run_dir"]  # after the config
    one = m[(m.cell == "gru") & (m.task == "copy")]
    assert one.step.tolist() == [0, 2, 3, 4, 6]  # log_every=2, eval_every=3, and step 0
    assert one.eval_loss.notna().tolist() == [True, False, True, False, True]
    assert math.isnan(one.train_loss.iloc[0])  # nothing trained at step 0
    assert (one.grad_norm_max >= one.grad_norm).iloc[1:].all()
    assert one.wall_seconds.is_monotonic_increasing
    summary = load_runs(grid).set_index(["cell", "task"]).loc[("gru", "copy")]
    assert summary.final_eval_loss == one.eval_loss.iloc[-1]
    assert summary.best_eval_accuracy == one.eval_accuracy.max()


def test_diagnostics_tables(grid):
    j = load_runs(grid, table="jacobians")
    one = j[(j.cell == "lstm") & (j.task == "adding")]
    assert sorted(one.step.unique()) == [0, 2, 6]  # init, the log-spaced middle, the end
    snap = one[one.step == 0]
    assert snap.t.tolist() == list(range(7)) and snap.lag.tolist() == list(range(6, -1, -1))
    assert (snap.norm == "2").all()
    last = snap[snap.lag == 0].iloc[0]  # ds_T/ds_T is the identity
    assert last.log10_jacobian_norm_median == pytest.approx(0, abs=1e-6)
    stats = snap[
        ["log10_jacobian_norm_q10", "log10_jacobian_norm_median", "log10_jacobian_norm_q90"]
    ].to_numpy()
    assert (stats[:, 0] <= stats[:, 1] + 1e-12).all() and (stats[:, 1] <= stats[:, 2] + 1e-12).all()
    # the summary's horizon and decay rate, again from the table's batch medians
    summary = load_runs(grid).set_index("run_id")
    for (run, step), table in j[j.step.isin([0, 6])].groupby(["run_id", "step"]):
        median = table.sort_values("lag").log10_jacobian_norm_median.to_numpy()
        below = (median < -3).nonzero()[0]  # diagnostics.threshold: 1e-3
        finite = np.isfinite(median)
        slope = np.polyfit(np.arange(len(median))[finite], median[finite], 1)[0]
        row = summary.loc[run]
        tag = "init" if step == 0 else "final"
        assert row[f"memory_horizon_{tag}"] == (below[0] if len(below) else len(median) - 1)
        assert row[f"log10_decay_rate_{tag}"] == pytest.approx(slope, rel=1e-9, abs=1e-12)
    g = load_runs(grid, table="gradients")
    assert {"step", "t", "log10_grad_norm_median", "cell"} <= set(g.columns)
    assert len(g[(g.cell == "lstm") & (g.task == "adding")]) == 3 * 7


def test_lyapunov_table(grid):
    exponents = load_runs(grid, table="lyapunov")
    stats = ["lyapunov_exponent_q10", "lyapunov_exponent_median", "lyapunov_exponent_q90"]
    assert exponents[stats].notna().all().all()  # the IRNN's dead relus give -inf, not NaN
    summary = load_runs(grid).set_index("run_id")
    for (run, step), snap in exponents.groupby(["run_id", "step"]):
        assert snap["index"].tolist() == [1, 2, 3]  # in QR order, not sorted: runs this short
        q10, median, q90 = (snap[c].to_numpy() for c in stats)
        assert (q10 <= median).all() and (median <= q90).all()  # -inf included (dead relu)
        if step in (0, 6):
            tag = "init" if step == 0 else "final"
            leading = snap.lyapunov_exponent_mean.iloc[0]
            assert summary.loc[run, f"lyapunov_exponent_{tag}"] == pytest.approx(leading)
    assert exponents.groupby("run_id").step.unique().map(list).tolist() == [[0, 2, 6]] * 8


def test_same_config_and_seed_give_identical_tables(tmp_path):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        result = cli("cell=gru", "task=copy", *TINY, f"hydra.run.dir={out}")
        ok(result)
        runs.append(out)
    for table in ("summary", "metrics", "jacobians", "gradients", "lyapunov"):
        a, b = (pd.read_parquet(r / f"{table}.parquet") for r in runs)
        wall = [c for c in a.columns if "wall" in c]
        pd.testing.assert_frame_equal(a.drop(columns=wall), b.drop(columns=wall))
    other = cli("cell=gru", "task=copy", *TINY, "seed=1", f"hydra.run.dir={tmp_path / 'c'}")
    ok(other)
    a, c = (pd.read_parquet(r / "metrics.parquet") for r in (runs[0], tmp_path / "c"))
    assert not a.train_loss.iloc[1:].equals(c.train_loss.iloc[1:])


@pytest.mark.parametrize(
    "override, message",
    [
        ("task.seq_len=0", "error: task.seq_len must be an integer >= 2, got 0"),
        ("cell.hidden_size=0", "error: cell.hidden_size must be an integer >= 1, got 0"),
        ("train.lr=-1", "error: train.lr must be a finite number > 0, got -1.0"),
        ("train.lr=inf", "error: train.lr must be a finite number > 0, got inf"),
        ("cell.init_scale=inf", "error: cell.init_scale must be a finite number > 0, got inf"),
        (
            "train.optimizer=adamw",
            "error: train.optimizer must be one of adam, rmsprop, sgd, got 'adamw'",
        ),
        ("cell.init=xavier", "error: cell.init must be one of default, orthogonal, identity"),
        (
            "device=gpu0",
            "error: device must be a torch device: cpu (no index), cuda, cuda:1, ..., got 'gpu0'",
        ),
        (
            "device=cpu:1",
            "error: device must be a torch device: cpu (no index), cuda, cuda:1, ..., got 'cpu:1'",
        ),
        (  # the default cell, an LSTM with m = 64: its state is (h, c)
            "diagnostics.lyapunov_k=129",
            "error: diagnostics.lyapunov_k must be <= the cell's state size 128, got 129",
        ),
        ("threads=-1", "error: threads must be null or an integer >= 1, got -1"),
        (
            "cell.forget_bias=nan",
            "error: cell.forget_bias must be null or a finite number, got nan",
        ),
        ("~seed", "error: seed cannot be removed (~seed): every run needs it"),
        ("~device", "error: device cannot be removed (~device): every run needs it"),
        # 1.6 PB of LSTM weights, past any address space: torch's allocation error, one line
        ("cell.hidden_size=10000000", "error: cell: too large for this machine: "),
        ("seed=-1", "error: seed must be an integer in [0, 18446744073709551615], got -1"),
        (  # one past what torch's generators take: caught here, not in torch.manual_seed
            "seed=18446744073709551616",
            "error: seed must be an integer in [0, 18446744073709551615], got 18446744073709551616",
        ),
        # what Hydra and OmegaConf report, in one line
        ("train.step=10", "error: Could not override 'train.step': Key 'step' not in"),
        ("train.lr=abc", "error: Error merging override train.lr=abc: Value 'abc' of type"),
        ("cell=foo", "error: In 'config': Could not find 'cell/foo'; available: gru, irnn, lstm"),
        (  # the subfolder's options too: Hydra's own list has only the top level
            "experiment=paper",
            "error: In 'config': Could not find 'experiment/paper'; available: adding, copy, "
            "init, smoke, paper/adding, paper/copy, paper/init",
        ),
        ("cell=[a", "error: cell=[a: no viable alternative at input '[a'"),  # names the override
        # Hydra's own advice for a misspelt key would store it, unused, in config.yaml
        ("+train.step=10", "error: train.step is not a config key; keys: steps, batch_size"),
        ("+sed=1", "error: sed is not a config key; keys: cell, task, train"),
        (  # the constructor's own TypeError, and the keys it takes
            "+cell.hiden_size=8",
            "error: cell: LSTMCell.__init__() got an unexpected keyword argument 'hiden_size'; "
            "it takes hidden_size, bias, init, init_scale, forget_bias, chrono_max_len",
        ),
        ("seed=${name}", "error: While dereferencing interpolation '${name}'"),
        ("seed=1,2", "error: Ambiguous value for argument 'seed=1,2': to sweep over it, add -m"),
    ],
)
def test_bad_values_end_with_one_line(tmp_path, override, message):
    tiny = [a for a in TINY if not a.startswith(("cell.", "task."))]
    out = tmp_path / "run"
    result = cli(override, *tiny, f"hydra.run.dir={out}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert not out.exists()  # checked before Hydra makes the run's folder and log


def test_a_search_path_given_with_a_plus_says_it_takes_none(tmp_path):
    """Hydra reads hydra.searchpath before composing: with + its folder's task is not found,
    and Hydra's line alone does not say why."""
    result = cli(f"+{TESTS_CONF}", "task=last_bit", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: In 'config': Could not find 'task/last_bit'; available: adding, copy; "
        "hydra.searchpath=[...] takes no +"
    )


@pytest.mark.parametrize(
    "text,message",
    [
        (  # the import error behind Hydra's "Error locating target"
            "_target_: tests.no_such_module.Task\n",
            "error: task: cannot import tests.no_such_module.Task: ModuleNotFoundError: "
            "No module named 'tests.no_such_module'",
        ),
        ("seq_len: 5\n", "error: task: its config has no _target_ (the class to build)"),
        (
            "_target_: a\n  b: [1, 2\n",
            "error: {path}, line 2: not valid YAML: mapping values are not allowed here",
        ),
    ],
)
def test_a_broken_task_file_of_ones_own_ends_with_one_line(tmp_path, text, message):
    path = tmp_path / "conf" / "task" / "mine.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    tiny = [a for a in TINY if not a.startswith("task.")]
    search = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    result = cli(search, "task=mine", *tiny, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert result.stderr.strip() == message.format(path=path)
    assert not (tmp_path / "run").exists()


def test_console_script_and_multirun_by_hydra_mode(tmp_path):
    """rnnexp-train imports the app as rnnexp.train, not __main__: the conf folder must still
    be found; hydra.mode=MULTIRUN is a sweep, not a single run with an ambiguous value."""
    script = Path(sys.executable).parent / "rnnexp-train"
    result = subprocess.run(
        [str(script), *TINY, "progress=false", f"hydra.run.dir={tmp_path / 'one'}"],
        capture_output=True,
        text=True,
        env=user_env(),
    )
    ok(result)
    assert (tmp_path / "one" / "summary.parquet").exists()
    ok(cli("hydra.mode=MULTIRUN", "cell=rnn,gru", *TINY, f"hydra.sweep.dir={tmp_path / 'grid'}"))
    assert len(list((tmp_path / "grid").glob("*/summary.parquet"))) == 2


def test_help_says_how_to_call_it_before_hydras_lists():
    """--help opens with the two ways to call it and says what the schema groups are, which
    Hydra lists beside the cells and tasks."""
    out = ok(cli("--help")).stdout
    assert out.startswith("python -m rnnexp.train [group=option ...] [key=value ...]")
    assert out.index("-m experiment=smoke") < out.index("== Configuration groups ==")
    assert "schema/cell: gru, lstm, rnn" in out and "schema groups hold the typed" in out


def test_a_device_this_machine_lacks_ends_with_one_line(tmp_path):
    if torch.accelerator.is_available():  # one index past the last
        kind = torch.accelerator.current_accelerator().type
        absent = f"{kind}:{torch.accelerator.device_count()}"
    else:
        absent = "cuda"
    result = cli(f"device={absent}", *TINY, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: device must be one this machine has (cpu"), lines[0]
    assert lines[0].endswith(f"got '{absent}'")
    assert not (tmp_path / "summary.parquet").exists()


def test_a_finished_command_skips_the_last_garbage_collection(tmp_path):
    """A run's process freezes what is alive at exit, so the interpreter's last collection skips
    torch's objects (1-1.5 s of every command). The probe, registered first, runs last."""
    probe = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count()))\n"
        "from rnnexp.train import main\n"
        f"sys.argv = ['rnnexp-train', *{[*TINY, f'hydra.run.dir={tmp_path}']!r}]\n"
        "main()\n"
    )
    result = ok(
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=user_env()
        )
    )
    assert (tmp_path / "summary.parquet").exists()
    frozen = int(result.stdout.split("frozen at exit:")[1])
    assert frozen > 100_000, result.stdout  # torch's modules, functions and their objects


def test_threads_key_sets_torch_threads(tmp_path):
    probe = [sys.executable, "-c", "import torch; print(torch.get_num_threads())"]
    env = user_env(one_thread=False)
    default = int(subprocess.run(probe, capture_output=True, text=True, env=env).stdout)
    for threads, expected in (("null", default), ("3", 3)):
        out = tmp_path / threads
        ok(cli(f"threads={threads}", *TINY, f"hydra.run.dir={out}", one_thread=False))
        assert f"(cpu, torch threads: {expected})" in (out / "train.log").read_text()
        assert pd.read_parquet(out / "summary.parquet").torch_threads.item() == expected


def test_divergence_is_recorded_not_raised(tmp_path):
    command = [
        "cell=irnn",
        "train.optimizer=sgd",
        "train.lr=1e6",
        "train.clip_grad_norm=null",
        *TINY,
        f"hydra.run.dir={tmp_path}",
    ]
    ok(cli(*command))
    written = (tmp_path / "summary.parquet").stat().st_mtime_ns
    again = ok(cli(*command))  # a result, kept: the same command again does not retrain it
    assert f"skipped: {tmp_path} already holds a finished run (diverged)" in again.stdout
    assert (tmp_path / "summary.parquet").stat().st_mtime_ns == written
    summary = pd.read_parquet(tmp_path / "summary.parquet").iloc[0]
    assert summary.status == "diverged"
    metrics = pd.read_parquet(tmp_path / "metrics.parquet")
    last = metrics.iloc[-1]
    assert summary.steps_done == last.step - 1 < 6  # the updates applied: not the last one
    assert not (math.isfinite(last.train_loss) and math.isfinite(last.grad_norm))
    assert not math.isfinite(last.grad_norm_max)  # a NaN among the window's norms wins
    # stopped before the step: the weights saved are the last finite ones, not the update's
    weights = torch.load(tmp_path / "model.pt")
    assert all(w.isfinite().all() for w in weights.values())


def test_outputs_that_overflow_before_any_update_are_divergence_at_step_0(tmp_path):
    ok(cli("cell=irnn", "cell.init_scale=1e20", *TINY, f"hydra.run.dir={tmp_path}"))
    summary = pd.read_parquet(tmp_path / "summary.parquet").iloc[0]
    assert summary.status == "diverged" and summary.steps_done == 0
    assert pd.read_parquet(tmp_path / "metrics.parquet").step.tolist() == [0]


def test_finite_gradients_too_large_for_a_float32_norm_are_not_divergence():
    """The squares of 2^64 overflow float32: the norm, 10 * 2^64, is taken again in float64."""
    from rnnexp.train import _grad_norm

    big = [torch.full((60,), 2.0**64), torch.full((40,), 2.0**64)]
    assert torch.nn.utils.get_total_norm(big).isinf()  # what the float32 norm gives
    assert _grad_norm(big).item() == 10 * 2.0**64
    small = [torch.tensor([3.0, 4.0])]
    assert _grad_norm(small).dtype == torch.float32 and _grad_norm(small).item() == 5.0
    assert _grad_norm([torch.tensor([1.0, math.inf])]).isinf()
    assert _grad_norm([torch.tensor([1.0, math.nan])]).isnan()


@pytest.mark.parametrize("steps", [1, 6])
def test_an_update_that_overflows_the_weights_is_divergence(tmp_path, steps):
    """Finite loss and gradient, but lr * gradient overflows: caught at that step, not at
    the next one's loss, and on the last step too (which has no next)."""
    result = cli(
        "cell=rnn",
        "train.optimizer=sgd",
        "train.lr=3e38",
        "train.clip_grad_norm=null",
        *TINY,
        f"train.steps={steps}",
        f"hydra.run.dir={tmp_path}",
    )
    ok(result)
    summary = pd.read_parquet(tmp_path / "summary.parquet").iloc[0]
    assert summary.status == "diverged" and summary.steps_done == 1
    weights = torch.load(tmp_path / "model.pt")
    assert not all(w.isfinite().all() for w in weights.values())


def test_task_defined_outside_the_package_trains(tmp_path):
    result = cli(TESTS_CONF, "task=last_bit", "cell=gru", *TINY, f"hydra.run.dir={tmp_path}")
    ok(result)
    summary = pd.read_parquet(tmp_path / "summary.parquet").iloc[0]
    assert summary.status == "ok" and summary.task == "last_bit" and summary.seq_len == 6
    assert summary.baseline_loss == pytest.approx(math.log(2))


def test_a_constructor_error_that_names_no_key_shows_the_call():
    """A task of one's own that compares seq_len without checking it: Python's TypeError does
    not say which key, so the one line shows the call with its values."""
    from rnnexp.config import ConfigError
    from rnnexp.train import check_single_run

    with pytest.raises(ConfigError) as e:
        check_single_run([TESTS_CONF, "task=last_bit", "task.seq_len=abc"])
    assert str(e.value) == (
        "task: '<' not supported between instances of 'str' and 'int', in "
        "tests.toy_tasks.LastBitTask(seq_len='abc', fail_at_seq_len=None)"
    )
    with pytest.raises(ConfigError) as e:  # a misspelt key: the keys, its base class's too
        check_single_run([TESTS_CONF, "cell=leaky_rnn", "+cell.alfa=2"])
    assert str(e.value).endswith("'alfa'; it takes hidden_size, alpha, bias, init, init_scale")


def test_a_misspelt_key_of_a_task_lists_the_arguments_its_yaml_leaves_out(tmp_path):
    """The README's task YAML sets seq_len alone: the hint names the class's other arguments
    too, which only +task.KEY= can set."""
    from rnnexp.config import ConfigError
    from rnnexp.train import check_single_run

    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "partial.yaml").write_text(
        "_target_: tests.toy_tasks.LastBitTask\nseq_len: 5\n"
    )
    with pytest.raises(ConfigError) as e:
        check_single_run([f"hydra.searchpath=[file://{tmp_path}]", "task=partial", "task.sq=3"])
    assert str(e.value).endswith(
        "; keys: seq_len; its class also takes fail_at_seq_len (set as +task.KEY=...)"
    )


def test_cell_defined_outside_the_package_trains_and_is_measured(tmp_path):
    leaky = [TESTS_CONF, "cell=leaky_rnn", "cell.alpha=0.25", "cell.init=orthogonal"]
    ok(cli(*leaky, *TINY, f"hydra.run.dir={tmp_path}"))  # the base class's init, no + needed
    summary = pd.read_parquet(tmp_path / "summary.parquet").iloc[0]
    assert summary.status == "ok" and summary.cell == "leaky_rnn" and summary.alpha == 0.25
    assert summary.init == "orthogonal" and summary.bias
    assert math.isfinite(summary.log10_decay_rate_init)
    jacobians = pd.read_parquet(tmp_path / "jacobians.parquet")
    at_init = jacobians[jacobians.step == 0].sort_values("lag")
    # one step of lag: (1 - alpha) I + alpha diag(tanh') W, near 1 - alpha = 0.75 for small W
    assert at_init.log10_jacobian_norm_median.iloc[0] == 0.0
    assert 0.5 < 10 ** at_init.log10_jacobian_norm_median.iloc[1] < 1.1
    bad = cli(TESTS_CONF, "cell=leaky_rnn", "cell.alpha=2", *TINY, f"hydra.run.dir={tmp_path}/bad")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == "error: cell.alpha must be in (0, 1], got 2"


def test_lstm_learns_the_adding_problem_at_t20(tmp_path):
    result = cli(
        "cell=lstm",
        "task.seq_len=20",
        "train.steps=300",
        "train.lr=1e-2",
        "train.eval_every=100",
        "diagnostics.enabled=false",
        "progress=false",
        f"hydra.run.dir={tmp_path}",
    )
    ok(result)
    summary = pd.read_parquet(tmp_path / "summary.parquet").iloc[0]
    assert summary.final_eval_loss < 0.5 * summary.baseline_loss
    config = (tmp_path / "config.yaml").read_text()
    assert "seq_len: 20" in config and "${" not in config  # resolved
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert "cell.weight_hh" in state


@pytest.mark.parametrize(
    "override, allowed",
    [
        ("train.steps=0", "an integer >= 1"),
        ("train.batch_size=0", "an integer >= 1"),
        ("train.lr=0", "a finite number > 0"),
        ("train.clip_grad_norm=0", "null or a number > 0"),
        ("train.log_every=0", "an integer >= 1"),
        ("train.eval_every=0", "an integer >= 1"),
        ("train.eval_batch_size=0", "an integer >= 1"),
        ("diagnostics.batch_size=0", "an integer >= 1"),
        ("diagnostics.batch_size=33", "<= train.eval_batch_size (32)"),
        ("diagnostics.schedule=linear", "'log' or 'every'"),
        ("diagnostics.snapshots=1", "an integer >= 2"),
        ("diagnostics.every=0", "an integer >= 1"),
        ("diagnostics.threshold=1", "a number in (0, 1)"),
        ("diagnostics.threshold=0", "a number in (0, 1)"),
        ("diagnostics.lyapunov_k=0", "an integer >= 1"),
        ("threads=0", "null or an integer >= 1"),
    ],
)
def test_each_range_check_names_its_key_and_what_is_allowed(override, allowed):
    from rnnexp.config import ConfigError
    from rnnexp.train import check_single_run

    key, value = override.split("=")
    with pytest.raises(ConfigError) as error:
        check_single_run(["train.eval_batch_size=32", override])
    got = repr(value) if key == "diagnostics.schedule" else value  # a string shows as one
    assert str(error.value).startswith(f"{key} must be {allowed}, got {got}"), error.value


@pytest.mark.parametrize(
    "argv, message",
    [
        # without -m Hydra would run the defaults once and drop the experiment's grid
        (["experiment=smoke"], "experiment=smoke sweeps cell, task: add -m to run its grid"),
        (["name="], "name must be a folder name under results/sweeps/ (not empty, absolute or"),
        (["name=../elsewhere"], "name must be a folder name under results/sweeps/"),
        (["name=/tmp/x"], "name must be a folder name under results/sweeps/"),
        # a size typo: a batch past this machine's memory, before any run (not a failed one)
        (["train.batch_size=100000000000"], "train.batch_size must be small enough for this"),
        (["train.eval_batch_size=100000000000"], "train.eval_batch_size must be small enough"),
        (  # the misspelt key's node, and its keys (a task's own too)
            ["train.step=10"],
            "Could not override 'train.step': Key 'step' not in 'TrainConfig'; keys: steps, "
            "batch_size, optimizer, lr, clip_grad_norm, log_every, eval_every, eval_batch_size",
        ),
        (["task.seqlen=5"], "Key 'seqlen' is not in struct; keys: seq_len, solved_accuracy"),
        (  # a + key the schema lacks would be stored in config.yaml and ignored
            ["+diagnostics.snapshot=3"],
            "diagnostics.snapshot is not a config key; keys: enabled, batch_size, schedule",
        ),
        (  # a value another key sets: where it comes from
            ["cell=lstm_chrono", "task.seq_len=2"],
            "cell.chrono_max_len must be an integer >= 3, got 2 (= ${task.seq_len})",
        ),
    ],
)
def test_config_mistakes_found_before_any_run(argv, message):
    """In process, as `main` checks a command before Hydra starts (the one-line printing and
    exit code 2 are test_bad_values_end_with_one_line's)."""
    from rnnexp.config import ConfigError
    from rnnexp.train import check_single_run

    with pytest.raises(ConfigError) as error:
        check_single_run(argv)
    assert message in str(error.value), error.value


def test_an_experiment_whose_grid_the_command_fixes_runs_without_m():
    from rnnexp.train import check_single_run

    check_single_run(["experiment=smoke", "cell=gru", "task=adding"])  # no error


@pytest.mark.parametrize(
    "group, text, message",
    [
        (  # torch's own cell: no flat state, no Jacobian
            "cell",
            "_target_: torch.nn.GRUCell\nhidden_size: 8\n",
            "cell: torch.nn.modules.rnn.GRUCell is not a rnnexp.cells.RecurrentCell",
        ),
        (  # the cells' own start-up check runs with diagnostics off too (the test turns them off)
            "cell",
            "_target_: tests.toy_cells.NoStepCell\nhidden_size: 8\n",
            "cell: NoStepCell has no _forward(x, state): write its step, batched",
        ),
        (
            "cell",
            "_target_: tests.toy_cells.OneGateGRUCell\nhidden_size: 8\n",
            "cell: OneGateGRUCell's step on a batch of 2 raised RuntimeError: The size of tensor",
        ),
        (
            "cell",
            "_target_: tests.toy_cells.MethodStateSizeCell\nhidden_size: 8\n",
            "cell: MethodStateSizeCell.state_size must be an int (a property), got <bound method",
        ),
        (  # a subclass that changed the equations and kept its parent's Jacobian
            "cell",
            "_target_: tests.toy_cells.HalfStepRNNCell\nhidden_size: 8\n",
            "cell: HalfStepRNNCell._jacobian disagrees with autograd of its step",
        ),
        (  # the module is there, the class not: not Python's "... is not a package"
            "task",
            "_target_: rnnexp.tasks.NoSuchTask\n",
            "task: cannot import rnnexp.tasks.NoSuchTask: module rnnexp.tasks has no NoSuchTask",
        ),
    ],
)
def test_a_config_of_ones_own_naming_the_wrong_class(tmp_path, group, text, message):
    from rnnexp.config import ConfigError
    from rnnexp.train import check_single_run

    path = tmp_path / "conf" / group / "mine.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    search = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    off = ["diagnostics.enabled=false"] if "toy_cells.HalfStep" not in text else []
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        check_single_run([search, f"{group}=mine", *off])


def test_a_task_key_named_as_a_result_gets_a_prefix():
    """A task's `status` would otherwise be overwritten by the run's status in the summary."""
    from omegaconf import OmegaConf

    from rnnexp.train import summary_columns

    cfg = OmegaConf.create(
        {
            "cell": {"hidden_size": 8},
            "task": {"seq_len": 5, "status": "x", "lag": 3},
            "train": {"steps": 1},
            "diagnostics": {"norm": "2"},
            "seed": 0,
            "device": "cpu",
        }
    )
    columns = summary_columns(cfg, {"cell": "rnn", "task": "mine"})
    assert columns["task_status"] == "x" and columns["task_lag"] == 3
    assert "status" not in columns and "lag" not in columns


def test_slurm_without_srun_is_one_line(monkeypatch):
    from rnnexp import train

    monkeypatch.setattr(train.shutil, "which", lambda name: None)
    assert train.missing_launcher(["hydra/launcher=slurm"]) == (
        "hydra/launcher=slurm needs SLURM: no srun on this machine "
        "(hydra/launcher=submitit_local runs the same jobs here)"
    )
    monkeypatch.setattr(train.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert train.missing_launcher(["hydra/launcher=slurm"]) is None


def _run_in_process(out, overrides, names=("rnn", "copy")):
    """rnnexp.train.run on the composed config, in this process (no command's start-up)."""
    import hydra

    from rnnexp.train import CONF_DIR, run

    with hydra.initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = hydra.compose(
            "config", overrides=[f"cell={names[0]}", f"task={names[1]}", *overrides]
        )
    run(cfg, out, {"cell": names[0], "task": names[1]})
    return cfg


def test_an_evaluation_that_overflows_mid_run_is_divergence(tmp_path, monkeypatch):
    """Training stays finite, the evaluation at step 2 comes out inf: the run stops there."""
    from rnnexp import train

    evaluate, calls = train.evaluate, []

    def overflowing(*args):
        calls.append(None)
        loss, accuracy = evaluate(*args)
        return (loss if len(calls) == 1 else math.inf), accuracy

    monkeypatch.setattr(train, "evaluate", overflowing)
    overrides = ["cell.hidden_size=8", "task.seq_len=5", "train.steps=6", "train.eval_every=2"]
    _run_in_process(tmp_path, [*overrides, "diagnostics.enabled=false", "progress=false"])
    summary = pd.read_parquet(tmp_path / "summary.parquet").iloc[0]
    assert summary.status == "diverged" and summary.steps_done == 2 and len(calls) == 2


def test_recorded_numbers_match_an_independent_computation(tmp_path, monkeypatch):
    """What the tables say, recomputed outside the trainer: the unclipped gradient norm, the
    windows' means, the final evaluation when steps is no multiple of eval_every, the first
    solving step, one evaluation batch for every seed, and the snapshot's statistics with the
    configured norm, threshold and Lyapunov warm-up."""
    from rnnexp.jacobians import gradient_norms, lyapunov_exponents
    from rnnexp.tasks import CopyTask
    from rnnexp.train import EVAL_SEED, build

    eval_batches = []
    sample = CopyTask.sample

    def spy(self, batch, generator):
        drawn = sample(self, batch, generator)
        if batch == 32:
            eval_batches.append(drawn[0].clone())
        return drawn

    monkeypatch.setattr(CopyTask, "sample", spy)
    overrides = [
        "cell.hidden_size=8",
        "task.seq_len=5",
        "task.solved_accuracy=0.01",
        "train.steps=5",
        "train.eval_every=2",
        "train.log_every=1",
        "train.batch_size=8",
        "train.eval_batch_size=32",
        "train.clip_grad_norm=1e-6",
        "diagnostics.batch_size=4",
        "diagnostics.snapshots=2",
        "diagnostics.norm=fro",
        "diagnostics.threshold=0.1",
        "diagnostics.lyapunov_k=2",
        "progress=false",
    ]
    cfg = _run_in_process(tmp_path / "a", overrides)
    _run_in_process(tmp_path / "b", [*overrides, "train.log_every=2"])
    _run_in_process(tmp_path / "c", [*overrides, "seed=1", "train.steps=1"])
    a, b = (pd.read_parquet(tmp_path / r / "metrics.parquet") for r in "ab")
    summary = pd.read_parquet(tmp_path / "a" / "summary.parquet").iloc[0]

    # the first step, by hand: the gradient's norm before clipping (1e-6 would hide it)
    torch.manual_seed(0)
    task, model = build(cfg)
    inputs, targets = task.sample(8, torch.Generator().manual_seed(0))
    loss = task.loss(model(inputs, output_steps=task.output_steps), targets)
    loss.backward()
    norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
    first = a.set_index("step").loc[1]
    assert norm > 1e-3 and first.grad_norm == pytest.approx(norm, rel=1e-6)
    assert first.train_loss == pytest.approx(loss.item(), rel=1e-6)
    # a row of a log_every=2 run sums up the same two steps of the log_every=1 run
    pair, row = a.set_index("step").loc[[1, 2]], b.set_index("step").loc[2]
    assert row.train_loss == pytest.approx(pair.train_loss.mean(), rel=1e-12)
    assert row.grad_norm == pytest.approx(pair.grad_norm.mean(), rel=1e-12)
    assert row.grad_norm_max == pair.grad_norm.max() and pair.grad_norm.nunique() == 2
    # evaluations at every eval_every steps and at the last; the first solving one counts
    evals = a[a.eval_loss.notna()]
    assert evals.step.tolist() == [0, 2, 4, 5]
    assert summary.final_eval_loss == evals.eval_loss.iloc[-1]
    solving = evals[evals.eval_accuracy >= 0.01].step.tolist()
    assert len(solving) >= 2 and summary.solved_step == solving[0]
    # the evaluation batch is the task's, not the seed's
    assert len(eval_batches) == 3 and torch.equal(eval_batches[0], eval_batches[2])

    # the snapshot at initialisation, recomputed from the model at initialisation
    torch.manual_seed(0)
    _, model = build(cfg)
    x, y = task.sample(32, torch.Generator().manual_seed(EVAL_SEED))
    x, y = x[:, :4], y[:, :4]
    log_grads = torch.log10(gradient_norms(model, task, x, y))  # (T+1, 4)
    g = pd.read_parquet(tmp_path / "a" / "gradients.parquet").query("step == 0")
    expected = torch.quantile(log_grads, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), 1)
    for column, values in zip(("q10", "median", "q90"), expected, strict=True):
        np.testing.assert_allclose(g[f"log10_grad_norm_{column}"], values, rtol=1e-12)
    np.testing.assert_allclose(g.log10_grad_norm_mean, log_grads.mean(1), rtol=1e-12)
    warmup = x.shape[0] // 2  # the trainer's: half the run aligns the QR frame
    exponents = lyapunov_exponents(model.cell, x, k=2, warmup=warmup).mean(0)
    lyap = pd.read_parquet(tmp_path / "a" / "lyapunov.parquet").query("step == 0")
    np.testing.assert_allclose(lyap.lyapunov_exponent_mean, exponents, rtol=1e-6)
    j = pd.read_parquet(tmp_path / "a" / "jacobians.parquet").query("step == 0")
    median = j.sort_values("lag").log10_jacobian_norm_median.to_numpy()
    assert (j.norm == "fro").all() and median[0] == pytest.approx(0.5 * math.log10(8))
    below = [np.flatnonzero(median < level) for level in (-1, -3)]  # thresholds 0.1, 1e-3
    assert len(below[0]) and not np.array_equal(below[0][:1], below[1][:1])  # they differ
    assert summary.memory_horizon_init == below[0][0]


def test_single_runs_started_in_one_second_get_folders_of_their_own():
    """The default run folder is the time to the second and the run id: two configs launched
    together (a seed each) no longer share one, where the second failed as "being run by
    another process" after Hydra had overwritten the first's .hydra/ record."""
    import hydra

    from rnnexp.config import run_id
    from rnnexp.train import CONF_DIR

    dirs = []
    with hydra.initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        for seed in (1, 2):
            cfg = hydra.compose("config", [f"seed={seed}"], return_hydra_config=True)
            run_dir = cfg.hydra.run.dir
            assert run_dir.startswith("results/runs/") and run_dir.endswith(f"_{run_id(cfg)}")
            dirs.append(run_dir)
    assert dirs[0] != dirs[1]


def test_config_name_is_checked_up_front_and_other_hydra_flags_are_left_to_hydra():
    """-cn/--config-name picks the primary config and the command is still checked before any
    folder is made; with a config dir of one's own (-cd) or --cfg, Hydra composes, and the
    check waits for the run (value errors) or is Hydra's (names)."""
    from rnnexp.config import ConfigError
    from rnnexp.train import check_single_run

    for argv in (["-cn", "config", "cell=foo"], ["--config-name=config", "cell=foo"]):
        with pytest.raises(ConfigError, match="^In 'config': Could not find 'cell/foo'"):
            check_single_run(argv)
    with pytest.raises(ConfigError, match="^Cannot find primary config 'nope'"):
        check_single_run(["-cn", "nope"])
    for argv in (["-cd", "conf", "cell=foo"], ["--cfg", "job", "cell=foo"]):
        assert check_single_run(argv) is None


def test_the_run_id_is_the_runs_values_not_where_or_how_it_is_shown():
    """A sweep renamed, rerun, with another thread count or bar resumes the same runs (their
    tables' values do not depend on those keys, bar the thread count's last digits, which the
    summary records); a seed or a size is another run."""
    import hydra

    from rnnexp.config import run_id
    from rnnexp.train import CONF_DIR

    with hydra.initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        ids = {
            o: run_id(hydra.compose("config", [o] if o else []))
            for o in ("", "name=other", "rerun=true", "threads=1", "progress=false", "seed=1")
        } | {"cell.hidden_size=8": run_id(hydra.compose("config", ["cell.hidden_size=8"]))}
    assert (
        len({ids[o] for o in ("", "name=other", "rerun=true", "threads=1", "progress=false")}) == 1
    )
    assert len({ids[""], ids["seed=1"], ids["cell.hidden_size=8"]}) == 3
