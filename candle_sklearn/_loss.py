"""Compensating logit-adjusted (CLA) loss and the class prior it uses. Torch only."""

import torch
import torch.nn.functional as F


def class_log_prior(class_counts: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Log of the compensated prior ``(n_c + 1) / sum_k (n_k + 1)``.

    The ``+ 1`` counts the prototype row that every mini-batch carries for each
    class, so a class with no training image behaves as a one-sample class.
    """
    counts = class_counts.to(torch.float64) + 1.0
    return torch.log(counts / counts.sum()).to(dtype)


def cla_loss(logits: torch.Tensor, target: torch.Tensor, log_prior: torch.Tensor,
             tau: float) -> torch.Tensor:
    """Cross-entropy of ``logits + tau * log_prior`` against ``target`` (mean over rows)."""
    return F.cross_entropy(logits + tau * log_prior, target)
