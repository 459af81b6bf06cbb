"""BaseNewSplit and the base/new scorer's guard: model selection that sees new classes."""

import warnings

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score

from candle_sklearn import CandleClassifier
from candle_sklearn.datasets import make_clip_like_features
from candle_sklearn.metrics import make_base_new_scorer
from candle_sklearn.model_selection import BaseNewSplit, prefer_default

from .conftest import FAST


def test_folds_hold_out_whole_classes_and_a_fraction_of_the_others():
    y = np.repeat(np.arange(8), [10, 10, 5, 5, 3, 2, 1, 1])
    cv = BaseNewSplit(n_splits=4, new_size=0.25, test_size=0.2, random_state=0)
    assert cv.get_n_splits() == 4
    for train, test in cv.split(np.zeros((len(y), 2)), y):
        assert np.intersect1d(train, test).size == 0
        assert len(train) + len(test) == len(y)
        held = np.setdiff1d(y, y[train])
        assert len(held) == 2  # floor(0.25 * 8)
        assert np.isin(y[test], held).sum() == np.isin(y, held).sum()  # all their samples
        for c in np.setdiff1d(np.unique(y), held):  # kept: floor(20 %) but at least one
            n = (y == c).sum()                       # tested, at least one kept
            assert (y[test] == c).sum() == min(max(int(0.2 * n), 1), n - 1)
            assert (y[train] == c).sum() >= 1


def test_same_random_state_same_folds_and_int_new_size():
    y = np.repeat(np.arange(6), 4)
    a = list(BaseNewSplit(3, new_size=2, random_state=1).split(y, y))
    b = list(BaseNewSplit(3, new_size=2, random_state=1).split(y, y))
    for (ta, sa), (tb, sb) in zip(a, b):
        np.testing.assert_array_equal(ta, tb)
        np.testing.assert_array_equal(sa, sb)
        assert len(np.setdiff1d(y, y[ta])) == 2


def test_split_errors_name_the_problem():
    with pytest.raises(ValueError, match="at least 3 classes"):
        next(BaseNewSplit().split(np.zeros((4, 1)), [0, 0, 1, 1]))
    with pytest.raises(ValueError, match="needs the labels"):
        next(BaseNewSplit().split(np.zeros((4, 1))))
    with pytest.raises(ValueError, match="new_size"):
        next(BaseNewSplit(new_size=1.5).split(np.zeros((6, 1)), [0, 0, 1, 1, 2, 2]))


@pytest.fixture(scope="module")
def data():
    return make_clip_like_features(n_base=12, n_new=4, dim=32, max_per_class=20,
                                   n_test_per_class=5, random_state=0)


def test_scorer_that_can_only_be_nan_raises_and_points_to_the_splitter(data):
    clf = CandleClassifier(classes=data.classes, text_features=data.text_features,
                           new_class_bias=0.0, **FAST).fit(data.X_train, data.y_train)
    base_only = np.isin(data.y_test, data.base_classes)
    with pytest.raises(ValueError, match="BaseNewSplit"):
        make_base_new_scorer("hm")(clf, data.X_test[base_only], data.y_test[base_only])
    assert 0 <= make_base_new_scorer("base")(clf, data.X_test[base_only],
                                             data.y_test[base_only]) <= 1
    # a classifier that does not know a test label
    plain = CandleClassifier(**FAST).fit(data.X_train, data.y_train)
    with pytest.raises(ValueError, match="not among the model's classes_"):
        make_base_new_scorer("hm")(plain, data.X_test, data.y_test)
    # in a search with ordinary stratified folds no test fold holds a new class: the
    # score is not silently NaN, sklearn warns with our message
    keep = np.isin(data.y_train, np.flatnonzero(data.train_counts >= 4))
    search = GridSearchCV(CandleClassifier(classes=data.classes,
                                           text_features=data.text_features,
                                           new_class_bias=0.0, **FAST),
                          {"tau": [0.5, 1.0]}, cv=StratifiedKFold(2),
                          scoring=make_base_new_scorer("hm"))
    with pytest.warns(UserWarning, match="BaseNewSplit"):
        search.fit(data.X_train[keep], data.y_train[keep])


def test_grid_search_over_tau_with_base_new_split_scores_finite(data):
    clf = CandleClassifier(classes=data.classes, text_features=data.text_features,
                           new_class_bias=0.0, **FAST)
    cv = BaseNewSplit(n_splits=2, new_size=0.25, random_state=0)
    search = GridSearchCV(clf, {"tau": [0.0, 1.0, 3.0]}, cv=cv,
                          scoring=make_base_new_scorer("hm"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "scoring failed" or non-finite warning
        search.fit(data.X_train, data.y_train)
    scores = search.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all() and (scores > 0).all()
    assert search.best_params_["tau"] == [0.0, 1.0, 3.0][int(np.argmax(scores))]
    # the held-out classes were new classes of each fold's model
    per_fold = cross_val_score(clf, data.X_train, data.y_train, cv=cv,
                               scoring=make_base_new_scorer("new"))
    assert np.isfinite(per_fold).all()


def _results(folds, params=({"tau": 1.0}, {"tau": 2.0}, {"tau": 0.5}), score="score"):
    folds = np.asarray(folds, dtype=float)  # (n_splits, n_candidates)
    out = {"params": list(params), f"mean_test_{score}": folds.mean(0)}
    out.update({f"split{k}_test_{score}": row for k, row in enumerate(folds)})
    out.update({f"split{k}_train_{score}": row + 9 for k, row in enumerate(folds)})
    return out


def test_prefer_default_keeps_the_default_within_noise_and_takes_a_clear_win():
    rule = prefer_default({"tau": 1.0})
    # tau=2 wins on average by 0.01 but loses on one fold: noise, keep tau=1
    assert rule(_results([[0.78, 0.83, 0.1], [0.82, 0.79, 0.1], [0.80, 0.81, 0.1]])) == 0
    # tau=2 wins on every fold by about 0.02: take it
    assert rule(_results([[0.78, 0.80, 0.1], [0.82, 0.84, 0.1], [0.80, 0.83, 0.1]])) == 1
    # a stricter rule keeps the default there; n_se=0 takes any mean advantage
    assert prefer_default({"tau": 1.0}, n_se=20)(
        _results([[0.78, 0.80, 0.1], [0.82, 0.84, 0.1], [0.80, 0.83, 0.1]])) == 0
    assert prefer_default({"tau": 1.0}, n_se=0)(
        _results([[0.78, 0.83, 0.1], [0.82, 0.79, 0.1], [0.80, 0.81, 0.1]])) == 1
    # the default is the best: itself; one fold: no spread to judge by, the default
    assert rule(_results([[0.9, 0.8, 0.1], [0.9, 0.8, 0.1]])) == 0
    assert rule(_results([[0.5, 0.8, 0.1]])) == 0
    assert prefer_default({"tau": 1.0}, n_se=0)(_results([[0.5, 0.8, 0.1]])) == 1  # any gain
    # a default that never scored (NaN): the best candidate
    assert rule(_results([[np.nan, 0.8, 0.9], [np.nan, 0.7, 0.8]])) == 2
    # a default that missed one fold (its mean is NaN) is still judged on the others:
    # tau=2's advantage there is noise, keep the default
    assert rule(_results([[0.78, 0.83, 0.1], [0.82, 0.79, 0.1], [0.80, 0.81, 0.1],
                          [np.nan, 0.8, 0.1]])) == 0
    # multi-metric results, by name
    named = _results([[0.78, 0.80, 0.1], [0.82, 0.84, 0.1], [0.80, 0.83, 0.1]], score="hm")
    assert prefer_default({"tau": 1.0}, score="hm")(named) == 1
    with pytest.raises(ValueError, match="score=<the scorer's name>"):
        rule(named)


def test_prefer_default_errors_name_the_problem():
    with pytest.raises(ValueError, match="non-empty dict"):
        prefer_default(1.0)
    with pytest.raises(ValueError, match="n_se must be"):
        prefer_default({"tau": 1.0}, n_se=-1)
    with pytest.raises(ValueError, match=r"0 candidates .*candle__tau"):
        prefer_default({"tau": 1.0})(_results([[0.8, 0.8]], params=({"candle__tau": 1.0},
                                                                     {"candle__tau": 2.0})))


def test_grid_search_refits_the_default_unless_better(data):
    import pickle

    clf = CandleClassifier(classes=data.classes, text_features=data.text_features,
                           new_class_bias=0.0, **FAST)
    search = GridSearchCV(clf, {"tau": [0.0, 1.0, 3.0]},
                          cv=BaseNewSplit(n_splits=3, new_size=0.25, random_state=0),
                          scoring=make_base_new_scorer("hm"),
                          refit=prefer_default({"tau": 1.0}))
    search.fit(data.X_train, data.y_train)
    chosen = search.best_index_
    assert chosen == prefer_default({"tau": 1.0})(search.cv_results_)
    assert search.best_estimator_.tau == [0.0, 1.0, 3.0][chosen]
    assert search.predict(data.X_test[:3]).shape == (3,)
    assert pickle.loads(pickle.dumps(search)).best_index_ == chosen


def test_few_shot_folds_still_hold_base_samples():
    """4 shots per class: 20 % rounds down to none, yet every fold needs base samples to
    score (else every candidate scores NaN and GridSearchCV keeps the first)."""
    y = np.repeat(np.arange(5), 4)
    for train, test in BaseNewSplit(n_splits=3, random_state=0).split(np.zeros((20, 1)), y):
        held = np.setdiff1d(y, y[train])
        kept_in_test = np.setdiff1d(y[test], held)
        assert len(kept_in_test) == 4 and all((y[test] == c).sum() == 1 for c in kept_in_test)
    none = BaseNewSplit(n_splits=1, test_size=0.0, random_state=0)
    train, test = next(none.split(np.zeros((20, 1)), y))
    assert len(np.unique(y[test])) == 1  # test_size=0: the held-out class only
