"""Synthetic CLIP-like image and text features."""

import numpy as np
from sklearn.utils import Bunch, check_random_state

from .protocol import long_tailed_counts


def _unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def make_clip_like_features(n_base=50, n_new=50, dim=512, *, imbalance_ratio=0.02,
                            max_per_class=100, n_test_per_class=30, group_size=5,
                            image_noise=0.12, text_noise=1.0, text_distortion=2.0,
                            modality_gap=1.0, random_state=None):
    """Synthetic image and text features with CLIP's awkward habits.

    Class centres are unit vectors grouped in families of ``group_size`` similar
    classes (confusions). Image features are a centre plus isotropic noise
    (``image_noise`` per dimension) plus a shared offset; text features are a
    systematically distorted view of the centre, ``(I + d * G) @ mu`` with a fixed
    random ``G``, plus per-class noise and another shared offset (the modality gap).
    Zero-shot classification is therefore imperfect and a learned projection can
    help. Base classes are the first ``n_base`` labels; their training split is
    long-tailed by :func:`long_tailed_counts` with a random class order; new classes
    have no training image. The test split is balanced over all classes.

    Returns
    -------
    data : Bunch
        ``X_train``, ``y_train``, ``X_test``, ``y_test`` (float32 features, int
        labels), ``classes``, ``class_names``, ``text_features`` (aligned with
        ``classes``), ``base_classes``, ``new_classes``, ``train_counts`` (per class).
    """
    rng = check_random_state(random_state)
    n_classes = n_base + n_new
    if n_base < 1 or n_new < 0:
        raise ValueError("need n_base >= 1 and n_new >= 0")
    n_groups = -(-n_classes // group_size)
    families = _unit(rng.standard_normal((n_groups, dim)))
    group = rng.permutation(np.arange(n_classes) % n_groups)
    centres = _unit(families[group] + 0.8 * _unit(rng.standard_normal((n_classes, dim))))

    image_gap, text_gap = modality_gap * _unit(rng.standard_normal((2, dim)))
    distortion = np.eye(dim) + text_distortion * rng.standard_normal((dim, dim)) / np.sqrt(dim)
    text = _unit(centres @ distortion.T
                 + text_noise * _unit(rng.standard_normal((n_classes, dim))))
    text = _unit(text + text_gap)

    train_counts = np.zeros(n_classes, dtype=int)
    train_counts[rng.permutation(n_base)] = long_tailed_counts(n_base, imbalance_ratio,
                                                               max_per_class)

    def images(counts):
        y = np.repeat(np.arange(n_classes), counts)
        X = centres[y] + image_gap + image_noise * rng.standard_normal((len(y), dim))
        return X.astype(np.float32), y

    X_train, y_train = images(train_counts)
    X_test, y_test = images(np.full(n_classes, n_test_per_class))
    classes = np.arange(n_classes)
    return Bunch(X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test,
                 classes=classes, class_names=np.array([f"class {c}" for c in classes]),
                 text_features=text.astype(np.float32), base_classes=classes[:n_base],
                 new_classes=classes[n_base:], train_counts=train_counts)
