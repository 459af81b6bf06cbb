import math

import torch

from candle_sklearn._loss import cla_loss, class_log_prior


def test_class_log_prior_counts_the_prototype_row():
    prior = class_log_prior(torch.tensor([3, 1, 0]))
    expected = [math.log(4 / 7), math.log(2 / 7), math.log(1 / 7)]
    torch.testing.assert_close(prior, torch.tensor(expected))


def test_cla_loss_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    target = torch.tensor([0, 2])
    counts = torch.tensor([3, 1, 0])
    tau = 0.5
    log_pi = [math.log(4 / 7), math.log(2 / 7), math.log(1 / 7)]
    losses = []
    for row, t in zip(logits.tolist(), target.tolist()):
        adj = [z + tau * lp for z, lp in zip(row, log_pi)]
        losses.append(-adj[t] + math.log(sum(math.exp(a) for a in adj)))
    got = cla_loss(logits, target, class_log_prior(counts), tau)
    assert abs(got.item() - sum(losses) / 2) < 1e-6


def test_tau_zero_is_plain_cross_entropy():
    logits = torch.randn(5, 4)
    target = torch.tensor([0, 1, 2, 3, 0])
    got = cla_loss(logits, target, class_log_prior(torch.tensor([9, 3, 1, 0])), 0.0)
    torch.testing.assert_close(got, torch.nn.functional.cross_entropy(logits, target))
