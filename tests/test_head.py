"""The head (candle_sklearn._head): its fast attention paths against a literal
nn.MultiheadAttention pass, and its forward pass and loss against a literal port of the
official Candle code."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from candle_sklearn import _head as _head_module
from candle_sklearn._head import CandleHead, n_heads_for
from candle_sklearn._loss import cla_loss, class_log_prior

C, C_BASE, D = 6, 4, 16


def _head(context, text=True, seed=0):
    torch.manual_seed(seed)
    head = CandleHead(torch.randn(C_BASE, D), torch.randn(C, D) if text else None,
                      n_new=C - C_BASE if text else 0, context=context).double().eval()
    with torch.no_grad():  # move away from the identity / small-alpha start
        head.fusion.alpha.fill_(0.7)
        head.W_v.add_(0.2 * torch.randn(D, D, dtype=torch.double))
        if text:
            head.W_t.add_(0.2 * torch.randn(D, D, dtype=torch.double))
    return head


def _literal_scores(head, X, isolated):
    """Score each image as the sequence [x; P; T] through nn.MultiheadAttention."""
    P, T = head.class_tokens()
    U = X @ head.W_v
    rows = []
    for u in U:
        seq = torch.cat([u[None], P] + ([T] if T is not None else []))
        normed = head.fusion.norm(seq)
        mask = None
        if isolated:  # class tokens may not attend to the image token
            mask = torch.zeros(len(seq), len(seq), dtype=torch.bool)
            mask[1:, 0] = True
        out, _ = head.fusion.attn(normed[None], normed[None], normed[None],
                                  attn_mask=mask, need_weights=False)
        fused = normed + head.fusion.alpha * out[0]
        x = F.normalize(fused[:1], dim=-1)
        n_classes = C if T is not None else C_BASE
        gain = F.pad(head.visual_gain, (0, n_classes - C_BASE), value=1.0)  # new: none
        z = head.logit_scale * head.visual_scale * gain * (
            x @ F.normalize(fused[1:1 + n_classes], dim=-1).T)
        if T is not None:
            z = z + head.logit_scale * x @ F.normalize(fused[1 + len(P):], dim=-1).T
        rows.append(z)
    return torch.cat(rows)


@pytest.mark.parametrize("context", ["isolated", "batch"])
@pytest.mark.parametrize("text", [True, False])
def test_fast_scores_equal_literal_attention(context, text):
    head = _head(context, text)
    head.set_visual_gain(1 + 2 * torch.rand(C_BASE))  # each base class's own weight
    X = torch.randn(7, D, dtype=torch.double)
    with torch.no_grad():
        got = head.scores(X)
        want = _literal_scores(head, X, isolated=context == "isolated")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("text", [True, False])
def test_float32_scores_equal_literal_attention(monkeypatch, fused, text):
    """Float32 inference on CPU takes PyTorch's fused attention kernel (or, in a torch
    without it, the unfused path): both agree with the literal pass to float32 rounding."""
    if not fused:
        monkeypatch.setattr(_head_module, "_CPU_FLASH", None)
    elif _head_module._CPU_FLASH is None:
        pytest.skip("this torch has no fused CPU attention kernel")
    head = _head("isolated", text)
    X = torch.randn(7, D, dtype=torch.double)
    with torch.no_grad():
        want = _literal_scores(head, X, isolated=True)
        got = head.float().scores(X.float())
    torch.testing.assert_close(got.double(), want, atol=1e-3, rtol=1e-5)


def test_batch_of_one_differs_from_isolated():
    """The closed form must really add the image to the class tokens' context."""
    X = torch.randn(3, D, dtype=torch.double)
    with torch.no_grad():
        a = _head("batch").scores(X)
        b = _head("isolated").scores(X)
    assert (a - b).abs().max() > 1e-4


def test_training_logits_shapes_and_rows():
    head = _head("isolated").float().train()
    z0, zvt, zvv = head.training_logits(torch.randn(5, D))
    assert z0.shape == zvt.shape == zvv.shape == (5 + C, C)
    head_v = _head("batch", text=False).float().train()
    z0, zvt, zvv = head_v.training_logits(torch.randn(5, D))
    assert z0 is None and zvt is None and zvv.shape == (5 + C_BASE, C_BASE)


def _uses_in_graph(output):
    """How many times each leaf tensor enters the autograd graph of ``output``."""
    uses, seen, stack = {}, set(), [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for child, _ in node.next_functions:
            if child is not None and hasattr(child, "variable"):
                uses[id(child.variable)] = uses.get(id(child.variable), 0) + 1
            stack.append(child)
    return uses


@pytest.mark.parametrize("context", ["isolated", "batch"])
def test_each_parameter_enters_a_training_step_once(context):
    """Every projection multiplies all its tokens in one product: backward computes one
    weight gradient per parameter, with no second product and sum to accumulate (at
    small batches these D x D products are most of a step's time)."""
    head = _head(context).float().train()
    logits = head.training_logits(torch.randn(50, D))
    uses = _uses_in_graph(sum(z.sum() for z in logits if z is not None))
    for name, p in head.named_parameters():
        assert uses.get(id(p)) == 1, (name, uses.get(id(p)))


def test_class_tokens_projected_once_per_step():
    """In-projection of the 2C class tokens happens once, whatever the batch size."""
    head = _head("isolated").float().train()
    sizes = []
    original = head.fusion._qkv

    def spy(normed):
        sizes.append(normed.shape[0])
        return original(normed)

    head.fusion._qkv = spy
    head.training_logits(torch.randn(50, D))
    assert sizes == [2 * C + 50]  # class and image tokens together, once
    sizes.clear()
    head.eval()
    with torch.no_grad():
        ctx = head.class_context()
        head.scores(torch.randn(3, D), ctx)
        head.scores(torch.randn(4, D), ctx)
    assert sizes == [2 * C, 3, 4]


def test_virtual_prototypes_start_from_text():
    text = torch.randn(C, D)
    head = CandleHead(torch.randn(C_BASE, D), text, n_new=C - C_BASE)
    torch.testing.assert_close(head.virtual_prototypes.detach(), text[C_BASE:])
    visual = CandleHead(torch.randn(C_BASE, D), text, n_new=2, virtual_init="visual")
    assert visual.virtual_prototypes.shape == (2, D)


def test_projections_start_at_the_given_matrix_or_the_identity():
    start = torch.randn(D, D)
    head = CandleHead(torch.randn(C_BASE, D), torch.randn(C, D), n_new=C - C_BASE,
                      projection=start)
    torch.testing.assert_close(head.W_v.detach(), start, rtol=0, atol=0)
    torch.testing.assert_close(head.W_t.detach(), start, rtol=0, atol=0)
    assert head.W_v.data_ptr() != head.W_t.data_ptr()  # two parameters, trained apart
    plain = CandleHead(torch.randn(C_BASE, D), None, n_new=0)
    torch.testing.assert_close(plain.W_v.detach(), torch.eye(D), rtol=0, atol=0)


def test_heads_divide_dim():
    assert n_heads_for(512, 8) == 8 and n_heads_for(6, 8) == 6 and n_heads_for(7, 8) == 7
    assert n_heads_for(11, 8) == 1


@pytest.mark.parametrize("context", ["isolated", "batch"])
def test_config_and_state_dict_rebuild_the_head(context):
    torch.manual_seed(0)
    head = CandleHead(torch.randn(5, 16), torch.randn(8, 16), 3, context=context)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.1 * torch.randn_like(p))
    head.set_visual_gain(torch.tensor([1.0, 1.5, 2.0, 1.2, 3.0]))
    head.eval()
    copy = CandleHead.from_config(head.get_config(), head.state_dict())
    X = torch.randn(4, 16)
    torch.testing.assert_close(copy.scores(X), head.scores(X), rtol=0, atol=0)


def test_heads_saved_before_the_visual_gain_load_without_one():
    """A state dict or a pickle from before ``visual_gain`` existed predicted with none:
    it loads with gains of one."""
    import pickle

    torch.manual_seed(0)
    head = CandleHead(torch.randn(5, 16), torch.randn(8, 16), 3).eval()
    X = torch.randn(4, 16)
    want = head.scores(X)
    old_state = {k: v for k, v in head.state_dict().items() if k != "visual_gain"}
    rebuilt = CandleHead.from_config(head.get_config(), old_state)
    del head._buffers["visual_gain"]  # as a head pickled before it existed
    unpickled = pickle.loads(pickle.dumps(head))
    for old in (rebuilt, unpickled):
        torch.testing.assert_close(old.visual_gain, torch.ones(5), rtol=0, atol=0)
        torch.testing.assert_close(old.scores(X), want, rtol=0, atol=0)


@pytest.mark.parametrize("context", ["isolated", "batch"])
def test_class_attention_is_4d_for_the_fused_kernels(monkeypatch, context):
    """CUDA's flash and memory-efficient kernels take 4-D inputs only: with (H, M, dh)
    SDPA falls back to the math path and materialises (H, M, M) scores (33.6 GiB for a
    training step at 8,142 classes on an H100, measured before this was fixed)."""
    from candle_sklearn import _head

    dims, sdpa = [], F.scaled_dot_product_attention

    def recording(q, k, v, **kw):
        dims.append((q.dim(), k.dim(), v.dim()))
        return sdpa(q, k, v, **kw)

    monkeypatch.setattr(_head.F, "scaled_dot_product_attention", recording)
    head = CandleHead(torch.randn(C_BASE, D), torch.randn(C, D), n_new=C - C_BASE,
                      context=context).train()
    sum(z.sum() for z in head.training_logits(torch.randn(3, D))).backward()
    assert dims and all(d == (4, 4, 4) for d in dims)


@pytest.mark.gpu
def test_class_attention_runs_in_a_fused_cuda_kernel():
    """Training at a size where the math path would need gigabytes, with only the
    flash and memory-efficient kernels allowed (either raises if it cannot run)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from candle_sklearn._train import _precision

    torch.manual_seed(0)
    n, dim = 4000, 512
    head = CandleHead(torch.randn(n, dim), torch.randn(n, dim), 0).cuda().train()
    torch.cuda.reset_peak_memory_stats()
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        with _precision(torch.device("cuda"), "auto"):
            logits = [z.float() for z in head.training_logits(torch.randn(64, dim).cuda())]
        sum(z.logsumexp(1).sum() for z in logits).backward()
    # (8 heads, 8,000 tokens)^2 scores would be 2 GiB in float32 per copy
    assert torch.cuda.max_memory_allocated() < 2 * 2**30


# ======================================================== the reference port
# CandleHead against a literal port of the official Candle forward pass and loss.
#
# The port below follows shijxcs/Candle `trainers/candle.py` (classes Fusion and Head) and
# `trainers/losses.py` (CompensatingLogitAdjustedLoss) statement by statement, in float64;
# it is written for this test, not imported. The reference configuration is
# `context="batch"` (every token attends to every token), `virtual_init="text"`, and the
# new classes' text rows tied to the virtual prototypes (`tied_text=True`): in the
# reference the virtual prototypes are a view of those rows. Attention dropout is 0 here:
# the reference's 0.1 draws random masks that no two implementations share.
N_BASE, N_NEW, B = 4, 3, 5  # and D = 16, as above


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


def test_scores_differentiate_correctly_in_eval_mode():
    """The fused kernel's log-sum-exp carries no gradient: where autograd records, the
    unfused path runs, so gradients through head.scores are right in float32 too."""
    head = _head("isolated")
    X = torch.randn(5, D, dtype=torch.double, requires_grad=True)
    head.scores(X).sum().backward()
    want = X.grad.clone()
    X32 = X.detach().float().requires_grad_()
    head.float().scores(X32).sum().backward()
    torch.testing.assert_close(X32.grad.double(), want, atol=1e-3, rtol=1e-3)
