"""retain_freed_memory: freed buffers are reused without page faults (counted by the kernel)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

CHURN = """
import ctypes, resource, sys, torch
from rnnexp import allocator

# glibc's initial, static thresholds (its own adapt with the history of frees, which would
# make the baseline vary from run to run): every block of 128 KiB or more is mmapped
mallopt = ctypes.CDLL(None).mallopt
assert mallopt(allocator._M_MMAP_THRESHOLD, 128 * 1024)
assert mallopt(allocator._M_TRIM_THRESHOLD, 128 * 1024)
if sys.argv[1] == "retain":
    assert allocator.retain_freed_memory()

def churn():  # what a snapshot chunk or a training step does: large buffers, touched, freed
    buffers = [torch.ones(2**21) for _ in range(4)]  # 4 x 8 MiB
    del buffers
    if sys.argv[2] == "large":  # above glibc's largest mmap threshold (32 MiB): a long sequence's
        buffers = [torch.ones(2**24)]  # 64 MiB of gates, torch.nn.LSTM's workspace
        del buffers

faults = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    churn()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(faults)[5])  # the median: the first churns may still grow the heap
"""


def _faults_per_churn(mode: str, sizes: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CHURN, mode, sizes], capture_output=True, text=True, check=True
    )
    return float(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
@pytest.mark.parametrize("sizes", ["small", "large"])
def test_retained_memory_is_reused_without_page_faults(sizes):
    default, retained = _faults_per_churn("default", sizes), _faults_per_churn("retain", sizes)
    pages = (4 * 8 + (64 if sizes == "large" else 0)) * 2**20 // 4096
    assert default >= pages  # each buffer handed back to the kernel, then faulted in afresh
    assert retained <= pages / 100


def test_without_glibc_it_declines(monkeypatch):
    from rnnexp import allocator

    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert allocator.retain_freed_memory() is False
