"""scikit-learn's estimator contract, on generic numeric features (visual-only head)."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from candle_sklearn import CandleClassifier

# No expected failures: the only tag we set beyond the defaults is poor_score (see
# CandleClassifier.__sklearn_tags__), which relaxes the accuracy bar on 2-D blobs.
EXPECTED_FAILED_CHECKS = {}


@parametrize_with_checks(
    [CandleClassifier(max_epochs=3, batch_size=64, device="cpu", random_state=0),
     CandleClassifier(max_epochs=3, batch_size=64, device="cpu", random_state=0,
                      context="batch")],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
