"""Data the package makes itself: synthetic CLIP-like features and the reference
long-tailed split rule."""

import numpy as np
from sklearn.utils import Bunch, check_random_state


def long_tailed_counts(n_classes, imbalance_ratio=0.02, max_per_class=100):
    """Images kept by the class at each rank: ``floor(max(m * r**(i / (K-1)), 1))``.

    Rank 0 is the most frequent class. ``m`` is ``max_per_class``, ``r`` the
    imbalance ratio (0.02 in the reference, 0.01 for ImageNet), ``K`` the number of
    classes.
    """
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    if not 0 < imbalance_ratio <= 1:
        raise ValueError(f"imbalance_ratio must be in (0, 1], got {imbalance_ratio}")
    ranks = np.arange(n_classes) / max(n_classes - 1, 1)
    return np.floor(np.maximum(max_per_class * imbalance_ratio**ranks, 1)).astype(int)


def long_tailed_indices(labels, imbalance_ratio=0.02, max_per_class=100, random_state=None):
    """Indices of a long-tailed subset of ``labels``, by the reference rule.

    Classes are ranked by their number of samples (most first, ties by label); the
    class at rank ``i`` keeps ``long_tailed_counts(...)[i]`` samples, drawn at random
    without replacement (all of them if it has fewer).

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
    imbalance_ratio : float, default=0.02
    max_per_class : int, default=100
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    indices : ndarray of int, sorted
    """
    labels = np.asarray(labels)
    rng = check_random_state(random_state)
    classes, counts = np.unique(labels, return_counts=True)
    ranked = classes[np.argsort(-counts, kind="stable")]
    keep = long_tailed_counts(len(classes), imbalance_ratio, max_per_class)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(ranked, keep)]
    return np.sort(np.concatenate(chosen))


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


# --------------------------------------------------------------- image world
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 230),
           "yellow": (235, 215, 40), "purple": (150, 60, 200), "orange": (245, 140, 30)}
PATTERNS = ("solid", "striped")


def world_classes():
    """Every composition ``"<pattern> <colour> <shape>"`` of the image world (72)."""
    return [f"{p} {c} {s}" for p in PATTERNS for c in COLOURS for s in SHAPES]


def world_new_classes():
    """The compositions held out of the tiny CLIP's training and used as new classes:
    one in three of them, chosen so that every word still occurs in training captions."""
    return [name for i, name in enumerate(world_classes())
            if (i // len(SHAPES) + i % len(SHAPES) + i // (len(SHAPES) * len(COLOURS))) % 3 == 0]


def _polygon(shape, cx, cy, r, angle):
    if shape == "square":
        pts = [(1, 1), (-1, 1), (-1, -1), (1, -1)]
        pts = [(x * 0.8, y * 0.8) for x, y in pts]
    elif shape == "triangle":
        pts = [(np.cos(a), np.sin(a)) for a in np.pi / 2 + 2 * np.pi * np.arange(3) / 3]
    elif shape == "diamond":
        pts = [(0, 1), (0.65, 0), (0, -1), (-0.65, 0)]
    elif shape == "cross":
        w = 0.35
        pts = [(w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w), (-w, -1), (w, -1),
               (w, -w), (1, -w), (1, w), (w, w)]
    elif shape == "star":
        pts = [((1 if k % 2 == 0 else 0.45) * np.cos(np.pi / 2 + k * np.pi / 5),
                (1 if k % 2 == 0 else 0.45) * np.sin(np.pi / 2 + k * np.pi / 5))
               for k in range(10)]
    else:
        raise ValueError(shape)
    ca, sa = np.cos(angle), np.sin(angle)
    return [(cx + r * (x * ca - y * sa), cy - r * (x * sa + y * ca)) for x, y in pts]


def render_world_image(name, rng, size=32, domain="pretrain"):
    """One image of class ``name`` with random position, scale, rotation, background,
    colour jitter and noise, as a uint8 array (size, size, 3).

    ``domain="downstream"`` shifts the style away from what the tiny CLIP was trained on
    (brighter backgrounds, a colour cast, blur and more noise), as a real task's photos
    differ from CLIP's web images.
    """
    from PIL import Image, ImageDraw, ImageFilter

    if domain not in ("pretrain", "downstream"):
        raise ValueError(f"domain must be 'pretrain' or 'downstream', got {domain!r}")
    shifted = domain == "downstream"
    pattern, colour, shape = name.split(" ")
    scale = 4  # draw large, then downsample: smooth edges
    big = size * scale
    background = tuple(int(v) for v in rng.integers(30 if shifted else 0,
                                                    140 if shifted else 110, 3))
    img = Image.new("RGB", (big, big), background)
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    r = rng.uniform(0.25, 0.42) * big
    cx, cy = rng.uniform(r, big - r, 2)
    if shape == "circle":
        draw.ellipse([cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85], fill=255)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, rng.uniform(0, 2 * np.pi)), fill=255)
    rgb = np.clip(np.array(COLOURS[colour]) + rng.normal(0, 12, 3), 0, 255)
    fill = np.broadcast_to(rgb, (big, big, 3)).copy()
    if pattern == "striped":
        period = rng.uniform(0.16, 0.24) * big
        theta = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:big, 0:big]
        stripes = ((xx * np.cos(theta) + yy * np.sin(theta)) // (period / 2)) % 2 == 1
        fill[stripes] = fill[stripes] * 0.3
    canvas = np.where(np.array(mask)[..., None] > 127, fill, np.array(img))
    small = Image.fromarray(canvas.astype(np.uint8)).resize((size, size), Image.BILINEAR)
    if shifted:
        small = small.filter(ImageFilter.GaussianBlur(0.5))
    arr = np.asarray(small, dtype=np.float64)
    if shifted:
        arr = 0.9 * arr + 0.1 * np.array([200.0, 170.0, 90.0])  # warm colour cast
    arr += rng.normal(0, 12 if shifted else 8, (size, size, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def make_world_images(names, n_per_class, random_state=None, size=32, domain="pretrain"):
    """Images (n, size, size, 3) uint8 and their class names, ``n_per_class`` per name
    (an int or one count per name), in the ``"pretrain"`` style (the tiny CLIP's training
    images) or the shifted ``"downstream"`` style. Deterministic for a seed."""
    rng = check_random_state(random_state)
    gen = np.random.default_rng(rng.randint(2**31))
    counts = np.broadcast_to(np.asarray(n_per_class), (len(names),))
    labels = np.repeat(np.asarray(names), counts)
    images = np.stack([render_world_image(n, gen, size, domain) for n in labels]) if len(labels) \
        else np.zeros((0, size, size, 3), np.uint8)
    return images, labels
