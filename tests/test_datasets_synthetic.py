"""Synthetic CLIP-like features (candle_sklearn.datasets.synthetic)."""

import numpy as np

from candle_sklearn.datasets import long_tailed_counts, make_clip_like_features


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
