"""The attenuation correction (candle_sklearn._attenuation): the formula against a literal
numpy computation, and what it does on classes of few and many images."""

import numpy as np
import torch

from candle_sklearn import CandleClassifier
from candle_sklearn._attenuation import MAX_ATTENUATION, attenuation_gain
from candle_sklearn.datasets import make_clip_like_features


def _data(counts, dim=32, mean_norm=1.0, noise=0.3, seed=0):
    """Classes of ``counts`` images each: means of norm ``mean_norm`` in random directions,
    isotropic noise of total variance ``noise**2`` per image."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(len(counts), dim))
    means *= mean_norm / np.linalg.norm(means, axis=1, keepdims=True)
    y = np.repeat(np.arange(len(counts)), counts)
    X = means[y] + rng.normal(scale=noise / dim ** 0.5, size=(len(y), dim))
    protos = np.stack([X[y == c].mean(0) for c in range(len(counts))])
    return (torch.as_tensor(protos, dtype=torch.float32), torch.as_tensor(X, dtype=torch.float32),
            torch.as_tensor(y))


def test_gain_is_the_attenuation_relative_to_the_smallest():
    protos, X, y = _data([1, 2, 3, 8, 20])
    W = torch.as_tensor(np.random.default_rng(1).normal(size=(32, 32)) / 32 ** 0.5,
                        dtype=torch.float32)
    got = attenuation_gain(protos, W, X, y).numpy()
    # literally: tr(S) from the projected deviations, |mu|^2 = mean of |p|^2 - tr(S) / n
    W64 = W.double().numpy()
    Xp, Pp, y_ = X.double().numpy() @ W64, protos.double().numpy() @ W64, y.numpy()
    trace = ((Xp - Pp[y_]) ** 2).sum() / (len(Xp) - len(Pp))
    spread = trace / np.bincount(y_)
    a = np.sqrt(1 + spread / ((Pp ** 2).sum(1) - spread).mean())
    np.testing.assert_allclose(got, a / a.min(), rtol=1e-5)


def test_classes_of_few_images_get_the_larger_gain():
    """Means of norm 1: the expected attenuation is sqrt(1 + noise^2 / n), so the gain
    falls with the class's images, to 1 for the class of most; classes of as many images
    get the same gain."""
    counts = [1, 2, 4, 16, 200, 200]
    gains = []
    for seed in range(10):
        protos, X, y = _data(counts, noise=0.8, seed=seed)
        gains.append(attenuation_gain(protos, torch.eye(32), X, y).numpy())
    gains = np.mean(gains, axis=0)
    expected = np.sqrt(1 + 0.8 ** 2 / np.array(counts))
    np.testing.assert_allclose(gains, expected / expected[-1], rtol=0.05)
    assert gains[-1] == gains[-2] == 1
    protos, X, y = _data([5] * 6, noise=0.8)  # balanced: exactly no correction
    assert torch.equal(attenuation_gain(protos, torch.eye(32), X, y), torch.ones(6))


def test_one_image_per_class_or_noise_prototypes():
    protos, X, y = _data([1, 1, 1])
    assert torch.equal(attenuation_gain(protos, torch.eye(32), X, y), torch.ones(3))
    # class means far below the noise: the gain is capped rather than unbounded
    protos, X, y = _data([1, 50], mean_norm=1e-3, noise=1.0)
    gain = attenuation_gain(protos, torch.eye(32), X, y)
    assert gain[1] == 1 and 1 < gain[0] <= MAX_ATTENUATION


def test_the_fit_sets_the_gain_and_the_reference_recipe_keeps_none():
    d = make_clip_like_features(n_base=8, n_new=4, dim=32, max_per_class=30,
                                n_test_per_class=5, random_state=0)
    common = dict(classes=d.classes, text_features=d.text_features, new_class_bias=0.0,
                  max_epochs=3, device="cpu", random_state=0)
    on = CandleClassifier(**common).fit(d.X_train, d.y_train)
    off = CandleClassifier(**common, attenuation_correction=False).fit(d.X_train, d.y_train)
    counts = on.class_counts_[on.head_order_][:len(on.head_.visual_gain)]
    gain = on.head_.visual_gain.numpy()
    assert gain.min() == 1 and gain[np.argmax(counts)] < gain[np.argmin(counts)]
    assert torch.equal(off.head_.visual_gain, torch.ones(len(gain)))
    np.testing.assert_array_equal(on.history_, off.history_)  # prediction only


def test_refits_of_the_calibration_correct_too(monkeypatch):
    """The calibration's refits are fits of the same estimator: their heads carry gains."""
    d = make_clip_like_features(n_base=8, n_new=4, dim=32, max_per_class=30,
                                n_test_per_class=5, random_state=0)
    seen, fit_method = [], CandleClassifier._fit_method

    def recording(self, *args, **kwargs):
        fit_method(self, *args, **kwargs)
        seen.append(self.head_.visual_gain.max().item())

    monkeypatch.setattr(CandleClassifier, "_fit_method", recording)
    CandleClassifier(classes=d.classes, text_features=d.text_features, max_epochs=2,
                     calibration_repeats=1, device="cpu", random_state=0,
                     n_jobs=1).fit(d.X_train, d.y_train)
    assert len(seen) >= 2 and all(g > 1 for g in seen)
