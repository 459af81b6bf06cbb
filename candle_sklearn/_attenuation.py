"""How much its prototype's noise attenuates each base class's visual cosine. Torch only.

A prototype is the mean of its class's n images: the class's true mean mu plus noise of
total variance tr(S) / n. An image's cosine with it is lower than with mu by about
a = |p| / |mu| = sqrt(1 + tr(S) / (n |mu|^2)): large for a class of few images, near 1 for
a class of many, so the visual logits of a long tail's rare classes sit too low against
its frequent ones. Dividing by a, relative to the least attenuated class, takes that out
(docs/decisions/0024). |mu|^2 is pooled over the classes: one class's estimate from a few
images is too noisy to scale its logits by, and with a pooled one the gain depends on the
class's images only, so a training set with as many images in every class keeps its
scores exactly.
"""

import torch

# Largest attenuation corrected: beyond it the prototypes are mostly noise (|mu|^2 below
# 1/16 of |p|^2), and scaling their cosines up would amplify noise, not restore a signal.
MAX_ATTENUATION = 4.0
# Rows per product when projecting the deviations (bounds the copy).
CHUNK_ROWS = 16384


@torch.no_grad()
def prototype_noise(visual_prototypes, W_v, X, y):
    """Each base class's prototype noise tr(S) / n_c and squared norm |p_c W_v|^2 (C_b,),
    float64, in the space of the visual projection ``W_v`` (D, D); None when no class has
    two images (no noise to estimate).

    ``visual_prototypes`` (C_b, D) are the class means of the training rows ``X`` (n, D)
    of classes ``y`` (n,), both in the head's order.
    """
    protos, W = visual_prototypes.cpu().float(), W_v.detach().cpu().float()
    n_base = len(protos)
    if len(X) <= n_base:
        return None
    noise = torch.zeros((), dtype=torch.float64)  # sum over images of |(x - p_y) W_v|^2
    for start in range(0, len(X), CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        noise += ((X[rows] - protos[y[rows]]) @ W).double().pow(2).sum()
    noise /= len(X) - n_base  # tr(S): n - 1 independent deviations per class of n
    spread = noise / torch.bincount(y, minlength=n_base)[:n_base].double()  # tr(S) / n
    return spread, (protos @ W).double().pow(2).sum(1)  # |p|^2: |mu|^2 + tr(S) / n expected


def attenuation_gain(visual_prototypes, W_v, X, y):
    """Each base class's attenuation a_c relative to the smallest (C_b,), float32, with
    |mu|^2 pooled over the classes (arguments: :func:`prototype_noise`). Ones when no
    class has two images."""
    noise = prototype_noise(visual_prototypes, W_v, X, y)
    if noise is None:
        return torch.ones(len(visual_prototypes))
    spread, p2 = noise
    mu2 = (p2 - spread).mean().clamp_min(p2.mean() / MAX_ATTENUATION ** 2)
    a = (1 + spread / mu2).sqrt().clamp_max(MAX_ATTENUATION)
    return (a / a.min()).float()
