"""The generated image world: coloured, patterned shapes whose compositions are the
classes (the bundled tiny CLIP was trained on two thirds of them)."""

import numpy as np
from sklearn.utils import check_random_state

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


def make_world_task(random_state=0, n_test_per_class=20, imbalance_ratio=0.02,
                    max_per_class=100, domain="downstream"):
    """The demo's task on the generated image world: long-tailed training images of the
    base compositions (those the bundled tiny CLIP was trained on), balanced test images
    of every composition, the held-out ones known by name only.

    Parameters
    ----------
    random_state : int, default=0
        Seeds the long tail's class order and the images (the test images with
        ``random_state + 1``).
    n_test_per_class : int, default=20
    imbalance_ratio, max_per_class : float, int, default=0.02, 100
        The long tail (:func:`~candle_sklearn.datasets.long_tailed_counts`).
    domain : {"downstream", "pretrain"}, default="downstream"
        The images' style; "downstream" is shifted from the tiny CLIP's training images.

    Returns
    -------
    data : Bunch
        ``X_train``, ``y_train``, ``X_test``, ``y_test`` (PIL images and labels),
        ``classes``, ``base_classes``, ``new_classes`` and ``train_counts``.
    """
    from sklearn.utils import Bunch

    from .protocol import long_tailed_counts

    classes = np.array(sorted(world_classes()))
    new = np.array(sorted(world_new_classes()))
    base = np.setdiff1d(classes, new)
    rng = np.random.RandomState(random_state)
    counts = dict(zip(base[rng.permutation(len(base))],
                      long_tailed_counts(len(base), imbalance_ratio, max_per_class)))
    X_train, y_train = make_world_images(list(counts), list(counts.values()),
                                         random_state=random_state, domain=domain)
    X_test, y_test = make_world_images(list(classes), n_test_per_class,
                                       random_state=random_state + 1, domain=domain)
    train_counts = np.array([counts.get(c, 0) for c in classes])
    return Bunch(X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test,
                 classes=classes, new_classes=new, base_classes=base, train_counts=train_counts)
