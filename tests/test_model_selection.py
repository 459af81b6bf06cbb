"""BaseNewSplit and the base/new scorer's guard: model selection that sees new classes."""

import warnings

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score

from candle_sklearn import CandleClassifier
from candle_sklearn.datasets import make_clip_like_features
from candle_sklearn.metrics import make_base_new_scorer
from candle_sklearn.model_selection import BaseNewSplit

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
        for c in np.setdiff1d(np.unique(y), held):  # kept: floor(20 %), at least one kept
            n = (y == c).sum()
            assert (y[test] == c).sum() == min(int(0.2 * n), n - 1)
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
