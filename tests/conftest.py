"""Shared helpers: run the command-line entry points as a user would, in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# A few steps of a tiny model: enough to exercise every code path, quick on 2 cores.
TINY = [
    "train.steps=6",
    "train.eval_every=3",
    "train.log_every=2",
    "train.eval_batch_size=32",
    "train.batch_size=8",
    "diagnostics.batch_size=4",
    "diagnostics.snapshots=3",
    "cell.hidden_size=8",
    "task.seq_len=6",
    "progress=false",
]


def user_env(one_thread: bool = True) -> dict[str, str]:
    """The environment of a test's subprocess: a user's shell, without HYDRA_FULL_ERROR.

    one_thread: OMP_NUM_THREADS=1, torch's default then (two threads on a busy 2-core machine
    spin-wait for each other); False leaves torch's own default, as a user's shell would.
    """
    drop = ("HYDRA_FULL_ERROR", "OMP_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    if one_thread:
        env["OMP_NUM_THREADS"] = "1"
    return env


def cli(
    *args: str, module: str = "rnnexp.train", timeout: int = 600, one_thread: bool = True
) -> subprocess.CompletedProcess:
    """`python -m module args...` from the repository root; stdout and stderr captured."""
    env = user_env(one_thread)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


# The Hydra override that adds tests/conf/ to the config search path: tasks from outside.
TESTS_CONF = f"hydra.searchpath=[file://{REPO / 'tests' / 'conf'}]"


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Assert that a command succeeded, showing the end of its stderr if it did not."""
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture
def float64_default():
    """float64 as torch's default dtype for one test, then back: it is process-wide, and set
    at a module's import it would hold for every test collected after it."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
