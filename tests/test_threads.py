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


def test_prediction_threads_follow_the_input_and_the_free_cores(monkeypatch):
    """n_jobs=None: one thread for small inputs; for bulk ones no more than the cores the
    load average leaves free; an explicit n_jobs as it is."""
    import os

    import torch

    from candle_sklearn import _threads

    monkeypatch.setattr(os, "getloadavg", lambda: (1.6, 1.0, 1.0))
    monkeypatch.setattr("joblib.cpu_count", lambda: 2)
    assert _threads.free_cores() == 1
    assert _threads.serving_n_jobs(None, 1) == 1
    assert _threads.serving_n_jobs(None, 10_000) == min(torch.get_num_threads(), 1)
    assert _threads.serving_n_jobs(3, 1) == 3
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert _threads.free_cores() == 2


def test_fit_and_embedding_threads_stay_within_the_free_cores(monkeypatch):
    """A fit on a busy 2-core machine ran 2 to 5 times slower with torch's default threads
    than with one (issue 26, item 9): n_jobs=None now stays within the free cores."""
    import os

    import numpy as np
    import torch

    from candle_sklearn import CandleClassifier, _threads

    monkeypatch.setattr(os, "getloadavg", lambda: (1.6, 1.0, 1.0))
    monkeypatch.setattr("joblib.cpu_count", lambda: 2)
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert _threads.working_n_jobs(None) == 1
        assert _threads.working_n_jobs(2) == 2
        seen = []
        monkeypatch.setattr(CandleClassifier, "_fit", lambda self, X, y: seen.append(
            torch.get_num_threads()) or self)
        CandleClassifier().fit(np.ones((4, 4)), [0, 1, 0, 1])
        assert seen == [1]
        assert torch.get_num_threads() == 2  # restored after the fit
    finally:
        torch.set_num_threads(saved)
