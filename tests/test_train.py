"""Training (candle_sklearn._train): seeding and the step budget."""

import numpy as np
import pytest


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


def test_a_collapsed_fit_is_an_error_not_a_model():
    """With lr=1 the loss rises and every prediction is about uniform: the fit must say
    so, as it does for non-finite values (issue: a collapse that passed in silence)."""
    import pytest

    from candle_sklearn import CandleClassifier
    from candle_sklearn.datasets import make_clip_like_features
    from candle_sklearn.exceptions import TrainingDivergedError

    d = make_clip_like_features(n_base=4, n_new=0, dim=64, max_per_class=30, random_state=0)
    params = dict(classes=d.classes[:4], text_features=d.text_features[:4], max_epochs=5,
                  device="cpu", random_state=0)
    with pytest.raises(TrainingDivergedError, match="collapsed"):
        CandleClassifier(lr=1.0, **params).fit(d.X_train, d.y_train)
    fitted = CandleClassifier(**params).fit(d.X_train, d.y_train)  # the default learns
    assert fitted.history_[-1] < fitted.history_[0]


def test_a_collapse_within_the_first_pass_is_caught():
    """A step too large can collapse the head within the first pass, so that the loss
    then falls from a first pass already far above the untrained head's: the check
    compares with the untrained head's loss too (at lr=0.1 in the paper's regime the old
    first-pass comparison let an HM of 0.02 through)."""
    import pytest

    from candle_sklearn import CandleClassifier
    from candle_sklearn.datasets import make_clip_like_features
    from candle_sklearn.exceptions import TrainingDivergedError

    d = make_clip_like_features(n_base=20, n_new=5, dim=128, max_per_class=40,
                                imbalance_ratio=0.1, random_state=0)
    params = dict(classes=d.classes, text_features=d.text_features, max_epochs=5,
                  new_class_bias=0.0, device="cpu", random_state=0)
    with pytest.raises(TrainingDivergedError, match="at the start .* collapsed"):
        CandleClassifier(lr=0.1, **params).fit(d.X_train, d.y_train)
    CandleClassifier(**params).fit(d.X_train, d.y_train)  # the default learns


def test_progress_check_compares_with_the_lower_start():
    import pytest

    from candle_sklearn._train import _check_progress
    from candle_sklearn.exceptions import TrainingDivergedError

    _check_progress([2.0, 1.0, 0.5], 64, untrained=1.0)  # learning
    with pytest.raises(TrainingDivergedError):
        _check_progress([20.0, 10.0, 9.0], 64, untrained=1.0)  # collapsed in pass one
    with pytest.raises(TrainingDivergedError):
        _check_progress([1.0, 2.0], 64, untrained=3.0)  # rose after the first pass
    _check_progress([20.0, 10.0, 9.0], 8, untrained=1.0)  # too few features to judge


@pytest.mark.parametrize("batch_size", [2, 8, 16])
def test_a_fit_that_barely_moves_is_no_collapse(batch_size):
    """One pass at the reference's warm-up rate (1e-5) cannot collapse, yet one batch's
    loss, the first comparison's start, was lower than the pass's mean for some seeds:
    the untrained loss is now measured over up to 1,024 images."""
    import warnings

    from candle_sklearn import CandleClassifier
    from candle_sklearn.datasets import make_clip_like_features

    d = make_clip_like_features(n_base=10, n_new=0, dim=128, max_per_class=20,
                                imbalance_ratio=0.1, random_state=1)
    for seed in range(6):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            CandleClassifier(classes=d.classes, text_features=d.text_features,
                             recipe="reference", batch_size=batch_size, max_epochs=1,
                             max_steps=None, new_class_bias=0.0, device="cpu",
                             random_state=seed).fit(d.X_train, d.y_train)
