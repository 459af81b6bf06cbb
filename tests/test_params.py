"""store_init_arguments: a constructor's arguments, and nothing else, become attributes."""

from sklearn.base import BaseEstimator

from candle_sklearn import CandleClassifier, ClipEmbedder
from candle_sklearn._params import store_init_arguments


class _WithSuper(BaseEstimator):
    def __init__(self, alpha=1.0, *, beta="b"):
        store_init_arguments(self, locals())
        super().__init__()  # puts __class__ into locals(), which must not become a parameter


def test_every_argument_is_stored_unchanged_and_nothing_else():
    marker = object()
    est = _WithSuper(alpha=marker)
    assert vars(est) == {"alpha": marker, "beta": "b"}
    assert est.get_params() == {"alpha": marker, "beta": "b"}


def test_package_estimators_store_exactly_their_parameters():
    for est in (CandleClassifier(tau=2.0), ClipEmbedder(model_name="candle-tiny")):
        assert vars(est) == est.get_params(deep=False)
    assert CandleClassifier(tau=2.0).tau == 2.0
