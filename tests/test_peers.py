"""The peers (candle_sklearn.baselines): each checked against a literal port of its
recipe or a case computed by hand, and all of them against the estimator contract and
the interface they share with CandleClassifier."""

import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.utils.estimator_checks import parametrize_with_checks

import candle_sklearn
from candle_sklearn import _peers
from candle_sklearn.baselines import (ClapClassifier, CrossModalLinearProbe, GDAClassifier,
                                      LinearAdapterClassifier,
                                      LogitAdjustedCosineClassifier, TipAdapterClassifier)
from candle_sklearn.datasets import make_clip_like_features

# small budgets: the checks fit on many small data sets
QUICK = [LinearAdapterClassifier(max_iter=20, random_state=0),
         ClapClassifier(max_epochs=10, random_state=0),
         GDAClassifier(),
         TipAdapterClassifier(),
         TipAdapterClassifier(fine_tune=True, max_epochs=2, random_state=0),
         CrossModalLinearProbe(max_iter=50, random_state=0),
         LogitAdjustedCosineClassifier(random_state=0)]


@parametrize_with_checks(QUICK)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def world():
    return make_clip_like_features(n_base=6, n_new=3, dim=24, max_per_class=20,
                                   n_test_per_class=8, random_state=0)


def _unit(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@pytest.mark.parametrize("peer", QUICK, ids=lambda p: type(p).__name__)
def test_scores_every_class_base_and_new(peer, world):
    d = world
    clf = clone(peer).set_params(classes=d.classes, text_features=d.text_features)
    clf.fit(d.X_train, d.y_train)
    assert clf.classes_.tolist() == d.classes.tolist()
    assert clf.new_classes_.tolist() == d.new_classes.tolist()
    proba = clf.predict_proba(d.X_test)
    assert proba.shape == (len(d.X_test), len(d.classes))
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(d.X_test)), proba, atol=1e-12)
    # the calibration ran (held-out refits) and new classes are predicted jointly
    assert clf.calibration_["method"] == "held-out classes"
    assert np.isin(clf.predict(d.X_test), d.new_classes).any()
    # a sample's scores do not depend on the others
    np.testing.assert_allclose(clf.decision_function(d.X_test[:1]),
                               clf.decision_function(d.X_test)[:1], rtol=1e-10)
    # pickling, saving and cloning keep it
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(d.X_test), proba)
    assert not hasattr(clone(clf), "classes_")


@pytest.mark.parametrize("peer", QUICK, ids=lambda p: type(p).__name__)
def test_save_and_load(peer, world, tmp_path):
    d = world
    clf = clone(peer).set_params(classes=d.classes, text_features=d.text_features,
                                 new_class_bias=0.0).fit(d.X_train, d.y_train)
    candle_sklearn.save(clf, tmp_path / "m.safetensors")
    loaded = candle_sklearn.load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(loaded.decision_function(d.X_test),
                                  clf.decision_function(d.X_test))


@pytest.mark.parametrize("peer", QUICK, ids=lambda p: type(p).__name__)
def test_bad_input_is_named(peer, world):
    d = world
    clf = clone(peer).set_params(classes=d.classes[:-1], text_features=d.text_features[:-1])
    with pytest.raises(ValueError, match="not in classes"):
        clf.fit(d.X_train, np.where(d.y_train == 0, d.classes[-1], d.y_train))
    X = d.X_train.copy()
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clone(peer).fit(X, d.y_train)
    with pytest.raises(ValueError, match=r"shape \(n_classes, n_features\)"):
        clone(peer).set_params(classes=d.classes, text_features=d.text_features[:, :5]).fit(
            d.X_train, d.y_train)
    with pytest.raises(ValueError, match="need text"):
        clone(peer).set_params(classes=d.classes).fit(d.X_train, d.y_train)


def test_grid_search_over_a_peer(world):
    d = world
    base = np.isin(d.y_train, d.base_classes)
    search = GridSearchCV(LinearAdapterClassifier(max_iter=10, new_class_bias=0.0),
                          {"reg": [0.01, 1.0]}, cv=2)
    search.fit(d.X_train[base], d.y_train[base])
    assert search.best_params_["reg"] in (0.01, 1.0)


# ------------------------------------------------------------- each recipe
def test_linear_adapter_is_the_official_loop(world):
    """RegLinearAdapter: nn.Linear(D, D) at the identity, Adam(eps=1e-4), a cosine
    annealing scheduler stepped per full-batch step, mean CE + reg * sum((A - I)^2)."""
    d = world
    clf = LinearAdapterClassifier(classes=d.classes, text_features=d.text_features,
                                  max_iter=15, new_class_bias=0.0).fit(d.X_train, d.y_train)
    shots = len(d.y_train) / len(d.base_classes)
    assert clf.reg_ == pytest.approx(1 / shots)
    X = torch.tensor(_unit(d.X_train.astype(np.float64)), dtype=torch.float32)
    T = torch.tensor(_unit(d.text_features.astype(np.float64)), dtype=torch.float32)
    adapter = torch.nn.Linear(X.shape[1], X.shape[1], bias=False)
    adapter.weight.data = torch.eye(X.shape[1])
    optimizer = torch.optim.Adam(adapter.parameters(), lr=1e-3, eps=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 15)
    for _ in range(15):
        logits = 100 * F.normalize(adapter(X), dim=-1) @ T.T
        reg = torch.nn.MSELoss(reduction="sum")(adapter.weight, torch.eye(X.shape[1]))
        loss = F.cross_entropy(logits, torch.tensor(d.y_train)) + clf.reg_ * reg
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    np.testing.assert_allclose(clf.adapter_, adapter.weight.detach().numpy(), atol=2e-5)


def test_lift_classifier_is_the_official_loop():
    """LIFT's head: cosine classifier at the text, LA loss, SGD(momentum 0.9, weight
    decay), CosineAnnealingLR stepped per epoch; a new class (prior 0) stays at its text."""
    d = make_clip_like_features(n_base=5, n_new=2, dim=16, max_per_class=12, random_state=1)
    clf = LogitAdjustedCosineClassifier(classes=d.classes, text_features=d.text_features,
                                        batch_size=1000, max_epochs=4,
                                        new_class_bias=0.0).fit(d.X_train, d.y_train)
    X, T = torch.tensor(_unit(d.X_train)), torch.tensor(_unit(d.text_features))
    counts = np.bincount(d.y_train, minlength=7)[:5]
    W = T[:5].clone().requires_grad_(True)
    optimizer = torch.optim.SGD([W], lr=0.01, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 4)
    log_prior = torch.log(torch.tensor(counts / counts.sum()))
    for _ in range(4):  # one batch per epoch: the order does not matter
        logits = 25 * F.normalize(X, dim=-1) @ F.normalize(W, dim=-1).T
        loss = F.cross_entropy(logits + log_prior, torch.tensor(d.y_train))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    np.testing.assert_allclose(clf.weights_[:5], W.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(clf.weights_[5:], _unit(d.text_features)[5:], atol=1e-6)


def test_clap_multipliers_by_hand():
    X = _unit(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    T = np.eye(2)
    y = np.array([0, 1, 1])
    p = np.exp(100 * X @ T.T)
    p /= p.sum(1, keepdims=True)
    want = [p[0, 0], (p[1, 1] + p[2, 1]) / 2, 0.0]
    np.testing.assert_allclose(_peers.clap_multipliers(X, y, T, 3), want, rtol=1e-5)


def test_clap_constraint_holds_confident_classes_to_their_text(world):
    d = world
    free = ClapClassifier(classes=d.classes, text_features=d.text_features, max_epochs=40,
                          new_class_bias=0.0, random_state=0).fit(d.X_train, d.y_train)
    assert (free.multipliers_[d.new_classes] == 0).all()
    moved = np.linalg.norm(free.weights_ - free.class_vectors_, axis=1)
    assert (moved[d.new_classes] < 1e-6).all() and (moved[d.base_classes] > 1e-3).all()


def test_gda_by_hand():
    """Two classes in two dimensions, no text: the discriminant of the shared KS
    precision, computed by hand."""
    X = np.array([[1.0, 0.2], [1.0, -0.2], [-1.0, 0.1], [-1.0, -0.1]])
    y = np.array([0, 0, 1, 1])
    means = np.array([[1.0, 0.0], [-1.0, 0.0]])
    R = X - means[y]
    S = R.T @ R
    P = 2 * np.linalg.pinv(S + np.trace(S) / 3 * np.eye(2))
    W, b = _peers.fit_gda(X, y, means, np.array([2, 2]))
    np.testing.assert_allclose(W, means @ P)
    np.testing.assert_allclose(b, [-0.5 * m @ P @ m for m in means])
    clf = GDAClassifier().fit(X, y)  # no text: the discriminant alone
    np.testing.assert_array_equal(clf.predict([[0.5, 3.0], [-0.2, -3.0]]), [0, 1])


def test_gda_synthesises_a_new_class_from_its_neighbours():
    X = _unit(np.array([[1.0, 0.1, 0], [1.0, -0.1, 0], [0, 1.0, 0.1], [0, 1.0, -0.1]]))
    T = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    W, b = _peers.fit_gda(X, np.array([0, 0, 1, 1]), T, np.array([2, 2, 0]), k=2,
                          text_weight=2)
    # class 2's mean: the two features nearest its text and two copies of the text
    mean = (X[0] + X[1] + 2 * T[2]) / 4
    P = _peers.ks_precision(X - np.array([X[:2].mean(0)] * 2 + [X[2:].mean(0)] * 2))
    np.testing.assert_allclose(W[2], mean @ P)
    np.testing.assert_allclose(b[2], -0.5 * mean @ P @ mean)


def test_tip_adapter_cache_by_hand():
    keys = np.array([[1.0, 0.0], [0.0, 1.0]])
    x = _unit(np.array([[1.0, 1.0]]))
    want = np.exp(-2.0 * (1 - x @ keys.T)) @ np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(_peers.cache_scores(x, keys, [1, 0], 3, 2.0), want)
    T = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    clf = TipAdapterClassifier(classes=[0, 1, 2], text_features=T, alpha=0.5, beta=2.0,
                               new_class_bias=0.0).fit(keys, [1, 0])
    zero_shot = 100 * x @ T.T
    np.testing.assert_allclose(clf.decision_function(x), zero_shot + 0.5 * want)


def test_tip_adapter_f_trains_the_keys(world):
    d = world
    clf = TipAdapterClassifier(classes=d.classes, text_features=d.text_features,
                               fine_tune=True, max_epochs=3, new_class_bias=0.0,
                               random_state=0).fit(d.X_train, d.y_train)
    assert clf.cache_keys_.shape == d.X_train.shape
    assert not np.allclose(clf.cache_keys_, _unit(d.X_train))


def test_cross_modal_probe_learns_new_classes_from_their_text():
    """A new class has no image; its text is a training sample, so a head started away
    from it learns it: with a zero start (lr large enough), only the texts teach it."""
    rng = np.random.default_rng(0)
    T = np.eye(4)
    X = np.repeat(T[:2], 10, axis=0) + 0.05 * rng.normal(size=(20, 4))
    y = np.repeat([0, 1], 10)
    W = _peers.fit_cross_modal(_unit(X), y, np.zeros((4, 4)) + 1e-3 * T, lr=0.05,
                               weight_decay=0.0, batch_size=8, steps=200)
    assert (np.argmax(T @ W.T, axis=1) == np.arange(4)).all()
    clf = CrossModalLinearProbe(classes=[0, 1, 2, 3], text_features=T, max_iter=100,
                                new_class_bias=0.0, random_state=0).fit(X, y)
    np.testing.assert_array_equal(clf.predict(T), [0, 1, 2, 3])


def test_peers_without_text_use_class_means(world):
    d = world
    base = np.isin(d.y_train, d.base_classes)
    for peer in QUICK:
        clf = clone(peer).fit(d.X_train[base], d.y_train[base])
        means = np.stack([_unit(d.X_train[d.y_train == c]).mean(0) for c in clf.classes_])
        np.testing.assert_allclose(clf.class_vectors_, _unit(means), rtol=1e-5, atol=1e-7)
        assert math.isfinite(clf.score(d.X_test[np.isin(d.y_test, d.base_classes)],
                                       d.y_test[np.isin(d.y_test, d.base_classes)]))
