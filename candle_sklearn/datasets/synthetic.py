"""Synthetic CLIP-like image and text features."""

import numpy as np
from sklearn.utils import Bunch, check_random_state

from .protocol import long_tailed_counts


def _unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def make_clip_like_features(n_base=50, n_new=50, dim=512, *, imbalance_ratio=0.02,
                            max_per_class=100, n_test_per_class=30, group_size=5,
                            image_noise=0.12, text_noise=1.0, text_distortion=2.0,
                            modality_gap=1.0, sibling_spread=0.8, n_modes=1, mode_spread=0.5,
                            noise_spectrum=0.0, random_state=None):
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

    The knobs in which real datasets differ, for benchmarks over a family of worlds:
    number of classes and shots (``n_base``, ``n_new``, ``max_per_class``,
    ``imbalance_ratio``: 1 gives ``max_per_class`` balanced shots), ``dim``, text-image
    alignment (``text_noise``, ``text_distortion``: zero-shot accuracy falls as they
    grow), superclass structure (``group_size`` siblings per family, ``sibling_spread``
    how far a class sits from its family's centre: small values make near-confusable
    siblings), the modality gap (``modality_gap``), classes made of several visual modes
    (``n_modes`` sub-centres at ``mode_spread`` from the class centre, so that a class
    mean is a poor prototype), and anisotropic image noise (``noise_spectrum``: variances
    decaying as ``k ** -noise_spectrum`` along random directions, as in real embeddings
    where a few directions dominate; 0 is isotropic). The defaults reproduce earlier
    releases exactly.

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
    centres = _unit(families[group]
                    + sibling_spread * _unit(rng.standard_normal((n_classes, dim))))

    image_gap, text_gap = modality_gap * _unit(rng.standard_normal((2, dim)))
    distortion = np.eye(dim) + text_distortion * rng.standard_normal((dim, dim)) / np.sqrt(dim)
    text = _unit(centres @ distortion.T
                 + text_noise * _unit(rng.standard_normal((n_classes, dim))))
    text = _unit(text + text_gap)

    train_counts = np.zeros(n_classes, dtype=int)
    train_counts[rng.permutation(n_base)] = long_tailed_counts(n_base, imbalance_ratio,
                                                               max_per_class)

    # extra draws only when a knob asks for them, so the defaults keep their old output
    modes = (centres[:, None] + mode_spread * _unit(rng.standard_normal((n_classes, n_modes,
                                                                        dim)))
             if n_modes > 1 else centres[:, None])
    if noise_spectrum:
        basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
        scale = np.arange(1, dim + 1) ** (-noise_spectrum / 2)
        noise_map = basis * (scale / np.sqrt(np.mean(scale ** 2)))[:, None]

    def images(counts):
        y = np.repeat(np.arange(n_classes), counts)
        mode = rng.randint(n_modes, size=len(y)) if n_modes > 1 else np.zeros(len(y), int)
        noise = rng.standard_normal((len(y), dim))
        if noise_spectrum:
            noise = noise @ noise_map
        X = modes[y, mode] + image_gap + image_noise * noise
        return X.astype(np.float32), y

    X_train, y_train = images(train_counts)
    X_test, y_test = images(np.full(n_classes, n_test_per_class))
    classes = np.arange(n_classes)
    return Bunch(X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test,
                 classes=classes, class_names=np.array([f"class {c}" for c in classes]),
                 text_features=text.astype(np.float32), base_classes=classes[:n_base],
                 new_classes=classes[n_base:], train_counts=train_counts)
