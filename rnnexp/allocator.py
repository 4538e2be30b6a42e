"""Keep freed memory in the process, so that large buffers are not faulted in afresh each time.

The fused unrolls and the Jacobian snapshots allocate and free buffers of several MB on every
call: a step's gates, a chunk of one-step Jacobians and their products. glibc's malloc hands
freed blocks back to the kernel once they exceed its mmap threshold or once the free top of the
heap exceeds its trim threshold, so the next buffer of that size is faulted in again, 4 KiB
page by page. An all-lag LSTM snapshot (T=200, m=64, B=16) took 30-55 thousand minor page
faults; with both thresholds raised it takes none and runs about 20% faster (median of 5
process pairs on 2 cores: 491 -> 393 ms; tanh RNN 157 -> 125 ms, GRU 163 -> 157 ms). The
caching allocators PyTorch's CPU tuning guide recommends (jemalloc, tcmalloc) get the same by
keeping freed memory; this needs no preloaded library.

Raising the mmap threshold is not enough: glibc allows at most 32 MiB, and a block above it
is mmapped afresh on every call however high the trim threshold. So mmap is switched off
instead (M_MMAP_MAX = 0, which makes the mmap threshold moot): every block comes from the
heap, where freed memory stays up to the trim threshold. Long sequences need such blocks: an
LSTM training step at T = 1000, m = 128, B = 64 took 515 ms with 81 thousand page faults, and
395 ms with none (GRU 319 -> 263 ms); torch.nn.LSTM's oneDNN kernel takes a 50 MB workspace
per call at T = 100, m = 128, B = 64 (100 MB at m = 256), and its step took 27-33 ms with 8
thousand faults against 16-17 ms without (m = 256: 82 against 39-42 ms), and the faults' page
zeroing left the next step of ours slower too, from a cold cache. Without this a process got
torch's fast or slow LSTM depending on whether its heap happened to hold that much free memory
(results/bench/README.md, "Training step"). The cost: a process keeps its peak heap, up to
TRIM_THRESHOLD of it free at the top (an LSTM run at T = 1000 peaked at 972 MB of RSS against
882).

`retain_freed_memory()` is called at the start of every training run and by the benchmark.
It changes only the calling process, and memory it keeps stays available to that process.
"""

from __future__ import annotations

import ctypes
import platform

# glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
TRIM_THRESHOLD = 512 * 2**20  # free memory at the top of the heap kept up to this


def retain_freed_memory() -> bool:
    """Switch glibc's mmap off for this process and raise its trim threshold; False where
    there is no glibc.

    Idempotent and cheap, so every run can call it: joblib's and submitit's job processes do
    not inherit it from the process that launched them.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    no_mmap = bool(mallopt(_M_MMAP_MAX, 0))  # every block from the heap, however large
    return no_mmap and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
