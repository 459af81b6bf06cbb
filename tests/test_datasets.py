import numpy as np
import pytest

from candle_sklearn.datasets import (long_tailed_counts, long_tailed_indices,
                                     make_clip_like_features)


def test_long_tailed_counts_follow_the_reference_rule():
    counts = long_tailed_counts(5, imbalance_ratio=0.02, max_per_class=100)
    expected = [int(np.floor(max(100 * 0.02 ** (i / 4), 1))) for i in range(5)]
    np.testing.assert_array_equal(counts, expected)
    assert counts[0] == 100 and counts[-1] == 2
    assert long_tailed_counts(1).tolist() == [100]
    assert long_tailed_counts(200, 0.001)[-1] == 1  # never below one image


def test_long_tailed_indices_rank_by_count():
    labels = np.repeat(["a", "b", "c"], [50, 300, 120])
    idx = long_tailed_indices(labels, imbalance_ratio=0.1, max_per_class=100, random_state=0)
    kept = dict(zip(*np.unique(labels[idx], return_counts=True)))
    assert kept == {"b": 100, "c": 31, "a": 10}
    again = long_tailed_indices(labels, imbalance_ratio=0.1, max_per_class=100, random_state=0)
    np.testing.assert_array_equal(idx, again)


def test_long_tailed_keeps_all_when_class_is_small():
    labels = np.repeat([0, 1], [200, 3])
    idx = long_tailed_indices(labels, imbalance_ratio=0.5, max_per_class=100, random_state=0)
    assert (labels[idx] == 1).sum() == 3


@pytest.mark.parametrize("bad", [0, 1.5, -1])
def test_long_tailed_counts_rejects_bad_ratio(bad):
    with pytest.raises(ValueError, match="imbalance_ratio"):
        long_tailed_counts(3, bad)


def test_synthetic_features_are_long_tailed_and_reproducible():
    a = make_clip_like_features(n_base=20, n_new=5, dim=64, random_state=3)
    b = make_clip_like_features(n_base=20, n_new=5, dim=64, random_state=3)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    assert a.X_train.dtype == np.float32 and a.text_features.shape == (25, 64)
    assert sorted(a.train_counts[:20].tolist(), reverse=True) == long_tailed_counts(20).tolist()
    assert (a.train_counts[20:] == 0).all()
    assert set(np.unique(a.y_train)) == set(range(20))
    assert np.bincount(a.y_test).tolist() == [30] * 25


def test_zero_shot_is_imperfect_but_informative():
    d = make_clip_like_features(n_base=30, n_new=30, dim=256, random_state=0)
    X = d.X_test / np.linalg.norm(d.X_test, axis=1, keepdims=True)
    acc = ((X @ d.text_features.T).argmax(1) == d.y_test).mean()
    assert 5 / 60 < acc < 0.9
