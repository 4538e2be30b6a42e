"""Hydra callback for multiruns: check the whole grid before any job, aggregate after the last.

Scheduling is Hydra's: its launchers (basic, joblib, submitit) run the jobs. This callback
only adds what a sweep of hundreds of runs needs around them:

- before any job starts, every grid point is composed and checked as a single run would be,
  so a bad value fails at once with the same one-line message, not after hours of jobs;
- after the last job, the sweep's one table (`summary.parquet` at the sweep root, every run in
  the folder), a report of this grid's runs, and a non-zero exit if one of them failed or
  has no result (a job process died, or another process is still training it).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rnnexp.aggregate import aggregate, report
from rnnexp.config import (
    ConfigError,
    check_values,
    compose_checked,
    experiment_grid,
    require,
    run_id,
    split_grid,
)
from rnnexp.results import FINISHED, is_held


def grid_points(config: DictConfig) -> list[list[str]]:
    """Every job's overrides: `hydra.sweeper.params` (an experiment's) extended by the command
    line's overrides."""
    params = config.hydra.sweeper.get("params") or {}
    overrides = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    # a search path given on the command line must hold when each point is composed
    search = [o for o in config.hydra.overrides.hydra if o.startswith("hydra.searchpath")]
    return [search + point for point in split_grid(overrides)]


def check_grid(config: DictConfig) -> set[str]:
    """Compose and build every grid point; raises ConfigError for the first bad one.

    Building (task and model) is cheap next to training; points differing only in seed are
    built once, every point's values checked. Returns the grid's run ids (the names of the run
    folders).
    """
    from rnnexp.train import build  # the entry point's own checks, no copy of them

    run_ids, seen, names = set(), set(), set()
    points = grid_points(config)
    _check_swept_experiments(config.hydra.job.config_name, points)
    for overrides in points:
        try:
            cfg = compose_checked(config.hydra.job.config_name, overrides)
            resolved = OmegaConf.to_container(cfg, resolve=True)  # seed=${name}, say
        except (ConfigError, OmegaConfBaseException) as e:
            raise ConfigError(f"{' '.join(overrides)}: {str(e).splitlines()[0]}") from e
        names.add(resolved["name"])
        if len(names) > 1:  # the callback reads and reports one folder: the others' runs would
            found = ", ".join(sorted(names))  # count as missing, and no table be written there
            raise ConfigError(
                f"name takes several values in this grid ({found}): a sweep writes one folder, "
                "results/sweeps/NAME/; run one command per name"
            )
        run_ids.add(run_id(cfg))
        key = json.dumps({k: v for k, v in resolved.items() if k != "seed"}, sort_keys=True)
        try:
            if key in seen:
                check_values(cfg)  # what building would check: the seed is all that differs
            else:
                seen.add(key)
                build(cfg)
        except ConfigError as e:  # which point: task=copy,recall task.seq_len=1 fails at recall
            at = " ".join(o for o in overrides if any(o not in other for other in points))
            raise ConfigError(f"{e} (at {at})" if at else str(e)) from e
    return run_ids


def _check_swept_experiments(config_name: str, points: list[list[str]]) -> None:
    """An experiment with a grid of its own (`hydra.sweeper.params`) cannot be one value of a
    sweep: Hydra expands the grid once, from the command line and a fixed experiment's params,
    so each job would run that experiment's defaults alone and drop its grid."""
    chosen = sorted({o for point in points for o in point if o.startswith("experiment=")})
    if len(chosen) < 2:
        return
    search = [o for o in points[0] if o.startswith("hydra.searchpath")]
    for choice in chosen:
        if experiment_grid(search, choice, config_name):
            raise ConfigError(
                f"experiment is swept ({', '.join(c.partition('=')[2] for c in chosen)}), and "
                f"{choice} has a grid of its own, which Hydra expands only for an experiment "
                f"the command fixes: run one command per experiment (-m {choice} ...)"
            )


def check_launcher(launcher: DictConfig) -> None:
    """The launcher key that joblib would reject only once the jobs start, with a traceback.

    The rest of `hydra.launcher` Hydra checks itself, as it composes the config (its schema
    makes n_jobs an integer).
    """
    if "joblib" in str(launcher.get("_target_", "")).lower():
        allowed = "a non-zero integer (-1: every core, -2: all but one, ...)"
        require(launcher.n_jobs != 0, "hydra.launcher.n_jobs", allowed, launcher.n_jobs)


class SweepCallback(Callback):
    # the sweep this process launches, once its grid is checked: what a Ctrl-C, which ends the
    # process without on_multirun_end, reports on (`interrupted_account`)
    current: SweepCallback | None = None

    def __init__(self) -> None:
        self.started = 0.0
        self.grid: set[str] = set()
        self.sweep_dir = Path()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()
        try:
            check_launcher(config.hydra.launcher)
            self.grid = check_grid(config)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        self.sweep_dir = Path(config.hydra.sweep.dir)
        SweepCallback.current = self

    @classmethod
    def interrupted_account(cls) -> str:
        """After a Ctrl-C: how many of this grid's runs finished (ok or diverged: what a resume
        skips), and the sweep's table rebuilt, so that they can be read before the resume."""
        sweep = cls.current
        if sweep is None:  # interrupted while the grid was being checked
            return "no run had started; run the same command again to start the sweep"
        try:  # the folder may not exist yet; a second Ctrl-C may land in here
            table = aggregate(sweep.sweep_dir)
        except (OSError, ValueError, KeyboardInterrupt):
            return "finished runs are kept; run the same command again to resume"
        finished = table[table["status"].isin(FINISHED)] if not table.empty else table
        done = len(sweep.grid & set(finished["run_id"])) if not table.empty else 0
        kept = f"in {sweep.sweep_dir / 'summary.parquet'}" if len(table) else "(no table written)"
        return (
            f"{done} of the sweep's {len(sweep.grid)} runs finished, kept {kept}; run the same "
            f"command again to resume the other {len(sweep.grid) - done}"
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        SweepCallback.current = None
        sweep_dir = Path(config.hydra.sweep.dir)
        table = aggregate(sweep_dir)  # every run in the folder: other grids' too
        ours = table[table["run_id"].isin(self.grid)] if not table.empty else table
        done = set(ours["run_id"]) if not ours.empty else set()
        skipped = sum(
            (sweep_dir / run / "summary.parquet").stat().st_mtime < self.started for run in done
        )
        missing = self.grid - done
        held = sum(is_held(sweep_dir / run) for run in missing)
        counts = {"missing": len(missing), "in_folder": len(table), "held": held}
        print(report(sweep_dir, ours, skipped=skipped, **counts))
        # this grid's runs only: one failed, or has no result (its job process died, or
        # another process holds it)
        if missing or (not ours.empty and (ours["status"] == "failed").any()):
            sys.exit(1)
