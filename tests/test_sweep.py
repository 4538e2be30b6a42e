"""Sweeps through Hydra's launchers: resume after a kill, failure isolation, one table."""

import itertools
import multiprocessing
import os
import runpy
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import REPO, TESTS_CONF, TINY, cli, ok, user_env

from rnnexp import train
from rnnexp.aggregate import aggregate
from rnnexp.aggregate import main as aggregate_main
from rnnexp.results import load_runs, run_lock, write_table
from rnnexp.sweep import SweepCallback


def _sweep_table(sweep_dir) -> pd.DataFrame:
    table = pd.read_parquet(sweep_dir / "summary.parquet")
    return table.drop(columns=[c for c in table.columns if "wall" in c])


GRID = ["cell=rnn,gru", "task.seq_len=4,5,6"]  # six tiny runs
BASE = [a for a in TINY if not a.startswith("task.seq_len")]  # the grid sets it


def _signal_when(args: list[str], started, sig=signal.SIGINT) -> subprocess.CompletedProcess:
    """Run the command in its own process group, send the whole group `sig` once `started()`
    (SIGINT: Ctrl-C, as a terminal sends it), and return what it printed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "rnnexp.train", *args],
        cwd=REPO,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # a shell's background jobs ignore SIGINT, and a child inherits that: undo it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not started():
        assert process.poll() is None, "the command ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, sig)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_ctrl_c_ends_a_sweep_with_one_line_and_keeps_its_finished_runs(tmp_path, launcher):
    """Interrupted while a run trains (one run done, one that would take hours). A Ctrl-C
    that lands while Hydra composes the next job's config can surface as Hydra's error
    instead, so the test times it inside a run. Under joblib the job processes' progress
    bars used to leave two semaphores that the resource tracker then reported, in two lines
    after ours."""
    sweep = ["-m", *BASE, f"hydra.sweep.dir={tmp_path}"]
    if launcher == "joblib":
        sweep.append("hydra/launcher=joblib")
    args = [*sweep, "diagnostics.enabled=false", "train.steps=6,100000"]

    def one_done_one_training():
        metrics = list(tmp_path.glob("*/metrics.parquet"))
        return any(tmp_path.glob("*/summary.parquet")) and len(metrics) == 2

    result = _signal_when(args, one_done_one_training)
    assert result.returncode == 130
    assert "Traceback" not in result.stderr
    expected = (
        f"interrupted: 1 of the sweep's 2 runs finished, kept in {tmp_path / 'summary.parquet'};"
        " run the same command again to resume the other 1"
    )
    assert result.stderr.strip().splitlines()[-1] == expected
    assert len(pd.read_parquet(tmp_path / "summary.parquet")) == 1
    logs = [p.read_text() for p in tmp_path.glob("*/train.log")]
    said = sum("interrupted: no summary; the sweep's resume runs it again" in t for t in logs)
    # a joblib job may be ended by the sweep's process before it writes the line (1 in ~10)
    assert said == 1 if launcher == "basic" else said <= 1
    assert "leaked" not in result.stderr
    resumed = ok(cli(*sweep, "diagnostics.enabled=false", "train.steps=6"))
    assert "1 run: 1 ok, 0 diverged, 0 failed (1 of them skipped" in resumed.stdout


JOB_PROCESS = """
import multiprocessing, os, signal, time
from rnnexp.train import _interruptible_job

def job_process():
    with _interruptible_job(parallel=True):  # a run
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)
        except KeyboardInterrupt:
            print("run interrupted")
    os.kill(os.getpid(), signal.SIGINT)  # between runs: where loky collects garbage
    time.sleep(30)
    print("still running")

if __name__ == "__main__":
    process = multiprocessing.get_context("fork").Process(target=job_process)
    process.start()
    process.join()
    print(process.exitcode)
"""


def test_ctrl_c_between_runs_ends_a_job_process_quietly():
    """A Ctrl-C that lands in a joblib job process after its run, in loky's garbage collection,
    printed a traceback under the sweep's one line (CI, once in many runs): raced here."""
    result = subprocess.run(
        [sys.executable, "-c", JOB_PROCESS],
        cwd=REPO,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.split() == ["run", "interrupted", "130"]
    assert result.stderr == ""


CLOSED_STDERR = """
import os, sys
from rnnexp.train import _say

read, write = os.pipe()
os.close(read)  # as tee, killed by the same Ctrl-C, leaves `... 2>&1 | tee log`
os.dup2(write, 2)
os.dup2(write, 1)
sys.stdout.write("a log line not yet flushed: Python flushes it at exit")
_say("interrupted: ...")
sys.exit(130)
"""


def test_the_interrupt_account_of_a_sweep_without_its_folder_yet(tmp_path, monkeypatch):
    """A Ctrl-C after the grid is checked but before Hydra makes the sweep's folder: the line
    Hydra's state allows, not a traceback from inside the interrupt handler."""
    sweep = SweepCallback()
    sweep.grid, sweep.sweep_dir = {"a", "b"}, tmp_path / "not yet"
    monkeypatch.setattr(SweepCallback, "current", sweep)
    assert SweepCallback.interrupted_account() == (
        "finished runs are kept; run the same command again to resume"
    )
    monkeypatch.setattr(SweepCallback, "current", None)
    assert SweepCallback.interrupted_account().startswith("no run had started")


def test_the_interrupt_account_counts_this_grids_runs_only(tmp_path, monkeypatch):
    """The folder holds a finished run of this grid, a diverged one (finished too) and one of
    another grid: 2 of this grid's 3 runs finished, not 3."""
    for run, status in (("a", "ok"), ("b", "diverged"), ("other", "ok")):
        (tmp_path / run).mkdir()
        (tmp_path / run / "config.yaml").write_text("seed: 0\n")
        write_table(
            pd.DataFrame({"run_id": [run], "status": [status]}), tmp_path / run / "summary.parquet"
        )
    sweep = SweepCallback()
    sweep.grid, sweep.sweep_dir = {"a", "b", "c"}, tmp_path
    monkeypatch.setattr(SweepCallback, "current", sweep)
    assert SweepCallback.interrupted_account() == (
        f"2 of the sweep's 3 runs finished, kept in {tmp_path / 'summary.parquet'}; run the same "
        "command again to resume the other 1"
    )


def test_the_interrupt_line_into_a_closed_pipe_keeps_the_exit_status():
    """It raised BrokenPipeError, and Python exited 1 with a traceback nobody could see."""
    env = {k: v for k, v in user_env().items() if k != "PYTHONUNBUFFERED"}  # a user's shell
    result = subprocess.run([sys.executable, "-c", CLOSED_STDERR], cwd=REPO, env=env, timeout=120)
    assert result.returncode == 130


def test_ctrl_c_ends_job_processes_that_it_did_not_reach(monkeypatch):
    """A Ctrl-C that lands while joblib starts its job processes reaches the sweep's process
    only, which then waited on exit for those jobs' runs to end: it hung (in 1 of 7 tries).
    A process that sleeps stands for such a job here."""
    job = multiprocessing.get_context("fork").Process(target=time.sleep, args=(600,))

    def interrupted_while_starting_jobs():
        job.start()
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "app", interrupted_while_starting_jobs)
    monkeypatch.setattr(sys, "argv", ["rnnexp.train", *TINY])
    try:
        with pytest.raises(SystemExit) as exited:
            train.main()
        assert exited.value.code == 130
        job.join(timeout=30)
        assert not job.is_alive()
    finally:
        if job.is_alive():
            job.kill()


def test_ctrl_c_ends_a_single_run_with_one_line_and_no_summary(tmp_path):
    run_dir = tmp_path / "run"
    args = [*TINY, "train.steps=100000", "diagnostics.enabled=false", f"hydra.run.dir={run_dir}"]
    result = _signal_when(args, lambda: (run_dir / "metrics.parquet").exists())
    assert result.returncode == 130
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"interrupted: {run_dir}: unfinished (no summary); its metrics so far are kept"
    ]
    assert not (run_dir / "summary.parquet").exists()
    assert pd.read_parquet(run_dir / "metrics.parquet")["step"].iloc[0] == 0
    log = (run_dir / "train.log").read_text().splitlines()
    assert log[-1].endswith("[WARNING] - interrupted: no summary; its metrics so far are kept")


def test_resume_after_sigkill_equals_an_uninterrupted_sweep(tmp_path):
    reference = tmp_path / "reference"
    ok(cli("-m", *GRID, *BASE, f"hydra.sweep.dir={reference}"))

    resumed = tmp_path / "resumed"
    args = ["-m", *GRID, *BASE, f"hydra.sweep.dir={resumed}"]
    _signal_when(args, lambda: len(list(resumed.glob("*/summary.parquet"))) >= 2, signal.SIGKILL)
    done_before = {p.parent.name for p in resumed.glob("*/summary.parquet")}
    assert 2 <= len(done_before) < 6

    result = cli(*args)
    ok(result)
    assert f"({len(done_before)} of them skipped as already done)" in result.stdout
    table = _sweep_table(resumed)
    assert table.run_id.is_unique and len(table) == 6
    pd.testing.assert_frame_equal(table, _sweep_table(reference))
    # the finished runs were not recomputed: their files are those of the first invocation
    for run_id in done_before:
        metrics = pd.read_parquet(resumed / run_id / "metrics.parquet")
        assert len(metrics) == len(pd.read_parquet(reference / run_id / "metrics.parquet"))


def test_rerun_true_recomputes(tmp_path):
    args = ["-m", "cell=rnn", *TINY, f"hydra.sweep.dir={tmp_path}"]
    ok(cli(*args))
    (summary,) = tmp_path.glob("*/summary.parquet")
    first = summary.stat().st_mtime_ns
    assert "1 of them skipped" in cli(*args).stdout
    assert summary.stat().st_mtime_ns == first
    assert "0 of them skipped" in cli(*args, "rerun=true").stdout
    assert summary.stat().st_mtime_ns > first


def test_an_interrupted_rerun_is_unfinished_not_the_old_run(tmp_path):
    """rerun=true rewrites the tables as it goes: killed, it must not keep the old summary."""
    args = ["-m", "cell=rnn", *TINY, "train.steps=400", f"hydra.sweep.dir={tmp_path}"]
    ok(cli(*args))
    (summary,) = tmp_path.glob("*/summary.parquet")
    _signal_when([*args, "rerun=true"], lambda: not summary.exists(), signal.SIGKILL)
    assert not summary.exists() and (summary.parent / "config.yaml").exists()
    assert "1 run: 1 ok" in cli(*args).stdout  # the resume trains it again


def test_a_run_another_process_holds_is_skipped_not_repeated(tmp_path):
    """Two launches of one sweep share its runs instead of training each twice."""
    args = ["-m", "cell=rnn,gru", *TINY, f"hydra.sweep.dir={tmp_path}", "rerun=true"]
    ok(cli(*args))
    held, free = sorted(tmp_path.glob("*/summary.parquet"))
    before = free.stat().st_mtime_ns
    with run_lock(held.parent) as mine:
        assert mine
        held.unlink()  # as the holder's own rerun does when it starts
        result = cli(*args)
        aggregated = cli(str(tmp_path), module="rnnexp.aggregate").stdout
        with run_lock(held.parent) as again:  # flock: another open file, even in one process
            assert not again
    assert f"skipped: {held.parent} is being run by another process" in result.stdout
    assert not held.exists()  # left to its holder
    assert free.stat().st_mtime_ns > before  # rerun
    assert result.returncode == 1  # the grid is not complete: a run has no result yet
    assert "1 run is being run by another process" in result.stdout
    assert "no result" not in result.stdout  # nothing died: no resume to suggest
    assert "1 run is being run by another process" in aggregated and "no result" not in aggregated
    with run_lock(held.parent) as mine:  # released when its holder is done
        assert mine


def test_a_single_run_another_process_holds_ends_with_one_line(tmp_path):
    (tmp_path / "run").mkdir()
    with run_lock(tmp_path / "run"):
        result = cli(*TINY, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {tmp_path / 'run'} is being run by another process"
    assert not (tmp_path / "run" / "summary.parquet").exists()


def test_resume_adds_config_columns_a_run_of_an_older_version_lacks(tmp_path):
    args = ["-m", "cell=rnn", *TINY, f"hydra.sweep.dir={tmp_path}"]
    ok(cli(*args))
    (path,) = tmp_path.glob("*/summary.parquet")
    current = pd.read_parquet(path)
    write_table(current.drop(columns=["device", "diagnostics_norm"]), path)  # as before them
    assert "1 of them skipped" in cli(*args).stdout
    pd.testing.assert_frame_equal(pd.read_parquet(path), current)


def test_a_failing_run_does_not_sink_the_sweep(tmp_path):
    args = [
        "-m",
        TESTS_CONF,
        "task=last_bit",
        "task.fail_at_seq_len=5",
        *[a for a in TINY if not a.startswith("task.")],
        f"hydra.sweep.dir={tmp_path}",
    ]
    result = cli(*args, "task.seq_len=4,5,6")
    assert result.returncode == 1
    table = pd.read_parquet(tmp_path / "summary.parquet").set_index("seq_len")
    assert table.status.to_dict() == {4: "ok", 5: "failed", 6: "ok"}
    assert table.loc[5, "error"] == "RuntimeError: this task is built to fail at seq_len=5"
    assert "3 runs: 2 ok, 0 diverged, 1 failed" in result.stdout
    log = tmp_path / table.loc[5, "run_id"] / "train.log"
    assert str(log) in result.stdout
    assert "Traceback" in log.read_text()
    # another grid in the same folder: judged, and reported, by its own runs
    result = ok(cli(*args, "task.seq_len=4,6"))
    assert "2 runs: 2 ok, 0 diverged, 0 failed (2 of them skipped" in result.stdout
    assert f"table: {tmp_path / 'summary.parquet'} (all 3 runs in the folder)" in result.stdout
    # and the aggregate command says so too, by its exit code (a script's check)
    assert aggregate_main([str(tmp_path)]) == 1
    run = tmp_path / table.loc[4, "run_id"]  # not a sweep: its own summary is left alone
    written = (run / "summary.parquet").stat().st_mtime_ns
    assert aggregate_main([str(run)]) == 2
    assert (run / "summary.parquet").stat().st_mtime_ns == written


@pytest.mark.parametrize(
    "override,message",
    [
        (
            "experiment=paper/addin",
            "error: In 'config': Could not find 'experiment/paper/addin'; available: adding, "
            "copy, init, smoke, paper/adding, paper/copy, paper/init",
        ),
        ("train.setps=10", "error: Could not override 'train.setps': Key 'setps' not in"),
        (
            "hydra/launcher=nope",
            "error: In 'hydra/config': Could not find 'hydra/launcher/nope'; available: basic,",
        ),
        ("cell=glob(nope*)", "error: the grid of seed=0,1 cell=glob(nope*) "),
        (
            "train.lr=interval(0.001,0.1)",
            "error: seed=0,1 train.lr=interval(0.001,0.1): BasicSweeper does not support sweep "
            "type : INTERVAL_SWEEP; it expands lists a,b, range(), choice(), glob()",
        ),
        (
            "hydra/launcher=joblib hydra.launcher.n_jobs=0",
            "error: hydra.launcher.n_jobs must be a non-zero integer (-1: every core, -2: all "
            "but one, ...), got 0",
        ),
    ],
)
def test_a_config_mistake_in_a_multirun_is_one_line_too(tmp_path, override, message):
    """Hydra composes a multirun's config before the sweep callback could check it."""
    result = cli("-m", "seed=0,1", *override.split(), *BASE, f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_an_experiments_grid_and_the_command_lines_combine(tmp_path):
    """The -m pre-check composes only what sweeps nothing, as Hydra does: cell.nonlinearity
    is a key of the experiment's swept cells, not of the default LSTM."""
    experiment = tmp_path / "conf" / "experiment" / "rnns.yaml"
    experiment.parent.mkdir(parents=True)
    experiment.write_text(
        "# @package _global_\nhydra:\n  sweeper:\n    params:\n      cell: rnn,irnn\n"
    )
    search = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    sweep = tmp_path / "sweep"
    args = ["-m", search, "experiment=rnns", "cell.nonlinearity=tanh,relu", *TINY]
    ok(cli(*args, f"hydra.sweep.dir={sweep}"))
    table = pd.read_parquet(sweep / "summary.parquet")
    assert sorted(zip(table.cell, table.nonlinearity, strict=True)) == [
        ("irnn", "relu"),
        ("irnn", "tanh"),
        ("rnn", "relu"),
        ("rnn", "tanh"),
    ]


def test_aggregate_leaves_a_folder_that_is_no_sweep_alone(tmp_path):
    write_table(pd.DataFrame({"run_id": ["a"]}), tmp_path / "summary.parquet")  # a copied table
    assert aggregate(tmp_path).empty
    assert (tmp_path / "summary.parquet").exists()


def test_a_glob_sweep_over_a_config_group(tmp_path):
    """glob(...) needs Hydra's config loader, in the checks before the jobs too."""
    ok(cli("-m", "cell=glob(rnn*)", *TINY, f"hydra.sweep.dir={tmp_path}"))
    assert sorted(pd.read_parquet(tmp_path / "summary.parquet").cell) == ["rnn", "rnn_orth"]


def test_a_fixed_key_of_a_swept_group_gets_a_way_to_set_it(tmp_path):
    """Hydra checks a multirun's fixed keys against the swept group's default (an LSTM, which
    has no nonlinearity); the message says how to set the key in each run, and that works."""
    result = cli(
        "-m", "cell=rnn,irnn", "cell.nonlinearity=relu", *BASE, f"hydra.sweep.dir={tmp_path}"
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: Could not override 'cell.nonlinearity': Key 'nonlinearity' not in 'LSTMConfig'; "
        "cell is swept, and its default is what fixed keys are checked against: to set it in "
        "each run, write cell.nonlinearity=choice(relu)"
    )
    ok(
        cli(
            "-m",
            "cell=rnn,irnn",
            "cell.nonlinearity=choice(relu)",
            *BASE,
            f"hydra.sweep.dir={tmp_path}",
        )
    )
    assert (pd.read_parquet(tmp_path / "summary.parquet").nonlinearity == "relu").all()


def test_a_fixed_key_of_a_group_an_experiment_sweeps_gets_the_hint_too(tmp_path):
    """The hint names the experiment that sweeps the group, and its advice runs; a group the
    command line fixes is not swept, whatever the experiment says."""
    experiment = tmp_path / "conf" / "experiment" / "rnns.yaml"
    experiment.parent.mkdir(parents=True)
    experiment.write_text(
        "# @package _global_\nhydra:\n  sweeper:\n    params:\n      cell: rnn,irnn\n"
    )
    search = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    sweep = f"hydra.sweep.dir={tmp_path / 'sweep'}"
    result = cli("-m", search, "experiment=rnns", "cell.nonlinearity=relu", *TINY, sweep)
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        "; cell is swept (by experiment=rnns), and its default is what fixed keys are checked "
        "against: to set it in each run, write cell.nonlinearity=choice(relu)"
    )
    ok(cli("-m", search, "experiment=rnns", "cell.nonlinearity=choice(relu)", *TINY, sweep))
    table = pd.read_parquet(tmp_path / "sweep" / "summary.parquet")
    assert sorted(table.cell) == ["irnn", "rnn"] and (table.nonlinearity == "relu").all()
    fixed = cli("-m", search, "experiment=rnns", "cell=gru", "cell.nonlinearity=relu", sweep)
    assert fixed.returncode == 2 and "swept" not in fixed.stderr, fixed.stderr


@pytest.mark.parametrize(
    "grid, message",
    [
        (
            ["task.seq_len=10,0"],
            "error: task.seq_len must be an integer >= 2, got 0 (at task.seq_len=0)",
        ),
        (  # a seed alone makes no point that gets built: those differing in it are built once
            ["seed=0,-1", "task.seq_len=6"],
            "error: seed must be an integer in [0, 18446744073709551615], got -1 (at seed=-1)",
        ),
        (  # the copy task takes a delay of 1, the adding task no length below 2: which point
            ["task=copy,adding", "task.seq_len=1"],
            "error: task.seq_len must be an integer >= 2, got 1 (at task=adding)",
        ),
        (  # the report and table are one folder's: the other's runs would count as missing
            ["name=na,nb"],
            "error: name takes several values in this grid (na, nb): a sweep writes one "
            "folder, results/sweeps/NAME/; run one command per name",
        ),
        (  # Hydra expands an experiment's hydra.sweeper.params only where it is fixed
            ["experiment=smoke,init"],
            "error: experiment is swept (init, smoke), and experiment=init has a grid of its "
            "own, which Hydra expands only for an experiment the command fixes: run one "
            "command per experiment (-m experiment=init ...)",
        ),
    ],
)
def test_a_bad_grid_value_fails_before_any_job(tmp_path, grid, message):
    result = cli("-m", *grid, *BASE, f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip() == message
    assert not list(tmp_path.glob("*/config.yaml"))


def test_aggregate_command_rebuilds_the_table(tmp_path):
    ok(cli("-m", "cell=rnn,gru", *TINY, f"hydra.sweep.dir={tmp_path}"))
    (tmp_path / "summary.parquet").unlink()
    result = cli(str(tmp_path), "--csv", module="rnnexp.aggregate")
    ok(result)
    assert "2 runs: 2 ok, 0 diverged, 0 failed" in result.stdout
    table = pd.read_parquet(tmp_path / "summary.parquet")
    assert sorted(table.cell) == ["gru", "rnn"]
    csv = pd.read_csv(tmp_path / "summary.csv")
    assert list(csv.columns) == list(table.columns) and len(csv) == 2
    loaded = load_runs(tmp_path)  # the sweep-level table is not mistaken for a run
    assert len(loaded) == 2
    assert "skipped" not in result.stdout and "no result" not in result.stdout
    # a run killed before its summary: its folder holds config.yaml (written first) only
    (tmp_path / loaded.run_id[0] / "summary.parquet").unlink()
    result = cli(str(tmp_path), module="rnnexp.aggregate")
    assert "sweep" in result.stdout and "1 run: 1 ok" in result.stdout
    assert "1 run has no result (unfinished" in result.stdout
    assert len(pd.read_csv(tmp_path / "summary.csv")) == 1  # the CSV there is kept up to date
    # and one whose summary a copy truncated: unfinished too, not counted nowhere
    kept = tmp_path / loaded.run_id[1] / "summary.parquet"
    whole = kept.read_bytes()
    kept.write_bytes(whole[:100])
    result = cli(str(tmp_path), module="rnnexp.aggregate")
    assert "0 runs" in result.stdout and "2 runs have no result (unfinished" in result.stdout
    kept.write_bytes(whole)
    (tmp_path / loaded.run_id[1] / "summary.parquet").unlink()  # no run finished: no table
    result = cli(str(tmp_path), module="rnnexp.aggregate")
    assert "0 runs" in result.stdout and "no run has finished: no table written" in result.stdout
    assert not (tmp_path / "summary.parquet").exists()


@pytest.mark.parametrize(
    "launcher",
    [["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], ["hydra/launcher=submitit_local"]],
    ids=["joblib", "submitit_local"],
)
def test_parallel_launchers(tmp_path, launcher):
    sweep = ["-m", "cell=rnn,lstm", *TINY, *launcher, f"hydra.sweep.dir={tmp_path}"]
    result = cli(*sweep, one_thread=False)  # torch's default: every core
    ok(result)
    table = pd.read_parquet(tmp_path / "summary.parquet")
    assert sorted(table.cell) == ["lstm", "rnn"] and (table.status == "ok").all()
    # threads: null gives each parallel job one torch thread, whatever the machine's cores
    logs = [(tmp_path / run / "train.log").read_text() for run in table.run_id]
    assert all("(cpu, torch threads: 1)" in text for text in logs), logs


def test_missing_launcher_plugin_names_the_package(tmp_path):
    result = cli("-m", "hydra/launcher=ray", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        'error: hydra/launcher=ray needs hydra-ray-launcher: pip install -e ".[sweep,ray]"'
    )


def test_smoke_experiment_and_every_figure(tmp_path):
    """The smoke grid through joblib, then the reproduction's plotting and summary on it."""
    result = cli(
        "-m",
        "experiment=smoke",
        "train.steps=4",
        "train.eval_every=2",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={tmp_path}",
    )
    ok(result)
    table = pd.read_parquet(tmp_path / "summary.parquet")
    assert len(table) == 8 and (table.status == "ok").all()
    assert set(table.cell) == {"rnn", "irnn", "gru", "lstm"}
    assert set(table.task) == {"adding", "copy"}
    assert (table.hidden_size == 16).all() and (table.seq_len == 10).all()

    reproduce = runpy.run_path(str(REPO / "scripts" / "reproduce.py"))
    out = tmp_path / "out"
    assert reproduce["main"](["--figures-only", "--sweep", str(tmp_path), "--out", str(out)]) == 0
    drawn = list((out / "figures").glob("*.png"))
    assert len(drawn) == len(reproduce["figures"](table)) == 7  # 6 adding, 1 copy delay
    for png in drawn:
        assert png.stat().st_size > 10_000 and png.with_suffix(".pdf").exists()
    assert pd.read_csv(out / "tables" / "summary.csv").shape[0] == 8


def test_the_init_figure_is_drawn_where_the_init_experiment_ran():
    """At paper scale the adding experiment's longest T (1000) holds rnn, irnn, gru and lstm
    only; the init experiment ran its five variants at T=400, and that is the figure's."""
    adding = [(c, T, 128) for c in ("rnn", "irnn", "gru", "lstm") for T in (500, 1000)]
    init = [(c, 400, 128) for c in ("rnn", "rnn_orth", "irnn", "lstm", "lstm_chrono")]
    summary = pd.DataFrame(adding + init, columns=["cell", "seq_len", "hidden_size"])
    summary["task"], summary["status"] = "adding", "ok"
    figures = runpy.run_path(str(REPO / "scripts" / "reproduce.py"))["figures"](summary)
    (init_args,) = [options for script, options in figures if script == "plot_init"]
    assert init_args[init_args.index("--seq-len") + 1] == "400"
    assert init_args[init_args.index("--hidden-size") + 1] == "128"


def test_the_reproduction_asks_each_figure_for_the_cells_it_can_draw():
    """gru's runs all failed, irnn's all diverged, lstm lost one of two seeds to divergence:
    the heatmap and the init figure draw a diverged run (accuracy 0), the curves do not, no
    figure can draw a failed one; the printed accuracy counts a diverged seed as 0, as the
    heatmap does."""
    status = {"rnn": ["ok", "ok"], "irnn": ["diverged"] * 2, "gru": ["failed"] * 2}
    status["lstm"] = ["ok", "diverged"]
    rows = [(c, s, 1.0 if s == "ok" else 0.5) for c in status for s in status[c]]
    summary = pd.DataFrame(rows, columns=["cell", "status", "final_eval_accuracy"]).assign(
        task="adding",
        seq_len=100,
        hidden_size=64,
        final_eval_loss=0.01,
        baseline_loss=1 / 6,
        log10_decay_rate_init=-0.1,
        memory_horizon_init=30.0,
    )
    reproduce = runpy.run_path(str(REPO / "scripts" / "reproduce.py"))
    cells = {}
    for script, options in reproduce["figures"](summary):
        after = options[options.index("--cell") + 1 :]
        cells[script] = list(itertools.takewhile(lambda a: not a.startswith("--"), after))
    assert cells["plot_success_heatmap"] == ["rnn", "irnn", "lstm"]
    assert cells["plot_init"] == ["rnn", "irnn", "lstm"]
    for script in ("plot_memory_horizon", "plot_vanishing", "plot_gradient_flow"):
        assert cells[script] == ["rnn", "lstm"]
    lines = reproduce["text_summary"](summary).splitlines()
    (lstm,) = [line for line in lines if line.split()[0] == "lstm"]
    assert "accuracy 0.500" in lstm and lstm.endswith("(1 of 2 seeds diverged)")
    assert not [line for line in lines if line.split()[0] == "gru"]


def test_a_run_folder_reused_with_another_config_is_not_skipped(tmp_path):
    ok(cli("cell=rnn", *TINY, f"hydra.run.dir={tmp_path}"))
    first = pd.read_parquet(tmp_path / "summary.parquet").run_id.item()
    assert "skipped" in cli("cell=rnn", *TINY, f"hydra.run.dir={tmp_path}").stdout
    result = cli("cell=gru", *TINY, f"hydra.run.dir={tmp_path}")
    assert "skipped" not in result.stdout
    summary = pd.read_parquet(tmp_path / "summary.parquet")
    assert summary.cell.item() == "gru" and summary.run_id.item() != first


def test_the_report_lists_ten_failures_and_counts_the_rest(tmp_path, capsys):
    from rnnexp.aggregate import report

    table = pd.DataFrame(
        {"run_id": [f"r{i:02d}" for i in range(12)], "status": "failed", "error": "boom"}
    )
    lines = report(tmp_path, table).splitlines()
    assert lines[0] == f"sweep {tmp_path}: 12 runs: 0 ok, 0 diverged, 12 failed"
    listed = [line for line in lines if line.startswith("  failed ")]
    assert len(listed) == 10 and listed[0].startswith("  failed r00: boom  log: ")
    assert "  ... and 2 more failed runs" in lines
    assert aggregate_main([str(tmp_path / "nope")]) == 2  # not a folder: its own exit code
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope'} is not a folder"
