"""Table I/O: every run's tables are Parquet files beside its resolved config.

A run folder holds `config.yaml` (the resolved config), `summary.parquet` (one row, written
last, so its presence means the run finished as ok, diverged or failed), `metrics.parquet`,
`model.pt` (the final state_dict) and, with diagnostics on, `jacobians.parquet`,
`gradients.parquet` and `lyapunov.parquet`, and an empty `.lock` (`run_lock`). Nothing in
it needs the code to be read. Every write is atomic (a temporary file, then a rename), so a
killed run never leaves a truncated table.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; two processes may then repeat a run
    fcntl = None

TABLES = ("summary", "metrics", "jacobians", "gradients", "lyapunov")
FINISHED = ("ok", "diverged")  # statuses a resumed sweep does not recompute


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path`, renamed onto it if the block succeeds.

    Readers see the old file or the new one, never half of one. The file gets the mode any new
    file would (0666 less the umask), not mkstemp's 0600, which would hide the results from
    the rest of a group sharing a cluster's results folder.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[bool]:
    """Hold `run_dir/.lock` for the block; yields False if another process holds it.

    So that two launches of the same sweep (by mistake, or on purpose as two workers) never
    train the same run twice: the second skips what the first is running. An advisory `flock`,
    which the kernel drops when its holder dies, so a killed run never leaves a stale lock.
    Where the file system cannot lock (some network mounts), the block runs unlocked.
    """
    if fcntl is None:
        yield True
        return
    fd = os.open(Path(run_dir) / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        except OSError:  # ENOLCK and the like: no locking here, not a reason to stop
            pass
        yield True
    finally:
        os.close(fd)  # releases the lock


def is_held(run_dir: str | os.PathLike) -> bool:
    """Whether another process holds `run_dir`'s lock now: the run is training there."""
    if not (Path(run_dir) / ".lock").exists():  # never started: no lock file to create
        return False
    with run_lock(run_dir) as mine:
        return not mine


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def config_columns(
    cfg: Mapping[str, Any], choices: Mapping[str, str], reserved: Collection[str] = ()
) -> dict[str, Any]:
    """The config values a sweep may vary, as flat summary columns: every one that the run id
    hashes, so that runs told apart by their id are told apart by their columns too.

    `cell` and `task` hold the config choices' names (e.g. irnn, copy), not the classes. The
    cell's, task's and train's keys keep their own names (hidden_size, seq_len, lr, ...). A key
    of a cell or task of one's own that would clash with a column of the fixed schema (train's
    keys, `seed`, `device`, ...), with an earlier group's key or with a `reserved` name (the
    results beside them: `status`, `steps_done`, ...) gets its group's prefix (`cell_steps`,
    `task_lr`, `task_status`), rather than overwriting it or being overwritten; the
    diagnostics' keys are all prefixed `diagnostics_` (their batch_size is not train's).
    """
    cols: dict[str, Any] = {"cell": choices["cell"], "task": choices["task"], "seed": cfg["seed"]}
    fixed = {"device", *cfg["train"], *reserved}  # beside cols: the earlier groups' keys
    for group in ("cell", "train", "task"):
        for key, value in cfg[group].items():
            if key.startswith("_"):
                continue
            clash = group != "train" and (key in cols or key in fixed)
            cols[f"{group}_{key}" if clash else key] = value
    cols |= {f"diagnostics_{key}": value for key, value in cfg["diagnostics"].items()}
    cols["device"] = cfg["device"]
    return cols


def _summary_frame(run_dir: Path) -> pd.DataFrame | None:
    """The run's summary table; None if there is none, or if it cannot be read (we write it
    atomically, but a copy from a cluster can truncate it): that run counts as unfinished,
    so a resumed sweep trains it again rather than failing on it."""
    path = run_dir / "summary.parquet"
    if not path.exists():
        return None
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as e:
        warnings.warn(f"{path} cannot be read ({e}); that run counts as unfinished", stacklevel=3)
        return None


def read_summary(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's summary row as a dict, or None if the run never finished."""
    frame = _summary_frame(Path(run_dir))
    return None if frame is None or frame.empty else frame.iloc[0].to_dict()


def run_dirs(path: str | os.PathLike) -> Iterator[Path]:
    """Finished run folders under `path` (itself included), in a stable order."""
    root = Path(path)
    for summary in sorted(root.rglob("summary.parquet")):
        if (summary.parent / "config.yaml").exists():
            yield summary.parent


def load_runs(path: str | os.PathLike, table: str = "summary") -> pd.DataFrame:
    """One DataFrame with `table` of every finished run under `path`, config columns included.

    For the other tables (metrics, jacobians, gradients, lyapunov) each row also carries its run's
    config columns and `run_id`, so a notebook can group by cell, seq_len, seed, ... directly.
    `run_dir` is added on loading (it is where the run lies now, not part of the results).
    """
    if table not in TABLES:
        raise ValueError(f"table must be one of {', '.join(TABLES)}; got {table!r}")
    if not Path(path).is_dir():  # not an empty table: a typo would pass for "no runs yet"
        raise NotADirectoryError(f"{path} is not a folder (a sweep's or a run's)")
    frames = []
    for run in run_dirs(path):
        summary = _summary_frame(run)
        if summary is None:
            continue
        if table == "summary":
            frame = summary
        else:
            file = run / f"{table}.parquet"
            if not file.exists():
                continue
            frame = summary[_config_names(summary)].merge(pd.read_parquet(file), how="cross")
        frames.append(frame.assign(run_dir=str(run)))
    if not frames:
        return pd.DataFrame()
    dtypes = _integer_dtypes(frames)
    table = pd.concat(frames, ignore_index=True).infer_objects()
    for column, dtype in dtypes.items():
        table[column] = table[column].astype(dtype)
    # runs of different tasks have different config keys: keep every config column first
    config = [*dict.fromkeys(c for f in frames for c in _config_names(f) if c != "run_id")]
    config.append("run_id")
    return table[config + [c for c in table.columns if c not in config]]


def _integer_dtypes(frames: list[pd.DataFrame]) -> dict[str, Any]:
    """The dtype that keeps each integer column exact where pandas' concat would not.

    An integer key that some runs lack or hold null (copy's n_symbols beside adding runs, the
    plain LSTM's chrono_max_len beside lstm_chrono's) would turn float64 through its NaNs:
    pandas' nullable Int64 keeps it an integer, with <NA>. A seed from 2^63 up is stored
    uint64, and uint64 beside int64 would turn float64 too, rounding those seeds: both become
    uint64 (UInt64 with gaps), or Python ints where a negative value is among them. The
    frames' columns are cast in place (float64 on the way through concat would round); the
    dtypes returned are for the concatenated table, whose missing entries concat fills.
    """
    is_int = pd.api.types.is_integer_dtype
    dtypes: dict[str, Any] = {}
    for column in {c for f in frames for c, t in f.dtypes.items() if is_int(t)}:
        held = [f[column] for f in frames if column in f and f[column].notna().any()]
        if not held or not all(is_int(values) for values in held):
            continue  # all null, or a float or a string in some run: pandas' own promotion
        unsigned = [pd.api.types.is_unsigned_integer_dtype(values) for values in held]
        gaps = len(held) < len(frames) or any(values.isna().any() for values in held)
        if all(unsigned) or not any(unsigned):
            if gaps:
                dtypes[column] = "UInt64" if all(unsigned) else "Int64"
        elif all((values >= 0).all() for values in held):
            dtypes[column] = "UInt64" if gaps else "uint64"
        else:
            dtypes[column] = object
        if column in dtypes:
            for f in frames:
                if column in f:
                    f[column] = f[column].astype(dtypes[column])
    return dtypes


def _config_names(table: pd.DataFrame) -> list[str]:
    """The config columns of a run's table: up to `run_id`, which ends them in a summary."""
    names = list(table.columns)
    return names[: names.index("run_id") + 1] if "run_id" in names else []
