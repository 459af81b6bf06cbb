"""CandleHead against a literal port of the official Candle forward pass and loss.

The port below follows shijxcs/Candle `trainers/candle.py` (classes Fusion and Head) and
`trainers/losses.py` (CompensatingLogitAdjustedLoss) statement by statement, in float64;
it is written for this test, not imported. The reference configuration is
`context="batch"` (every token attends to every token), `virtual_init="text"`, and the
new classes' text rows tied to the virtual prototypes (`tied_text=True`): in the
reference the virtual prototypes are a view of those rows. Attention dropout is 0 here:
the reference's 0.1 draws random masks that no two implementations share.
"""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from candle_sklearn._head import CandleHead
from candle_sklearn._loss import cla_loss, class_log_prior

N_BASE, N_NEW, D, B = 4, 3, 16, 5


class PortFusion(nn.Module):
    def __init__(self, c_in, num_heads=8):
        super().__init__()
        self.attn = nn.MultiheadAttention(c_in, num_heads=num_heads, dropout=0.0)
        self.ratio = nn.Parameter(torch.tensor([0.1]))
        self.norm = nn.LayerNorm(c_in)

    def forward(self, features):
        features = self.norm(features)
        x, _ = self.attn(features, features, features, need_weights=False)  # mask "none"
        return self.ratio * x + features


class PortHead(nn.Module):
    def __init__(self, visual_prototypes, text_features, logit_scale, scale_factor):
        super().__init__()
        hidden_dim = text_features.shape[1]
        self.n_cls = text_features.shape[0]
        self.text_features = text_features.data
        self.visual_prototypes = visual_prototypes.data
        self.logit_scale = logit_scale.exp()
        self.logit_scale_visual = logit_scale.exp() * scale_factor
        self.proj_image = nn.Parameter(torch.eye(hidden_dim, dtype=text_features.dtype))
        self.proj_text = nn.Parameter(torch.eye(hidden_dim, dtype=text_features.dtype))
        self.fusion = PortFusion(hidden_dim)
        # vir_init == "text": a view of the new classes' text rows (shared storage)
        self.virtual_prototypes = nn.Parameter(text_features[visual_prototypes.shape[0]:, ...])

    def forward(self, image_features):  # phase == "train"
        image_proj = image_features @ self.proj_image
        text_proj = self.text_features @ self.proj_text
        protos = torch.concat((self.visual_prototypes, self.virtual_prototypes), dim=0)
        protos_proj = protos @ self.proj_image
        image_norm = image_proj / image_proj.norm(dim=-1, keepdim=True)
        text_norm = text_proj / text_proj.norm(dim=-1, keepdim=True)
        protos_norm = protos_proj / protos_proj.norm(dim=-1, keepdim=True)
        logits = self.logit_scale * torch.cat((image_norm, protos_norm), dim=0) @ text_norm.t()
        fused = self.fusion(torch.cat((image_proj, protos_proj, text_proj), dim=0))
        image_proj = fused[:-2 * self.n_cls, ...]
        protos_proj = fused[-2 * self.n_cls:-self.n_cls, ...]
        text_proj = fused[-self.n_cls:, ...]
        image_norm = image_proj / image_proj.norm(dim=-1, keepdim=True)
        text_norm = text_proj / text_proj.norm(dim=-1, keepdim=True)
        protos_norm = protos_proj / protos_proj.norm(dim=-1, keepdim=True)
        batch_x = torch.cat((image_norm, protos_norm), dim=0)
        logits_vt = self.logit_scale * batch_x @ text_norm.t()
        logits_vv = self.logit_scale_visual * batch_x @ protos_norm.t()
        return logits, logits_vt, logits_vv


def port_cla(cls_num_list, logit, target, tau=1.0):
    counts = cls_num_list.clone() + 1  # the reference adds 1 in place, per class
    log_cls_num = torch.log(counts / torch.sum(counts))
    return F.cross_entropy(logit + tau * log_cls_num.unsqueeze(0), target)


def _pair(tied_text=True, visual_scale=1.0, seed=0):
    """Our head and the port, with the same (perturbed) parameters, in float64."""
    gen = torch.Generator().manual_seed(seed)
    # float32 values: the head keeps its feature buffers in float32 before .double()
    protos = torch.randn(N_BASE, D, generator=gen).double()
    text = torch.randn(N_BASE + N_NEW, D, generator=gen).double()
    ours = CandleHead(protos, text, N_NEW, context="batch", dropout=0.0,
                      visual_scale=visual_scale, tied_text=tied_text).double().train()
    with torch.no_grad():  # move away from the identity / small-ratio start
        for p in ours.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    port = PortHead(protos.clone(), text.clone(), torch.tensor(100.0, dtype=torch.float64).log(),
                    visual_scale).double().train()
    with torch.no_grad():
        port.proj_image.copy_(ours.W_v)
        port.proj_text.copy_(ours.W_t)
        port.virtual_prototypes.copy_(ours.virtual_prototypes)  # writes the text rows too
        port.fusion.norm.load_state_dict(ours.fusion.norm.state_dict())
        port.fusion.attn.load_state_dict(ours.fusion.attn.state_dict())
        port.fusion.ratio.fill_(ours.fusion.alpha.item())
    X = torch.randn(B, D, generator=gen, dtype=torch.float64)
    return ours, port, X


COUNTS = torch.tensor([7.0, 3.0, 1.0, 2.0, 0.0, 0.0, 0.0], dtype=torch.float64)
TARGET = torch.cat([torch.tensor([0, 1, 1, 2, 3]), torch.arange(N_BASE + N_NEW)])


def _losses(ours, port, X, tau=1.0):
    ours_logits = ours.training_logits(X)
    port_logits = port(X)
    ours_loss = sum(cla_loss(z, TARGET, class_log_prior(COUNTS, torch.float64), tau)
                    for z in ours_logits)
    port_loss = sum(port_cla(COUNTS, z, TARGET, tau) for z in port_logits)
    return ours_logits, port_logits, ours_loss, port_loss


# (ours, port) parameter names
PAIRS = [("W_v", "proj_image"), ("W_t", "proj_text"),
         ("virtual_prototypes", "virtual_prototypes"), ("fusion.alpha", "fusion.ratio"),
         ("fusion.norm.weight", "fusion.norm.weight"), ("fusion.norm.bias", "fusion.norm.bias"),
         ("fusion.attn.in_proj_weight", "fusion.attn.in_proj_weight"),
         ("fusion.attn.in_proj_bias", "fusion.attn.in_proj_bias"),
         ("fusion.attn.out_proj.weight", "fusion.attn.out_proj.weight"),
         ("fusion.attn.out_proj.bias", "fusion.attn.out_proj.bias")]


@pytest.mark.parametrize("visual_scale", [1.0, 0.5])
def test_logits_loss_and_gradients_match_the_reference_port(visual_scale):
    ours, port, X = _pair(visual_scale=visual_scale)
    ours_logits, port_logits, ours_loss, port_loss = _losses(ours, port, X)
    assert len(ours_logits) == 3
    for a, b in zip(ours_logits, port_logits):
        assert a.shape == (B + N_BASE + N_NEW, N_BASE + N_NEW)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    torch.testing.assert_close(ours_loss, port_loss, rtol=0, atol=1e-10)
    ours_loss.backward()
    port_loss.backward()
    ours_params, port_params = dict(ours.named_parameters()), dict(port.named_parameters())
    assert {a for a, _ in PAIRS} == set(ours_params)
    assert {b for _, b in PAIRS} == set(port_params)
    for a, b in PAIRS:
        ga, gb = ours_params[a].grad, port_params[b].grad.reshape(ours_params[a].shape)
        assert ga.abs().max() > 0, a
        torch.testing.assert_close(ga, gb, rtol=0, atol=1e-10, msg=a)


@pytest.mark.parametrize("tied_text", [True, False])
def test_training_moves_new_text_tokens_only_when_tied(tied_text):
    """After an optimizer step the reference's new-class text rows have moved with the
    virtual prototypes; ``tied_text=True`` reproduces it, the default keeps them."""
    ours, port, X = _pair(tied_text=tied_text)
    port_text_before = port.text_features.clone()
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.05)
    opt_port = torch.optim.SGD(port.parameters(), lr=0.05)
    for opt, loss in zip((opt_ours, opt_port), _losses(ours, port, X)[2:]):
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.equal(port.text_features[N_BASE:], port_text_before[N_BASE:])
    torch.testing.assert_close(port.text_features[N_BASE:], port.virtual_prototypes.detach())
    ours_logits, port_logits, _, _ = _losses(ours, port, X)
    gap = max((a - b).abs().max().item() for a, b in zip(ours_logits, port_logits))
    if tied_text:
        assert gap < 1e-10
    else:
        assert gap > 1e-4


def test_tied_text_needs_text_initialised_virtual_prototypes():
    with pytest.raises(ValueError, match="tied_text"):
        CandleHead(torch.randn(2, D), torch.randn(3, D), 1, virtual_init="visual",
                   tied_text=True)


def test_reference_recipe_trains_its_fifty_epochs_whatever_the_step_cap():
    # the default max_steps=200 must not cut the reference's 50 epochs short
    from candle_sklearn import CandleClassifier
    from candle_sklearn import REFERENCE_RECIPE

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((600, 8)), np.arange(600) % 3
    clf = CandleClassifier(**REFERENCE_RECIPE, random_state=0).fit(X, y)
    assert clf.n_iter_ == 50 * 5 > CandleClassifier().max_steps
