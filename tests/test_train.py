"""Training (candle_sklearn._train): seeding and the step budget."""

import numpy as np


def test_seeded_seeds_and_restores_the_mps_generator(monkeypatch):
    """On MPS, dropout draws from the MPS generator: a seeded fit seeds it (so that
    random_state reproduces the fit) and restores the caller's state after."""
    import torch

    from candle_sklearn._train import seeded

    calls, state = [], {"mps": torch.tensor([7])}
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda device="mps": state["mps"])
    monkeypatch.setattr(torch.mps, "set_rng_state",
                        lambda new, device="mps": calls.append(("restore", int(new[0]))))
    monkeypatch.setattr(torch.mps, "manual_seed", lambda seed: calls.append(("seed", seed)))
    with seeded(5, torch.device("mps")):
        assert calls == [("seed", 5)]
    assert calls == [("seed", 5), ("restore", 7)]


def test_reference_recipe_trains_its_fifty_epochs_whatever_the_step_cap():
    # the default max_steps=200 must not cut the reference's 50 epochs short
    from candle_sklearn import CandleClassifier
    from candle_sklearn import REFERENCE_RECIPE

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((600, 8)), np.arange(600) % 3
    clf = CandleClassifier(**REFERENCE_RECIPE, random_state=0).fit(X, y)
    assert clf.n_iter_ == 50 * 5 > CandleClassifier().max_steps
