"""predict_log_proba(X, calibrated=...) agrees with predict_proba and decision_function."""

import numpy as np
import pytest

from candle_sklearn import CandleClassifier
from candle_sklearn.pipeline import CandlePipeline


@pytest.fixture(scope="module")
def fitted(small_data):
    from tests.conftest import FAST
    clf = CandleClassifier(classes=small_data.classes, text_features=small_data.text_features,
                           new_class_bias=1.5, **FAST)
    return clf.fit(small_data.X_train, small_data.y_train)


@pytest.mark.parametrize("calibrated", [True, False])
def test_log_proba_is_log_of_proba(fitted, small_data, calibrated):
    X = small_data.X_test
    log_proba = fitted.predict_log_proba(X, calibrated=calibrated)
    assert log_proba.shape == (len(X), len(fitted.classes_))
    assert np.isfinite(log_proba).all()
    np.testing.assert_allclose(np.exp(log_proba), fitted.predict_proba(X, calibrated=calibrated),
                               rtol=1e-5, atol=1e-7)
    # the same as a log-softmax of the scores with or without the bias
    scores = fitted.decision_function(X, calibrated=calibrated)
    np.testing.assert_allclose(log_proba - log_proba[:, :1], scores - scores[:, :1], atol=1e-5)


def test_calibrated_moves_only_new_class_columns(fitted, small_data):
    X = small_data.X_test
    shift = (fitted.predict_log_proba(X) - fitted.predict_log_proba(X, calibrated=False))
    is_new = fitted.class_counts_ == 0
    assert is_new.any() and fitted.new_class_bias_ == 1.5
    # before renormalisation, the new-class columns move by the bias and base ones not at all
    np.testing.assert_allclose(shift[:, is_new] - shift[:, ~is_new][:, :1], 1.5, atol=1e-5)
    np.testing.assert_allclose(shift[:, ~is_new] - shift[:, ~is_new][:, :1], 0.0, atol=1e-5)
    # the default is calibrated, as for predict_proba
    np.testing.assert_array_equal(fitted.predict_log_proba(X),
                                  fitted.predict_log_proba(X, calibrated=True))


def test_keyword_only_and_through_a_pipeline(fitted, small_data):
    X = small_data.X_test
    with pytest.raises(TypeError):
        fitted.predict_log_proba(X, False)
    from sklearn.preprocessing import FunctionTransformer
    pipe = CandlePipeline([("id", FunctionTransformer()), ("candle", fitted)])
    np.testing.assert_array_equal(pipe.predict_log_proba(X, calibrated=False),
                                  fitted.predict_log_proba(X, calibrated=False))
