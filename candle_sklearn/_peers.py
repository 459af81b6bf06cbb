"""The numeric cores of the methods Candle is compared with, on L2-normalised features:
each ``fit_*`` returns the fitted arrays and each ``*_scores`` scores features with them
(n, C), in the class order of its inputs. Torch and NumPy only; the estimators in
:mod:`candle_sklearn.baselines` validate and hand over their inputs.

``X`` (n, D) are image features, ``y`` (n,) class indices, ``T`` (C, D) one feature per
class (the class texts, or class means for a method run without text), all rows of unit
norm; ``counts`` (C,) are the training images per class, 0 for new classes.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from ._zero_shot import unit_rows

LOGIT_SCALE = 100.0  # CLIP's, fixed in every recipe below


def _tensor(a):
    return torch.as_tensor(np.asarray(a, dtype=np.float32))


def _cosine_decay(lr, step, total):
    return 0.5 * lr * (1 + math.cos(math.pi * step / total))


def _batches(n, size, generator):
    """Index tensors of one shuffled pass over ``n`` rows (the last batch may be short)."""
    order = torch.randperm(n, generator=generator)
    return [order[i:i + size] for i in range(0, n, size)]


# ---------------------------------------------------------------- linear adapter
def fit_linear_adapter(X, y, T, *, lam, lr, steps, seed=0):
    """ProLIP's regularised linear adapter (RLA): an identity-initialised map A (D, D) on
    the image features, cross-entropy of ``100 cos(A x, t_c)`` over every class against
    the frozen ``T``, plus ``lam * ||A - I||^2``; Adam (eps 1e-4), ``steps`` full-batch
    steps, cosine decay to 0. Returns A."""
    X, T, y = _tensor(X), _tensor(T), torch.as_tensor(y)
    eye = torch.eye(X.shape[1])
    A = torch.eye(X.shape[1], requires_grad=True)
    optimizer = torch.optim.Adam([A], lr=lr, eps=1e-4)
    for step in range(steps):
        optimizer.param_groups[0]["lr"] = _cosine_decay(lr, step, steps)
        logits = LOGIT_SCALE * F.normalize(X @ A.T, dim=-1) @ T.T
        loss = F.cross_entropy(logits, y) + lam * ((A - eye) ** 2).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return A.detach().numpy()


def linear_adapter_scores(X, A, T):
    X, T = np.asarray(X, np.float64), np.asarray(T, np.float64)
    return LOGIT_SCALE * unit_rows(X @ A.T.astype(np.float64)) @ T.T


# ---------------------------------------------------------------- cosine classifiers
def cosine_scores(X, W, scale=LOGIT_SCALE):
    """``scale * cos(x, w_c)``."""
    return scale * np.asarray(X, np.float64) @ unit_rows(W).T


def clap_multipliers(X, y, T, n_classes):
    """CLAP's class-adaptive multipliers: the mean zero-shot probability of the true class
    over each class's training images (0 for a class without images)."""
    proba = torch.softmax(LOGIT_SCALE * _tensor(X) @ _tensor(T).T, dim=1).numpy()
    y = np.asarray(y)
    sums = np.bincount(y, weights=proba[np.arange(len(y)), y], minlength=n_classes)
    return sums / np.maximum(np.bincount(y, minlength=n_classes), 1)


def fit_clap(X, y, T, trained, *, lr, epochs, batch_size, seed=0):
    """CLAP: a cosine classifier W (C, D) initialised at ``T``, cross-entropy plus the
    class-adaptive penalty ``mean_c lambda_c ||w_c - t_c||^2`` (multipliers fixed at
    :func:`clap_multipliers`); SGD with momentum 0.9, one warm-up epoch at 1e-5, then a
    per-epoch cosine decay. Rows not in ``trained`` (new classes: no image to weigh
    against the text) stay at their text. Returns W."""
    X, T, y = _tensor(X), _tensor(T), torch.as_tensor(y)
    lam = _tensor(clap_multipliers(X.numpy(), y.numpy(), T.numpy(), len(T)))
    mask = torch.as_tensor(trained, dtype=torch.float32)[:, None]
    W = T.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([W], lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = max(1, len(X) // batch_size)  # drop_last, as its data loader
    for epoch in range(epochs):
        optimizer.param_groups[0]["lr"] = (1e-5 if epoch == 0 else
                                           _cosine_decay(lr, epoch - 1, epochs))
        for idx in _batches(len(X), batch_size, generator)[:steps_per_epoch]:
            logits = LOGIT_SCALE * F.normalize(X[idx], dim=-1) @ F.normalize(W, dim=-1).T
            penalty = (lam * ((W - T) ** 2).sum(1)).mean()
            loss = F.cross_entropy(logits, y[idx]) + penalty
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            W.grad *= mask
            optimizer.step()
    return W.detach().numpy()


def fit_la_cosine(X, y, T, counts, *, scale, lr, epochs, batch_size, weight_decay, tau=1.0,
                  seed=0):
    """LIFT's classifier on frozen features: a cosine classifier W (C, D) initialised at
    ``T`` (``scale * cos``), trained with the logit-adjusted loss ``CE(z + tau log pi)``;
    SGD (momentum 0.9, weight decay), batches with the last one kept, a per-epoch cosine
    decay. Classes without images have prior 0, which takes them out of the loss: their
    rows stay at their text. Returns W."""
    X, T, y = _tensor(X), _tensor(T), torch.as_tensor(y)
    trained = torch.as_tensor(counts > 0)
    log_prior = torch.log(_tensor(counts[counts > 0] / counts.sum()))
    remap = torch.cumsum(trained.long(), 0) - 1  # class index -> index among trained
    W = T[trained].clone().requires_grad_(True)
    optimizer = torch.optim.SGD([W], lr=lr, momentum=0.9, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        optimizer.param_groups[0]["lr"] = _cosine_decay(lr, epoch, epochs)
        for idx in _batches(len(X), batch_size, generator):
            logits = scale * F.normalize(X[idx], dim=-1) @ F.normalize(W, dim=-1).T
            loss = F.cross_entropy(logits + tau * log_prior, remap[y[idx]])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    out = T.clone()
    out[trained] = W.detach()
    return out.numpy()


def fit_cross_modal(X, y, T, *, lr, weight_decay, batch_size, steps, seed=0):
    """Lin et al.'s cross-modal linear probe: a bias-free linear head W (C, D),
    initialised at ``T``, on unit-norm inputs (``100 W x``), trained with cross-entropy
    on batches of half images and half class texts (each text a sample of its class);
    AdamW, 50 warm-up steps from 1e-5, then cosine decay. Returns W."""
    X, T, y = _tensor(X), _tensor(T), torch.as_tensor(y)
    text_y = torch.arange(len(T))
    W = T.clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([W], lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    n_text = min(batch_size // 2, len(T))
    n_image = min(batch_size - batch_size // 2, len(X))
    warmup = min(50, steps // 10)
    for step in range(steps):
        optimizer.param_groups[0]["lr"] = (lr * max(step, 1e-2) / warmup if step < warmup
                                           else _cosine_decay(lr, step - warmup, steps))
        images = torch.randint(len(X), (n_image,), generator=generator)
        texts = torch.randint(len(T), (n_text,), generator=generator)
        rows = torch.cat([X[images], T[texts]])
        logits = LOGIT_SCALE * rows @ W.T
        loss = F.cross_entropy(logits, torch.cat([y[images], text_y[texts]]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return W.detach().numpy()


def linear_scores(X, W):
    return LOGIT_SCALE * np.asarray(X, np.float64) @ np.asarray(W, np.float64).T


# ---------------------------------------------------------------- GDA
def ks_precision(residuals):
    """GDA's shared precision matrix: ``D * pinv(S + tr(S) / (N - 1) I)`` of the scatter
    ``S`` of the residuals (N, D) (the Kubokawa-Srivastava ridge estimator)."""
    R = np.asarray(residuals, np.float64)
    n, dim = R.shape
    S = R.T @ R
    return dim * np.linalg.pinv(S + np.trace(S) / max(n - 1, 1) * np.eye(dim), hermitian=True)


def fit_gda(X, y, T, counts, *, k=64, text_weight=16):
    """GDA: class means and one shared precision matrix P of the base classes, so that
    class c scores ``x P mu_c - mu_c P mu_c / 2`` (uniform prior); a new class j is
    synthesised from the ``k`` training features nearest to its text (cosine) and
    ``text_weight`` copies of the text, and scored with the same P.
    Returns ``(W (C, D), b (C,))``."""
    X, T = np.asarray(X, np.float64), np.asarray(T, np.float64)
    base, new = np.flatnonzero(counts > 0), np.flatnonzero(counts == 0)
    means = np.zeros_like(T)
    means[base] = np.stack([X[y == c].mean(0) for c in base])
    k = min(k, len(X))
    for j in new:
        near = X[np.argsort(-(X @ T[j]), kind="stable")[:k]]
        means[j] = (near.sum(0) + text_weight * T[j]) / (k + text_weight)
    P = ks_precision(X - means[y])
    W = means @ P
    return W, -0.5 * np.einsum("cd,cd->c", W, means)


# ---------------------------------------------------------------- Tip-Adapter
def cache_scores(X, keys, key_labels, n_classes, beta):
    """Tip-Adapter's cache term ``exp(-beta (1 - x k^T)) @ one_hot(labels)`` (n, C)."""
    affinity = np.exp(-beta * (1 - np.asarray(X, np.float64) @ np.asarray(keys, np.float64).T))
    values = np.zeros((len(key_labels), n_classes))
    values[np.arange(len(key_labels)), key_labels] = 1.0
    return affinity @ values


def fit_tip_keys(X, y, T, n_classes, *, alpha, beta, lr, epochs, batch_size, seed=0,
                 zero_shot=True):
    """Tip-Adapter-F: the cache keys (initialised at the training features) trained with
    cross-entropy of ``100 x T^T + alpha * cache`` at fixed ``alpha`` and ``beta``;
    AdamW (lr, eps 1e-4, weight decay 0.01), a per-step cosine decay. Returns the keys."""
    X, T, y = _tensor(X), _tensor(T), torch.as_tensor(y)
    values = F.one_hot(y, n_classes).float()
    keys = X.clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([keys], lr=lr, eps=1e-4, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(X) / batch_size)
    total, step = epochs * steps_per_epoch, 0
    for _ in range(epochs):
        for idx in _batches(len(X), batch_size, generator):
            optimizer.param_groups[0]["lr"] = _cosine_decay(lr, step, total)
            cache = torch.exp(-beta * (1 - X[idx] @ keys.T)) @ values
            logits = alpha * cache + (LOGIT_SCALE * X[idx] @ T.T if zero_shot else 0)
            loss = F.cross_entropy(logits, y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    return keys.detach().numpy()
