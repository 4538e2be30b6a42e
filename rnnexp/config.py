"""Structured configs: the schema every composed config is checked against.

The dataclasses below are stored in Hydra's ConfigStore under `schema/`; the YAML files under
`conf/` extend them, so a misspelt key or a wrong type fails at composition (Hydra's message,
condensed to one line by `compose_checked`). Ranges that types cannot express are checked by
`check_values`, and the cells' and tasks' own constructors check theirs; `ConfigError` carries
either as one line naming the key.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import PurePosixPath
from typing import Any

import hydra
import torch
import yaml
from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A config value out of range: the message is one line, `key must be ..., got ...`."""


@dataclass
class GRUConfig:
    """The constructor arguments every cell takes (but input_size, which the task sets)."""

    _target_: str = "rnnexp.cells.GRUCell"
    hidden_size: int = 64
    init: str = "default"
    init_scale: float = 1.0
    bias: bool = True


@dataclass
class RNNConfig(GRUConfig):
    _target_: str = "rnnexp.cells.RNNCell"
    nonlinearity: str = "tanh"


@dataclass
class LSTMConfig(GRUConfig):
    _target_: str = "rnnexp.cells.LSTMCell"
    forget_bias: float | None = None
    chrono_max_len: int | None = None


OPTIMIZERS = {"adam": "Adam", "rmsprop": "RMSprop", "sgd": "SGD"}  # config name: torch.optim class


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    clip_grad_norm: float | None = 1.0  # null: no clipping (the norm is still recorded)
    log_every: int = 10  # a metrics row (train loss, grad norm) every this many steps
    eval_every: int = 100  # evaluation on the fixed batch every this many steps
    eval_batch_size: int = 1000


@dataclass
class DiagnosticsConfig:
    enabled: bool = True
    batch_size: int = 16  # the first samples of the fixed evaluation batch
    schedule: str = "log"  # log: `snapshots` log-spaced steps; every: each `every` steps
    snapshots: int = 6
    every: int = 500
    norm: str = "2"  # "2" (spectral) or "fro"
    threshold: float = 1e-3  # memory horizon: first lag whose median norm falls below this
    lyapunov_k: int = 1


@dataclass
class Config:
    cell: Any = MISSING
    task: Any = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None  # torch threads per run; null: 1 in parallel sweeps, else torch's
    progress: bool = True
    rerun: bool = False  # recompute a run even if its folder already holds a finished one
    name: str = "default"  # the sweep's folder under results/sweeps/


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(group="schema", name="config", node=Config)
    for name, node in [("rnn", RNNConfig), ("gru", GRUConfig), ("lstm", LSTMConfig)]:
        cs.store(group="schema/cell", name=name, node=node)


def require(ok: bool, key: str, allowed: str, value: Any) -> None:
    """The one-line ConfigError, `key must be <allowed>, got <value>`, unless ok."""
    if not ok:
        raise ConfigError(f"{key} must be {allowed}, got {value!r}")


def _check_known_keys(cfg: DictConfig) -> None:
    """The schema's keys, no more and no fewer: `+train.step=10`, as Hydra suggests for a
    misspelt key, would otherwise be stored in config.yaml and ignored, and a key removed with
    `~seed` would fail mid-run with a traceback, after the run's folder is made."""
    for prefix, schema in (
        ("", Config),
        ("train.", TrainConfig),
        ("diagnostics.", DiagnosticsConfig),
    ):
        node = OmegaConf.select(cfg, prefix[:-1]) if prefix else cfg
        known = [f.name for f in fields(schema)]
        for key in node:
            if key not in known and not (node is cfg and key == "hydra"):
                raise ConfigError(f"{prefix}{key} is not a config key; keys: {', '.join(known)}")
        for key in known:
            if key not in node:
                raise ConfigError(
                    f"{prefix}{key} cannot be removed (~{prefix}{key}): every run needs it"
                )


def _group_options(missing: str) -> list[str]:
    """The options of the group a missing config was asked of, those in its subfolders too
    (`experiment=paper/adding`): Hydra's own list names only one folder's."""
    parts = missing.split("/")
    group = "/".join(parts[:2] if parts[0] == "hydra" else parts[:1])
    loader = GlobalHydra.instance().config_loader()
    options = list(loader.get_group_options(group))
    for sub in loader.list_groups(group):
        options += [f"{sub}/{name}" for name in loader.get_group_options(f"{group}/{sub}")]
    return options


def compose_checked(config_name: str, overrides: list[str]) -> DictConfig:
    """Hydra's compose, with its complaint (a misspelt key, a wrong type, a missing config
    file) as one ConfigError line instead of several."""
    try:
        return compose(config_name, overrides=overrides)
    except MissingConfigException as e:
        # Hydra's own list has the search path's options, ours the group's subfolders
        options = (
            [*dict.fromkeys([*e.options, *_group_options(e.missing_cfg_file)])] if e.options else []
        )
        available = f"; available: {', '.join(options)}" if options else ""
        if any(o.startswith("+") and "hydra.searchpath" in o.split("=")[0] for o in overrides):
            # Hydra reads the search path before composing, from the command line's own key
            available += "; hydra.searchpath=[...] takes no +"
        raise ConfigError(str(e).splitlines()[0] + available) from e
    except yaml.YAMLError as e:  # a config file of one's own that is not valid YAML
        where = getattr(e, "problem_mark", None)
        place = f"{where.name}, line {where.line + 1}" if where else "a config file"
        raise ConfigError(f"{place}: not valid YAML: {getattr(e, 'problem', e)}") from e
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        lines = [str(e).splitlines()[0]]
        if isinstance(e, OverrideParseException):  # which of the overrides Hydra could not parse
            lines.insert(0, e.override)  # (as _parse_overrides says it)
        if e.__cause__ is not None:  # OmegaConf's reason: the key, the type
            lines.append(str(e.__cause__).splitlines()[0])
        if lines[0].startswith("Ambiguous value"):  # a list of values: a sweep, or a list
            lines.append("to sweep over it, add -m; for a list, key=[a,b]")
        message = ": ".join(line.rstrip(".") for line in lines)
        if lines[0].startswith("Could not override '"):  # a misspelt key: say which there are
            message += _keys_hint(config_name, overrides, lines[0].split("'")[1])
        raise ConfigError(message) from e


def _keys_hint(config_name: str, overrides: list[str], key: str) -> str:
    """'; keys: a, b, ...' of the node that `key` (misspelt) was meant for, as composed without
    it: what `+train.step` gets from _check_known_keys, and a cell's or task's own keys."""
    parent = key.rpartition(".")[0]
    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    try:
        cfg = compose(config_name, overrides=rest)
    except (HydraException, OmegaConfBaseException, ValueError):
        return ""
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if not isinstance(node, DictConfig):
        return ""
    hint = "; keys: " + ", ".join(str(k) for k in node if not str(k).startswith("_"))
    target = node.get("_target_")  # a cell's or task's YAML may set only some of its arguments
    if unset := [k for k in constructor_keys(target) if k not in node] if target else []:
        hint += f"; its class also takes {', '.join(unset)} (set as +{parent}.KEY=...)"
    return hint


def constructor_keys(target: str) -> list[str]:
    """The named arguments of the class `target` names (its base classes' through **kwargs
    too, as a cell of one's own passes init and bias on), for a misspelt key's hint."""
    try:
        cls = hydra.utils.get_class(target)
    except Exception:  # only a hint: the error itself is reported anyway
        return []
    keys: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = list(inspect.signature(klass.__init__).parameters.values())[1:]
        keys += [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return [k for k in dict.fromkeys(keys) if k != "input_size"]


def _parse_overrides(overrides: list[str]) -> list:
    """Hydra's parse of command-line overrides, with its config loader (a glob(...) sweep lists
    its config group's options: call this with Hydra initialised); an override it cannot
    parse is a ConfigError naming it."""
    loader = GlobalHydra.instance().config_loader()
    try:
        return OverridesParser.create(config_loader=loader).parse_overrides(overrides)
    except OverrideParseException as e:
        raise ConfigError(f"{e.override}: {e.message.splitlines()[0]}") from e


def experiment_grid(search: list[str], experiment: str, config_name: str = "config") -> dict:
    """The grid an experiment (`experiment=x`) holds in its `hydra.sweeper.params`, {} if none
    or if it does not compose (its own error, which composing its runs reports)."""
    try:
        cfg = compose(config_name, [*search, experiment], return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, ValueError):
        return {}
    return dict(cfg.hydra.sweeper.get("params") or {})


def _swept_groups(parsed: list) -> dict[str, str]:
    """{group: ''} for the groups the command line sweeps, and {group: ' (by experiment=x)'}
    for those an experiment chosen there sweeps in its `hydra.sweeper.params`, unless the
    command line fixes them (`cell=gru` beats the experiment's `cell: rnn,gru`)."""
    swept = {o.key_or_group: "" for o in parsed if o.is_sweep_override()}
    fixed = {o.key_or_group for o in parsed if not o.is_sweep_override()}
    chosen = [o for o in parsed if not o.is_sweep_override() and o.key_or_group == "experiment"]
    if chosen:
        search = [o.input_line for o in parsed if o.key_or_group == "hydra.searchpath"]
        experiment = chosen[-1].input_line
        for group in experiment_grid(search, experiment):
            if str(group) not in fixed:
                swept.setdefault(str(group), f" (by {experiment})")
    return swept


def swept_group_hint(overrides: list[str], error: str) -> str:
    """How to set, per run, a fixed key of a swept group that `error` rejects, or ''.

    Hydra checks a multirun's fixed overrides against each swept group's default, so
    `-m cell=rnn,irnn cell.nonlinearity=relu` fails on the default LSTM's config; as a
    one-value sweep, `cell.nonlinearity=choice(relu)`, the key is set in each run instead.
    The same holds for a group that an experiment sweeps (`-m experiment=smoke`).
    """
    parsed = _parse_overrides(overrides)
    swept = _swept_groups(parsed)
    for o in parsed:
        key = o.key_or_group
        group = key.split(".")[0]
        if not o.is_sweep_override() and group in swept and f"'{key}'" in error:
            value = o.get_value_element_as_str()
            return (
                f"; {group} is swept{swept[group]}, and its default is what fixed keys are "
                f"checked against: to set it in each run, write {key}=choice({value})"
            )
    return ""


def experiment_sweeps(overrides: list[str]) -> str:
    """'experiment=x sweeps cell, task' where an experiment chosen in `overrides` sweeps
    groups that they leave unfixed, else ''. Without -m Hydra ignores its
    `hydra.sweeper.params`: one run of the defaults, and no word that the grid was skipped."""
    parsed = _parse_overrides(overrides)
    by = [group for group, why in _swept_groups(parsed).items() if why]
    if not by:
        return ""
    experiment = [o.input_line for o in parsed if o.key_or_group == "experiment"][-1]
    return f"{experiment} sweeps {', '.join(by)}"


def split_grid(overrides: list[str]) -> list[list[str]]:
    """The grid's points, each a list of plain overrides, as Hydra's BasicSweeper expands them
    (later keys winning)."""
    parsed = _parse_overrides(overrides)
    try:
        return BasicSweeper.split_arguments(parsed, None)[0]
    except HydraException as e:  # a sweep the basic sweeper cannot expand: interval(...)
        sweeps = " ".join(o.input_line for o in parsed if o.is_sweep_override())
        allowed = "lists a,b, range(), choice(), glob()"
        raise ConfigError(f"{sweeps}: {str(e).splitlines()[0]}; it expands {allowed}") from e


def fixed_overrides(overrides: list[str]) -> list[str]:
    """The overrides that sweep nothing: what Hydra composes a multirun's config from before
    any job, so that they combine with an experiment's `hydra.sweeper.params`."""
    return [o.input_line for o in _parse_overrides(overrides) if not o.is_sweep_override()]


SEED_MAX = 2**64 - 1  # what torch.Generator.manual_seed takes


def check_values(cfg: DictConfig) -> None:
    """Range checks for the trainer's own keys, before any work starts."""
    _check_known_keys(cfg)
    t, d = cfg.train, cfg.diagnostics
    require(t.steps >= 1, "train.steps", "an integer >= 1", t.steps)
    require(t.batch_size >= 1, "train.batch_size", "an integer >= 1", t.batch_size)
    require(
        t.optimizer in OPTIMIZERS, "train.optimizer", f"one of {', '.join(OPTIMIZERS)}", t.optimizer
    )
    require(0 < t.lr < math.inf, "train.lr", "a finite number > 0", t.lr)
    require(
        t.clip_grad_norm is None or t.clip_grad_norm > 0,
        "train.clip_grad_norm",
        "null or a number > 0",
        t.clip_grad_norm,
    )
    require(t.log_every >= 1, "train.log_every", "an integer >= 1", t.log_every)
    require(t.eval_every >= 1, "train.eval_every", "an integer >= 1", t.eval_every)
    require(t.eval_batch_size >= 1, "train.eval_batch_size", "an integer >= 1", t.eval_batch_size)
    require(d.batch_size >= 1, "diagnostics.batch_size", "an integer >= 1", d.batch_size)
    require(
        d.batch_size <= t.eval_batch_size,
        "diagnostics.batch_size",
        f"<= train.eval_batch_size ({t.eval_batch_size})",
        d.batch_size,
    )
    require(d.schedule in ("log", "every"), "diagnostics.schedule", "'log' or 'every'", d.schedule)
    require(d.snapshots >= 2, "diagnostics.snapshots", "an integer >= 2", d.snapshots)
    require(d.every >= 1, "diagnostics.every", "an integer >= 1", d.every)
    require(d.norm in ("2", "fro"), "diagnostics.norm", "'2' or 'fro'", d.norm)
    require(0 < d.threshold < 1, "diagnostics.threshold", "a number in (0, 1)", d.threshold)
    require(d.lyapunov_k >= 1, "diagnostics.lyapunov_k", "an integer >= 1", d.lyapunov_k)
    require(0 <= cfg.seed <= SEED_MAX, "seed", f"an integer in [0, {SEED_MAX}]", cfg.seed)
    require(
        cfg.threads is None or cfg.threads >= 1, "threads", "null or an integer >= 1", cfg.threads
    )
    name = PurePosixPath(cfg.name)
    below = name.parts and not name.is_absolute() and ".." not in name.parts
    allowed = "a folder name under results/sweeps/ (not empty, absolute or with ..)"
    require(bool(below), "name", allowed, cfg.name)
    device_names = "a torch device: cpu (no index), cuda, cuda:1, ..."
    require(_is_device_name(cfg.device), "device", device_names, cfg.device)


def _is_device_name(name: str) -> bool:
    """A name torch parses, and no CPU index: torch ignores it, so `cpu:1` would run on the
    CPU under a run id of its own."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        return False
    return device.type != "cpu" or device.index is None


def check_device_available(name: str) -> None:
    """That this machine has the device: at the start of a run, not in a sweep's grid check,
    whose launching host (a SLURM login node, say) may lack the GPUs of the compute nodes."""
    device = torch.device(name)
    if device.type == "cpu":
        return
    available = torch.accelerator.is_available()
    accelerator = torch.accelerator.current_accelerator() if available else None
    count = torch.accelerator.device_count() if available else 0
    have = ", ".join(["cpu", *(f"{accelerator.type}:{i}" for i in range(count))])
    ok = accelerator is not None and device.type == accelerator.type
    require(ok and (device.index or 0) < count, "device", f"one this machine has ({have})", name)


# Keys that change neither what a run computes nor its tables.
NOT_HASHED = ("hydra", "rerun", "progress", "threads", "name")


def run_id(cfg: DictConfig) -> str:
    """A short hash of the resolved config, without Hydra's internals and output settings.

    Sweep folders are named by it, so a re-run of a sweep finds its finished runs whatever the
    job numbers, and a changed YAML default is a new run rather than a stale reuse.
    """
    kept = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in NOT_HASHED])
    blob = json.dumps(OmegaConf.to_container(kept, resolve=True), sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _run_id_resolver(*, _root_: DictConfig) -> str:
    return run_id(_root_)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", _run_id_resolver)
