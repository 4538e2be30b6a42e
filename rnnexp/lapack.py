"""Batched eigensolvers with the batch split over helper threads.

torch runs a batch of eigenproblems (`eigvalsh`, `eigh`) as a serial loop of LAPACK calls, one
matrix at a time, and MKL's threads inside one call gain nothing at a snapshot's sizes: on
2 cores 224 `eigvalsh` of 256 x 256 matrices (an LSTM snapshot's exact fallbacks at m = 128)
took 500 ms with torch's 2 threads and 467 with 1, against 215 with the batch split in two
halves, each on a helper thread running one torch thread. The helpers are kept for the next
call: a thread that starts for one call would start an OpenMP team of its own each time (the
batch split that way made snapshots 24-34% slower, results/bench/README.md). Only calls of
tens of milliseconds gain: the snapshot's per-chunk 8 x 8 Ritz `eigh`, a millisecond each,
made whole snapshots 11-14% slower on helpers, as the caller's OpenMP worker still spins on
the other core for a while after each op.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, pool)
_pool_lock = threading.Lock()
_helpers = threading.local()


def _one_torch_thread() -> None:
    """A new thread takes torch's process-wide count at its first op, so one op first: the
    count set after it is then this thread's own, whatever the caller's thread sets later."""
    torch.get_num_threads()
    torch.set_num_threads(1)
    _helpers.active = True


def _executor(workers: int) -> ThreadPoolExecutor:
    """The helpers, every one started: each helper's set_num_threads(1) also set the count that
    threads started later take at their first op, which the caller's count then resets."""
    global _pool
    with _pool_lock:  # a forked child has the parent's pool object but none of its threads
        if _pool is None or _pool[:2] != (os.getpid(), workers):
            if _pool is not None and _pool[0] == os.getpid():
                _pool[2].shutdown(wait=False)
            pool = ThreadPoolExecutor(workers, "rnnexp-lapack", initializer=_one_torch_thread)
            started = threading.Barrier(workers)  # held until all have run their initializer
            list(pool.map(lambda _: started.wait(), range(workers)))
            torch.set_num_threads(torch.get_num_threads())
            _pool = (os.getpid(), workers, pool)
        return _pool[2]


def split_batch(solver: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """solver(x) for a batch x (N, k, k), on CPU in parts on torch.get_num_threads() helper
    threads of one torch thread each. With one torch thread (a parallel sweep's job) solver(x)
    runs as it is, so on CPU every matrix is solved by LAPACK on one thread, alike whatever the
    thread count and however the batch is split."""
    threads = torch.get_num_threads()
    if threads < 2 or x.device.type != "cpu" or getattr(_helpers, "active", False):
        return solver(x)
    parts = _executor(threads).map(solver, x.tensor_split(max(1, min(threads, len(x)))))
    return torch.cat(list(parts))
