import numpy as np
import pytest
from sklearn.model_selection import cross_val_score

from candle_sklearn import CandleClassifier
from candle_sklearn.metrics import (base_new_accuracy, harmonic_mean, make_base_new_scorer,
                                    make_shot_scorer, restrict_scores, shot_accuracy)

from .conftest import FAST

CLASSES = np.array([0, 1, 2, 3])
NEW = [2, 3]
# rows: base 0, base 1, new 2, new 3
SCORES = np.array([[5.0, 1, 0, 0],
                   [0.0, 1, 3, 0],   # base sample, joint winner is new class 2: wrong
                   [0.0, 9, 2, 1],   # new sample: wrong jointly, right among new
                   [0.0, 0, 5, 1]])  # new sample: wrong both ways
Y = np.array([0, 1, 2, 3])


def test_harmonic_mean():
    assert harmonic_mean(0.5, 0.5) == 0.5
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert np.isclose(harmonic_mean(0.8, 0.4), 2 * 0.32 / 1.2)
    assert np.isnan(harmonic_mean(np.nan, 0.3))


def test_reference_and_joint_protocols():
    ref = base_new_accuracy(Y, SCORES, CLASSES, NEW)
    assert ref == {"base": 0.5, "new": 0.5, "hm": 0.5}
    joint = base_new_accuracy(Y, SCORES, CLASSES, NEW, protocol="joint")
    assert joint == {"base": 0.5, "new": 0.0, "hm": 0.0}
    with pytest.raises(ValueError, match="protocol"):
        base_new_accuracy(Y, SCORES, CLASSES, NEW, protocol="other")


def test_restrict_scores_renormalises_probabilities():
    proba = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    sub, labels = restrict_scores(proba, ["a", "b", "c"], ["b", "c"])
    np.testing.assert_allclose(sub, [[0.6, 0.4], [1 / 9, 8 / 9]])
    assert labels.tolist() == ["b", "c"]
    with pytest.raises(ValueError, match="labels not in classes"):
        restrict_scores(proba, ["a", "b", "c"], ["z"])


def test_shot_accuracy_groups():
    classes, counts = [0, 1, 2, 3], [150, 50, 5, 0]
    y_true = np.array([0, 0, 1, 1, 2, 2, 3])
    y_pred = np.array([0, 1, 1, 1, 2, 0, 3])
    got = shot_accuracy(y_true, y_pred, classes, counts)
    assert got == {"many": 0.5, "medium": 1.0, "few": 0.5}
    with pytest.raises(ValueError, match="not in classes"):
        shot_accuracy([9], [9], classes, counts)


def test_scorers_in_cross_validation(small_data):
    clf = CandleClassifier(classes=small_data.classes, text_features=small_data.text_features,
                           **FAST).fit(small_data.X_train, small_data.y_train)
    hm = make_base_new_scorer("hm")(clf, small_data.X_test, small_data.y_test)
    direct = base_new_accuracy(small_data.y_test,
                               clf.predict_proba(small_data.X_test, calibrated=False),
                               clf.classes_, clf.new_classes_)["hm"]
    assert hm == direct and 0 < hm <= 1
    joint = make_base_new_scorer("hm", protocol="joint")(clf, small_data.X_test,
                                                         small_data.y_test)
    assert joint == base_new_accuracy(small_data.y_test, clf.predict_proba(small_data.X_test),
                                      clf.classes_, clf.new_classes_, protocol="joint")["hm"]
    few = make_shot_scorer("few")(clf, small_data.X_test, small_data.y_test)
    assert 0 <= few <= 1
    keep = small_data.train_counts[small_data.y_train] >= 5
    scores = cross_val_score(CandleClassifier(**FAST), small_data.X_train[keep],
                             small_data.y_train[keep], cv=2,
                             scoring=make_shot_scorer("medium", few=10))
    assert scores.shape == (2,) and np.isfinite(scores).all()


def test_scorers_pickle_with_a_search():
    import pickle

    from candle_sklearn.metrics import make_base_new_scorer, make_shot_scorer

    for scorer in (make_base_new_scorer("hm"), make_shot_scorer("few")):
        copy = pickle.loads(pickle.dumps(scorer))
        assert repr(copy) == repr(scorer) and copy.__name__ == scorer.__name__


def test_metrics_refuse_inputs_that_would_score_garbage():
    S = np.eye(4, 3)[[0, 1, 2, 2]]
    ok = base_new_accuracy([0, 1, 2, 2], S, [0, 1, 2], [2])
    assert ok == {"base": 1.0, "new": 1.0, "hm": 1.0}
    with pytest.raises(ValueError, match=r"y_true contains labels .* \['0', '1', '2'\]"):
        base_new_accuracy(["0", "1", "2", "2"], S, [0, 1, 2], [2])  # 0 and "0" differ
    with pytest.raises(ValueError, match=r"new_classes contains labels .* \['2'\]"):
        base_new_accuracy([0, 1, 2, 2], S, [0, 1, 2], ["2"])
    with pytest.raises(ValueError, match="scores contain NaN"):
        base_new_accuracy([0, 1, 2, 2], np.full((4, 3), np.nan), [0, 1, 2], [2])
    with pytest.raises(ValueError, match=r"shape \(n_samples, n_classes\) = \(4, 2\)"):
        base_new_accuracy([0, 1, 2, 2], S, [0, 1], [1])
    with pytest.raises(ValueError, match="same length"):
        shot_accuracy([0, 1, 1, 0], [0], [0, 1], [5, 50])
    with pytest.raises(ValueError, match=r"y_pred contains labels not in classes: \[7\]"):
        shot_accuracy([0, 1], [0, 7], [0, 1], [5, 50])
    with pytest.raises(ValueError, match="protocol must be 'reference' or 'joint'"):
        make_base_new_scorer("hm", protocol="Joint")


def test_expected_calibration_error_by_hand():
    from candle_sklearn.metrics import expected_calibration_error

    classes = np.array(["a", "b"])
    proba = np.array([[0.95, 0.05], [0.95, 0.05], [0.3, 0.7], [0.3, 0.7]])
    y = np.array(["a", "b", "b", "b"])
    # bin of 0.95: accuracy 1/2, confidence 0.95; bin of 0.7: accuracy 1, confidence 0.7
    assert expected_calibration_error(y, proba, classes) == pytest.approx(
        0.5 * 0.45 + 0.5 * 0.3)
    assert expected_calibration_error(["a", "b"], [[1.0, 0.0], [0.0, 1.0]], classes) == 0
    with pytest.raises(ValueError, match="shape"):
        expected_calibration_error(y, proba[:, :1], classes)
