"""The batched eigensolvers split over helper threads: the same eigenvalues as one LAPACK call
on one thread, the caller's thread count untouched, and no deadlock when a helper calls in."""

import contextlib
import os
import threading

import pytest
import torch

from rnnexp import lapack


@contextlib.contextmanager
def _torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def two_threads():
    with _torch_threads(2):
        yield


@pytest.fixture
def fresh_pool():
    """No pool before the test, and none left after it: the test makes its own."""

    def drop():
        if lapack._pool is not None:
            lapack._pool[2].shutdown()
            lapack._pool = None

    drop()
    yield
    drop()


def _grams(n: int, size: int) -> torch.Tensor:
    a = torch.randn(n, size, size, generator=torch.Generator().manual_seed(0))
    return a @ a.mT


def _one_thread(solver, x):
    with _torch_threads(1):
        return solver(x)


@pytest.mark.parametrize("n", [1, 2, 5])  # 5: parts of 3 and 2, back in batch order
def test_split_eigvalsh_is_lapack_on_one_thread(two_threads, n):
    g = _grams(n, 48)
    got = lapack.split_batch(torch.linalg.eigvalsh, g)
    torch.testing.assert_close(got, _one_thread(torch.linalg.eigvalsh, g), rtol=0, atol=0)
    top = torch.linalg.matrix_norm(g.double(), ord=2)  # SVD in float64: an independent check
    torch.testing.assert_close(got[:, -1].double(), top, rtol=1e-5, atol=0)
    assert torch.get_num_threads() == 2


def test_helpers_keep_one_torch_thread_and_the_caller_its_own(two_threads):
    counts = lapack.split_batch(lambda x: torch.tensor([torch.get_num_threads()]), _grams(2, 4))
    assert counts.tolist() == [1, 1]
    assert torch.get_num_threads() == 2


def test_threads_started_later_keep_the_callers_count(two_threads, fresh_pool):
    lapack.split_batch(torch.linalg.eigvalsh, _grams(1, 4))
    seen = []
    later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    later.start()
    later.join()
    assert seen == [2]


def test_a_helper_calling_in_runs_inline(two_threads):
    """A solver that calls split_batch from a helper runs inline there, even at 2 torch threads
    (a helper's own count is 1; the solver raises it): handed to the pool it would wait for the
    helpers it occupies, forever."""

    def nested(x):
        with _torch_threads(2):
            return lapack.split_batch(torch.linalg.eigvalsh, x)

    g = _grams(4, 6)
    done: list[torch.Tensor] = []
    outer = threading.Thread(target=lambda: done.append(lapack.split_batch(nested, g)), daemon=True)
    outer.start()
    outer.join(timeout=60)
    assert done, "a helper's nested call deadlocked"
    torch.testing.assert_close(done[0], _one_thread(torch.linalg.eigvalsh, g))


def test_one_torch_thread_solves_inline(monkeypatch):
    monkeypatch.setattr(lapack, "_executor", lambda workers: pytest.fail("no helpers at 1 thread"))
    with _torch_threads(1):
        assert lapack.split_batch(torch.linalg.eigvalsh, _grams(3, 5)).shape == (3, 5)


def test_a_forked_child_makes_a_pool_of_its_own(two_threads, fresh_pool, monkeypatch):
    lapack.split_batch(torch.linalg.eigvalsh, _grams(2, 4))
    parents = lapack._pool[2]
    monkeypatch.setattr(os, "getpid", lambda: -1)  # as in a forked child: the threads are gone
    g = _grams(2, 4)
    got = lapack.split_batch(torch.linalg.eigvalsh, g)
    torch.testing.assert_close(got, _one_thread(torch.linalg.eigvalsh, g))
    assert lapack._pool[2] is not parents
    parents.shutdown()  # it lives in this process, whatever getpid said; fresh_pool ends the other
