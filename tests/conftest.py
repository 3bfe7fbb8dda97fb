"""Helpers shared by the tests."""
import time

import pytest
import torch


def best_of_three(fn, *args, **kwargs):
    """(fn's result, the best of three wall times): one slow scheduler tick should not fail a timing test."""
    times = []
    for _ in range(3):
        t = time.perf_counter()
        result = fn(*args, **kwargs)
        times.append(time.perf_counter() - t)
    return result, min(times)


@pytest.fixture(scope="module")
def one_thread():
    # subtle: these matmuls are tiny; with other jobs on the two cores, two OpenMP threads ran the tests 5x slower.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
