"""Zero-shot CLIP's class scores on features. NumPy only."""

import numpy as np

# Zero-shot CLIP's scores are cosines times CLIP's logit scale, as the head's are.
ZERO_SHOT_SCALE = 100.0


def unit_rows(A):
    """Rows of ``A`` scaled to unit norm in float64; a zero row stays zero."""
    A = np.asarray(A, np.float64)
    return A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-300)


def zero_shot_scores(X, text_features):
    """CLIP zero-shot, in float64: cosine of each image with each class's text feature,
    times 100. A zero row scores zero."""
    return ZERO_SHOT_SCALE * (unit_rows(X) @ unit_rows(text_features).T)
