"""`python -m rnnexp.train`: train one cell on one task, and write its tables beside its config.

    python -m rnnexp.train cell=gru cell.hidden_size=64 task=adding task.seq_len=100 seed=3

The loop is plain: sample a batch, forward, loss, backward, clip, step. Every `eval_every`
steps the model is scored on a fixed evaluation batch (the same for every run of a task), and
on the diagnostics schedule the Jacobian-product and gradient norms are recorded. A NaN or inf
loss, gradient, weight or evaluation loss ends the run early with status `diverged`: in a
study of exploding gradients that is a result, not a crash.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib.util
import logging
import math
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tqdm.auto import tqdm

from rnnexp import diagnostics, gemm
from rnnexp.allocator import retain_freed_memory
from rnnexp.cells import RecurrentCell, check_cell
from rnnexp.config import (
    OPTIMIZERS,
    ConfigError,
    check_device_available,
    check_values,
    compose_checked,
    constructor_keys,
    experiment_sweeps,
    fixed_overrides,
    register_configs,
    register_resolvers,
    require,
    run_id,
    split_grid,
    swept_group_hint,
)
from rnnexp.jacobians import check_jacobian
from rnnexp.model import SequenceModel
from rnnexp.results import (
    FINISHED,
    atomic_path,
    config_columns,
    read_summary,
    run_lock,
    write_table,
    write_text,
)
from rnnexp.sweep import SweepCallback
from rnnexp.tasks import check_task

log = logging.getLogger(__name__)

EVAL_SEED = 20240601  # evaluation batches depend on the task only, never on the run's seed
TORCH_THREADS = torch.get_num_threads()  # the default, restored for runs that ask for it

register_configs()
register_resolvers()


def _instantiate(group: str, node: DictConfig, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, with a constructor's complaint turned into one line."""
    if "_target_" not in node:  # Hydra would hand back the config itself, not an object
        raise ConfigError(f"{group}: its config has no _target_ (the class to build)")
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        key = str(cause).split(" ", 1)[0]
        if isinstance(cause, ValueError) and key in node:  # ours start with the argument's
            where = (  # name, and a value set elsewhere says where from: lstm_chrono's
                f" (= {OmegaConf.to_container(node)[key]})"  # chrono_max_len is ${task.seq_len}
                if OmegaConf.is_interpolation(node, key)
                else ""
            )
            raise ConfigError(f"{group}.{cause}{where}") from cause
        if isinstance(cause, TypeError) and "unexpected keyword argument" in str(cause):
            keys = constructor_keys(node._target_)  # a misspelt key of one's own task or cell
            hint = f"; it takes {', '.join(keys)}" if keys else ""
            raise ConfigError(f"{group}: {cause}{hint}") from cause
        if isinstance(cause, ValueError | TypeError):  # one that names no key: the call does
            args = ", ".join(
                f"{k}={v!r}"
                for k, v in OmegaConf.to_container(node, resolve=True).items()
                if k != "_target_"
            )
            raise ConfigError(f"{group}: {cause}, in {node._target_}({args})") from cause
        if isinstance(cause, ImportError):  # say why: a typo in _target_, or in its module
            why = cause.__cause__ or cause
            module, _, name = node._target_.rpartition(".")
            if isinstance(why, ModuleNotFoundError) and why.name == node._target_ and module:
                why = f"module {module} has no {name}"  # not "... is not a package"
            else:
                why = f"{type(why).__name__}: {why}"
            raise ConfigError(f"{group}: cannot import {node._target_}: {why}") from e
        if cause is None:
            raise ConfigError(f"{group}: {str(e).splitlines()[0]}") from e
        if isinstance(cause, MemoryError) or (
            isinstance(cause, RuntimeError) and "allocate" in str(cause)
        ):  # a size typo (hidden_size=1000000): torch's message, less its C++ frame
            why = str(cause).split("DefaultCPUAllocator: ")[-1] or "out of memory"
            raise ConfigError(f"{group}: too large for this machine: {why}") from cause
        raise


def _grad_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The gradients' total 2-norm. In float32 the squares overflow from a norm of 1.8e19, so a
    norm that comes out inf is taken again in float64: finite gradients (up to 3.4e38 each),
    which clipping scales back, are not a divergence."""
    norm = torch.nn.utils.get_total_norm(grads)
    if not norm.isinf():
        return norm
    norms = [torch.linalg.vector_norm(g, dtype=torch.float64) for g in grads]
    return torch.linalg.vector_norm(torch.stack(norms))


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system that tells
        return None


def _check_batch_sizes(cfg: DictConfig, pair: tuple[torch.Tensor, ...]) -> None:
    """A batch whose inputs and targets alone exceed this machine's memory is a size typo
    (batch_size=100000000000): one line now, rather than a failed run once training starts.
    Priced from `pair`, check_task's batch of 2, so any task's shapes and dtypes count."""
    memory = _physical_memory()
    if memory is None:
        return
    per_sample = sum(x.numel() * x.element_size() for x in pair) / 2
    for key in ("batch_size", "eval_batch_size"):
        need = per_sample * cfg.train[key]
        require(
            need <= memory,
            f"train.{key}",
            f"small enough for this machine: its batch would take {need / 2**30:.3g} GiB of "
            f"{memory / 2**30:.3g} GiB",
            cfg.train[key],
        )


def build(cfg: DictConfig) -> tuple[Any, SequenceModel]:
    """Check the values and instantiate the task and the model; raises ConfigError."""
    try:
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation, e.g. seed=${name}
    except OmegaConfBaseException as e:
        raise ConfigError(str(e).splitlines()[0]) from e
    check_values(cfg)
    task = _instantiate("task", cfg.task)
    try:
        with torch.random.fork_rng(devices=[]):  # a task drawing from the global RNG would
            pair = check_task(task)  # otherwise shift the model's initialisation
    except Exception as e:  # a task of one's own: what it got wrong, in one line
        message = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
        raise ConfigError(f"task: {message}") from e
    _check_batch_sizes(cfg, pair)
    cell = _instantiate("cell", cfg.cell, input_size=task.input_size)
    if not isinstance(cell, RecurrentCell):  # torch.nn.GRUCell, say: no flat state, no Jacobian
        what = f"{type(cell).__module__}.{type(cell).__qualname__}"
        raise ConfigError(f"cell: {what} is not a rnnexp.cells.RecurrentCell (see Adding a cell)")
    try:
        check_cell(cell)
    except ValueError as e:
        raise ConfigError(f"cell: {e}") from e
    if cfg.diagnostics.enabled:
        try:
            check_jacobian(cell)
        except Exception as e:  # a cell of one's own: what it got wrong, in one line
            message = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
            raise ConfigError(f"cell: {message.splitlines()[0]}") from e
    k, size = cfg.diagnostics.lyapunov_k, cell.state_size
    allowed = f"<= the cell's state size {size}"
    require(not cfg.diagnostics.enabled or k <= size, "diagnostics.lyapunov_k", allowed, k)
    return task, SequenceModel(cell, task.output_size)


def _skip_last_collection() -> None:
    """Exit 1-1.5 s sooner: a process that trained spends that in the interpreter's last garbage
    collection, over the ~300 thousand objects of torch and torch._dynamo, which live until
    exit anyway. Frozen at exit, they are skipped; the other exit handlers (logging's flush,
    loky's shutdown) still run. Registered once per process, however many runs it hosts: the
    command's, and each joblib job process (which gets `app` by value, not this module).
    """
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)


def _set_global_state(cfg: DictConfig, parallel: bool) -> None:
    """Threads, allocator and the progress bars' lock, at the start of every run (joblib
    reuses its workers), once `build` has checked the values; the seed is set before it, for
    the model's init.

    tqdm's default lock holds a multiprocessing semaphore. A job process that Ctrl-C ends
    never unlinks it, and the resource tracker then printed "2 leaked semaphore objects" under
    the sweep's one-line message. A job's bars need no lock across processes (each job
    process would make its own anyway), so in a parallel job they get a thread lock.
    """
    retain_freed_memory()
    _skip_last_collection()
    torch.set_num_threads(cfg.threads or (1 if parallel else TORCH_THREADS))
    if parallel:
        tqdm.set_lock(threading.RLock())


def _exit_between_runs(signum: int, frame: Any) -> None:
    raise SystemExit(130)  # multiprocessing ends a process quietly on SystemExit


@contextlib.contextmanager
def _interruptible_job(parallel: bool):
    """A Ctrl-C ends a run with KeyboardInterrupt, and a job process between runs quietly.

    joblib's job processes collect garbage after each job (~1 s over torch's objects), outside
    the job: a Ctrl-C landing there ended the process with a traceback under the sweep's
    one-line message (in CI, once). Between runs nothing of a run is open, so the handler
    that this leaves behind exits with 130 instead.
    """
    if not parallel or threading.current_thread() is not threading.main_thread():
        yield  # a signal handler can only be set from the main thread
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, _exit_between_runs)


@torch.no_grad()
def evaluate(model: SequenceModel, task, inputs: torch.Tensor, targets: torch.Tensor):
    outputs = model(inputs, output_steps=task.output_steps)
    return task.loss(outputs, targets).item(), float(task.accuracy(outputs, targets))


def fit(cfg: DictConfig, task, model: SequenceModel, run_dir: Path, label: str) -> dict:
    """Train, writing metrics (and diagnostics) tables as it goes; returns the summary values."""
    tc, device = cfg.train, torch.device(cfg.device)
    model.to(device)
    params = list(model.parameters())
    optimizer = getattr(torch.optim, OPTIMIZERS[tc.optimizer])(params, lr=tc.lr)
    data = torch.Generator().manual_seed(cfg.seed)
    fixed = torch.Generator().manual_seed(EVAL_SEED)
    eval_inputs, eval_targets = (x.to(device) for x in task.sample(tc.eval_batch_size, fixed))
    diag_at = (  # off: the loop pays nothing
        set(diagnostics.snapshot_steps(cfg.diagnostics, tc.steps))
        if cfg.diagnostics.enabled
        else set()
    )
    diag_batch = (
        eval_inputs[:, : cfg.diagnostics.batch_size],
        eval_targets[:, : cfg.diagnostics.batch_size],
    )

    rows: list[dict] = []
    diag_tables: dict[str, list[pd.DataFrame]] = {}  # jacobians, gradients, lyapunov
    diag_numbers: dict[str, float] = {}
    losses, grad_norms = [], []
    status, solved_step, best_accuracy, updates = "ok", None, -math.inf, 0
    start = time.perf_counter()

    def record(step: int, evaluated: bool) -> None:
        nonlocal solved_step, best_accuracy
        row = {
            "step": step,
            "train_loss": math.nan,
            "grad_norm": math.nan,
            "grad_norm_max": math.nan,
            "eval_loss": math.nan,
            "eval_accuracy": math.nan,
        }
        if losses:
            row |= {
                "train_loss": sum(losses) / len(losses),
                "grad_norm": sum(grad_norms) / len(grad_norms),
                "grad_norm_max": float(np.max(grad_norms)),  # NaN wins, as it does not in max()
            }
            losses.clear()
            grad_norms.clear()
        if evaluated:
            row["eval_loss"], row["eval_accuracy"] = evaluate(
                model, task, eval_inputs, eval_targets
            )
            best_accuracy = max(best_accuracy, row["eval_accuracy"])
            if solved_step is None and row["eval_accuracy"] >= task.solved_accuracy:
                solved_step = step
            bar.set_postfix(
                eval_loss=f"{row['eval_loss']:.4g}", eval_acc=f"{row['eval_accuracy']:.3f}"
            )
        rows.append(row | {"wall_seconds": time.perf_counter() - start})
        if evaluated:  # keep what is done on disk, in case the run is killed
            write_table(pd.DataFrame(rows), run_dir / "metrics.parquet")

    def take_snapshot(step: int) -> None:
        tables, numbers = diagnostics.snapshot(model, task, *diag_batch, cfg.diagnostics, step)
        for name, table in tables.items():
            diag_tables.setdefault(name, []).append(table)
        tag = "init" if step == 0 else "final"
        if step in (0, tc.steps):
            diag_numbers.update({f"{k}_{tag}": v for k, v in numbers.items()})

    bar = tqdm(
        total=tc.steps,
        desc=label,
        disable=None if cfg.progress else True,
        mininterval=0.5,
        leave=False,
    )
    record(0, evaluated=True)
    if not math.isfinite(rows[-1]["eval_loss"]):  # the outputs overflow before any update
        status = "diverged"
    if 0 in diag_at:
        take_snapshot(0)
    for step in range(1, tc.steps + 1 if status == "ok" else 1):
        inputs, targets = (x.to(device) for x in task.sample(tc.batch_size, data))
        loss = task.loss(model(inputs, output_steps=task.output_steps), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = _grad_norm([p.grad for p in params if p.grad is not None])
        losses.append(loss.item())
        grad_norms.append(grad_norm.item())
        if not (math.isfinite(losses[-1]) and math.isfinite(grad_norms[-1])):
            status = "diverged"
            record(step, evaluated=True)
            break
        if tc.clip_grad_norm is not None:
            torch.nn.utils.clip_grads_with_norm_(params, tc.clip_grad_norm, grad_norm)
        optimizer.step()
        updates = step
        bar.update()
        # finite gradients can still make an update that overflows (a huge learning rate):
        # the largest |weight| catches it here, not at the next step, which the last never has
        if not math.isfinite(torch.nn.utils.get_total_norm(params, math.inf).item()):
            status = "diverged"
            record(step, evaluated=True)
            break
        evaluated = step % tc.eval_every == 0 or step == tc.steps
        if evaluated or step % tc.log_every == 0:
            record(step, evaluated)
        if evaluated and not math.isfinite(rows[-1]["eval_loss"]):  # the outputs overflowed
            status = "diverged"
            break
        if step in diag_at:
            take_snapshot(step)
    bar.close()

    for name, tables in diag_tables.items():
        write_table(pd.concat(tables, ignore_index=True), run_dir / f"{name}.parquet")
    write_table(pd.DataFrame(rows), run_dir / "metrics.parquet")
    with atomic_path(run_dir / "model.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    last = rows[-1]
    return {
        "status": status,
        "error": None,
        "steps_done": updates,  # a non-finite loss at step k stops before its update
        "final_eval_loss": last["eval_loss"],
        "final_eval_accuracy": last["eval_accuracy"],
        "best_eval_accuracy": best_accuracy,
        "baseline_loss": float(task.baseline_loss),
        "baseline_accuracy": float(getattr(task, "baseline_accuracy", math.nan)),  # optional
        "solved_step": solved_step,
        "n_params": model.n_params(),
    } | diag_numbers


# The summary's result columns, after the config columns, and their types: a failed run has
# the same columns as a finished one, empty where it got no value.
RESULT_TYPES = (
    {
        "status": "str",
        "error": "str",
        "steps_done": "Int64",
        "final_eval_loss": "float64",
        "final_eval_accuracy": "float64",
        "best_eval_accuracy": "float64",
        "baseline_loss": "float64",
        "baseline_accuracy": "float64",
        "solved_step": "Int64",
        "n_params": "Int64",
    }
    | {
        f"{k}_{tag}": "float64"
        for tag in ("init", "final")
        for k in ("memory_horizon", "log10_decay_rate", "lyapunov_exponent")
    }
    # threads: what null resolved to; onednn_products: rnnexp.gemm's rule on this machine
    | {"torch_threads": "Int64", "onednn_products": "boolean", "wall_seconds": "float64"}
)


def write_summary(run_dir: Path, columns: dict, values: dict) -> None:
    row = columns | {key: values.get(key) for key in RESULT_TYPES}
    frame = pd.DataFrame([row]).astype(RESULT_TYPES)
    write_table(frame, run_dir / "summary.parquet")


# what a config column must not be called: the summary's results, and the columns that
# load_runs adds (run_dir) or joins the config columns to (the long tables' own)
RESERVED_COLUMNS = {*RESULT_TYPES, "run_id", "run_dir", "step", "t", "lag", "norm", "index"}


def summary_columns(cfg: DictConfig, names: dict[str, str]) -> dict[str, Any]:
    """The summary's config columns, run_id last."""
    container = OmegaConf.to_container(cfg, resolve=True)
    columns = config_columns(container, names, reserved=RESERVED_COLUMNS)
    return columns | {"run_id": run_id(cfg)}


def refresh_config_columns(cfg: DictConfig, run_dir: Path, names: dict, prior: dict) -> None:
    """Rewrite a finished run's summary if it lacks config columns added to rnnexp since it
    ran (same run id: same config), so that a resumed sweep's table has one set of columns
    and the plots do not mistake the missing ones for differing settings."""
    columns = summary_columns(cfg, names)
    if set(columns) - set(prior):
        path = run_dir / "summary.parquet"
        ran = path.stat()
        write_summary(run_dir, columns, prior)
        os.utime(path, ns=(ran.st_atime_ns, ran.st_mtime_ns))  # still when it ran: skipped


def run_label(columns: dict) -> str:
    """'gru adding seq_len=100 seed=3': a run, for its progress bar and its last log line.
    seq_len, not T: the copy task's is its delay, its sequences 20 steps longer."""
    seq_len = columns.get("seq_len", "?")
    return f"{columns['cell']} {columns['task']} seq_len={seq_len} seed={columns['seed']}"


def run(cfg: DictConfig, run_dir: Path, names: dict[str, str], parallel: bool = False) -> dict:
    """One run into `run_dir`: config.yaml, then the tables, the summary last.

    Raises ConfigError before writing anything if the config is invalid. An exception in
    training is recorded as status `failed` with its message and re-raised; one before it (a
    task's or cell's constructor failing other than with a ValueError, say) is only re-raised,
    and the run, without a summary, is tried again on resume.
    """
    torch.manual_seed(cfg.seed)  # the model's initialisation draws from it
    task, model = build(cfg)
    _set_global_state(cfg, parallel)
    check_device_available(cfg.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    # a rerun (or a failed run's retry) is unfinished until it finishes again: an interrupted
    # one must not leave the old summary beside its own, cut-short tables
    (run_dir / "summary.parquet").unlink(missing_ok=True)
    write_text(OmegaConf.to_yaml(cfg, resolve=True), run_dir / "config.yaml")
    columns = summary_columns(cfg, names)
    label = run_label(columns)
    threads = torch.get_num_threads()  # _set_global_state's: the tables' last digits vary by it
    start = time.perf_counter()

    def finish(values: dict) -> dict:
        values |= {
            "torch_threads": threads,
            "onednn_products": gemm.large_products_use_onednn(cfg.device),
            "wall_seconds": time.perf_counter() - start,
        }
        write_summary(run_dir, columns, values)
        return values

    try:
        values = fit(cfg, task, model, run_dir, label)
    except Exception as e:  # not KeyboardInterrupt: an interrupted run stays unfinished
        finish({"status": "failed", "error": f"{type(e).__name__}: {e}"})
        raise
    return columns | finish(values)


# an absolute path: Hydra resolves a relative one against the module's package when the
# module is not __main__, which broke the rnnexp-train console script
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def app(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    names = {group: hc.runtime.choices.get(group) for group in ("cell", "task")}
    multirun = hc.mode == RunMode.MULTIRUN
    parallel = multirun and "BasicLauncher" not in hc.launcher._target_
    with _interruptible_job(parallel), run_lock(run_dir) as mine:
        if not mine:
            busy = f"{run_dir} is being run by another process"
            if not multirun:
                print(f"error: {busy}", file=sys.stderr)
                sys.exit(1)
            log.warning("skipped: %s", busy)
            return
        prior = read_summary(run_dir)  # the same config finished here before: a resumed sweep
        done = prior and prior["status"] in FINISHED and prior["run_id"] == run_id(cfg)
        if done and not cfg.rerun:
            refresh_config_columns(cfg, run_dir, names, prior)
            log.info("skipped: %s already holds a finished run (%s)", run_dir, prior["status"])
            return
        try:
            _run_and_log(cfg, run_dir, names, multirun, parallel)
        except KeyboardInterrupt as e:
            if multirun:  # the sweep's process reports; the run's log says what became of it
                if read_summary(run_dir) is None:  # not one that had just finished
                    log.warning("interrupted: no summary; the sweep's resume runs it again")
                raise
            _to_log_file("interrupted: no summary; its metrics so far are kept")
            raise RunInterrupted(run_dir) from e


def _to_log_file(message: str) -> None:
    """A warning in train.log alone: main says it on the console, in one line of its own."""
    record = log.makeRecord(log.name, logging.WARNING, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


class RunInterrupted(KeyboardInterrupt):
    """A Ctrl-C in a single run, carrying the run's folder to main's one line."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(str(run_dir))
        self.run_dir = run_dir


def _run_and_log(
    cfg: DictConfig, run_dir: Path, names: dict, multirun: bool, parallel: bool
) -> None:
    """`run`, then its one log line; a failure exits non-zero in a single run only."""
    try:
        summary = run(cfg, run_dir, names, parallel)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception:
        recorded = (run_dir / "summary.parquet").exists()
        why = "its summary says so" if recorded else "before training: no summary, resume retries"
        log.error("run failed; %s\n%s", why, traceback.format_exc())
        if not multirun:
            sys.exit(1)
        return
    log.info(
        "%s: %s: final eval loss %.4g (baseline %.4g), accuracy %.3f (%s, torch threads: %d). "
        "Tables in %s",
        run_label(summary),
        summary["status"],
        summary["final_eval_loss"],
        summary["baseline_loss"],
        summary["final_eval_accuracy"],
        cfg.device,
        torch.get_num_threads(),
        run_dir,
    )


# hydra/launcher choices -> (plugin module, package, this repository's extra that installs it)
LAUNCHER_PLUGINS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher", "sweep"),
    "submitit": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher", "sweep"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher", "sweep"),
    # with sweep, in one resolve: ray needs a cloudpickle < 3, which installing it later breaks
    "ray": ("hydra_plugins.hydra_ray_launcher", "hydra-ray-launcher", "sweep,ray"),
}


def missing_launcher(argv: list[str]) -> str | None:
    """The one-line error for a launcher this machine cannot run, else None: its plugin is not
    installed (Hydra would only say that the config `hydra/launcher/NAME` is not found), or
    `slurm` where there is no SLURM (submitit's 25-line traceback, once the sweep starts)."""
    for arg in argv:
        if arg.startswith("hydra/launcher="):
            choice = arg.split("=", 1)[1]
            for prefix, (module, package, extra) in LAUNCHER_PLUGINS.items():
                if choice.startswith(prefix) and importlib.util.find_spec(module) is None:
                    return f'hydra/launcher={choice} needs {package}: pip install -e ".[{extra}]"'
            if choice == "slurm" and shutil.which("srun") is None:
                return (
                    "hydra/launcher=slurm needs SLURM: no srun on this machine "
                    "(hydra/launcher=submitit_local runs the same jobs here)"
                )
    return None


SWEEP_FLAGS = ("-m", "--multirun", "hydra.mode=MULTIRUN")  # what makes a command a sweep


def _primary_config(argv: list[str]) -> tuple[str, list[str]] | None:
    """(the primary config's name, argv without -cn NAME), or None where argv has another of
    Hydra's flags: a config dir of one's own (-cd) takes Hydra's search path to compose with."""
    name, rest, args = "config", [], iter(argv)
    for a in args:
        if a in ("-cn", "--config-name"):
            name = next(args, "")
        elif a.startswith("--config-name="):
            name = a.partition("=")[2]
        elif a.startswith(("-", "hydra.mode")) and a not in SWEEP_FLAGS:
            return None
        else:
            rest.append(a)
    return (name, rest) if name else None


def check_single_run(argv: list[str]) -> None:
    """Compose and build a single run as `app` will, before Hydra makes its folder and log.

    So that a bad key, type or value ends in one line, exit code 2 and no folder, as in a
    sweep (whose grid the sweep callback checks). Of a multirun (-m) the overrides that sweep
    nothing are composed, as Hydra does first, so that a misspelt key or experiment fails the
    same way rather than in Hydra's multi-line dump. --config-name (-cn) is followed; Hydra's
    other flags (--config-dir, --cfg, --help, ...) are left to Hydra, as is the command then;
    of its own overrides only the search path and its groups matter here.
    Whether the machine has the device is checked in the run, after Hydra has applied
    hydra.job.env_set (CUDA_VISIBLE_DEVICES, say), which CUDA reads only once.
    """
    multirun = any(a in SWEEP_FLAGS for a in argv)
    if (named := _primary_config(argv)) is None:
        return
    config_name, argv = named
    # of Hydra's own overrides: the search path, and its groups (a launcher's name, say)
    mine = ("hydra.searchpath", "hydra/")
    overrides = [a for a in argv if not a.startswith(("-", "hydra")) or a.startswith(mine)]
    with hydra.initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        if multirun:  # (inside: a glob(...) sweep lists the config group's options)
            if not split_grid(overrides):
                raise ConfigError(f"the grid of {' '.join(overrides)} is empty: nothing to run")
            try:
                cfg = compose_checked(config_name, fixed_overrides(overrides))
            except ConfigError as e:
                if hint := swept_group_hint(overrides, str(e)):  # the default's keys mislead
                    raise ConfigError(f"{str(e).partition('; keys: ')[0]}{hint}") from e
                raise
        else:
            cfg = compose_checked(config_name, overrides)
            if swept := experiment_sweeps(overrides):  # without -m Hydra ignores its grid
                raise ConfigError(f"{swept}: add -m to run its grid")
    if not multirun:  # the sweep callback builds every point
        build(cfg)


def main() -> None:
    """Entry point of `python -m rnnexp.train` and `rnnexp-train`."""
    _skip_last_collection()
    try:
        if (error := missing_launcher(sys.argv[1:])) is not None:
            raise ConfigError(error)
        check_single_run(sys.argv[1:])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        app()
    except KeyboardInterrupt as e:  # Ctrl-C: one line, not a traceback through Hydra and joblib
        # joblib's job processes: a Ctrl-C that lands while joblib starts them reaches this
        # process only, and exiting would wait for their runs to end (hours: it hung, in 1 of 7
        # tries, and 1 of 3 before). Those it reached are ending anyway. One that outlives
        # SIGTERM would keep the sweep's stdout open after it exits (a CI run waited 120 s
        # once, never reproduced in 50 tries): killed after 5 s.
        children = multiprocessing.active_children()
        for child in children:
            child.terminate()
        for child in children:
            child.join(timeout=5)
            if child.is_alive():
                child.kill()
        if any(a in SWEEP_FLAGS for a in sys.argv[1:]):
            what = SweepCallback.interrupted_account()
        elif isinstance(e, RunInterrupted):
            what = f"{e.run_dir}: unfinished (no summary); its metrics so far are kept"
        else:  # before the run had a folder
            what = "the run had not started"
        _say(f"interrupted: {what}")
        sys.exit(130)


def _say(line: str) -> None:
    """A line on stderr that a closed pipe cannot turn into a traceback and exit status 1: a
    Ctrl-C in a terminal reaches `... 2>&1 | tee log` too, and tee may have died first."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:  # BrokenPipeError: and Python's own flush at exit would fail the same way
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                os.dup2(devnull, stream.fileno())


if __name__ == "__main__":
    main()
