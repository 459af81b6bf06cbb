"""Torch thread counts (candle_sklearn._threads)."""

import pytest
import torch


def test_torch_threads_nested_and_restored():
    from candle_sklearn._threads import effective_n_jobs, torch_threads
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
        with torch_threads(2):
            assert torch.get_num_threads() == 2
        with torch_threads(None):
            assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    assert effective_n_jobs(None) is None and effective_n_jobs(3) == 3
    assert effective_n_jobs(-10_000) == 1
    with pytest.raises((ValueError, RuntimeError, OverflowError)):  # torch refuses it
        with torch_threads(2 ** 63):
            pass
    with torch_threads(1):  # and the count is still restored afterwards
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
