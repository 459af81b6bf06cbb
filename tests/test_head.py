"""The head's fast attention paths against a literal nn.MultiheadAttention pass."""

import pytest
import torch
import torch.nn.functional as F

from candle_sklearn._head import CandleHead, n_heads_for

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
        z = head.logit_scale * head.visual_scale * x @ F.normalize(fused[1:1 + C_BASE + (C - C_BASE if T is not None else 0)], dim=-1).T
        if T is not None:
            z = z + head.logit_scale * x @ F.normalize(fused[1 + len(P):], dim=-1).T
        rows.append(z)
    return torch.cat(rows)


@pytest.mark.parametrize("context", ["isolated", "batch"])
@pytest.mark.parametrize("text", [True, False])
def test_fast_scores_equal_literal_attention(context, text):
    head = _head(context, text)
    X = torch.randn(7, D, dtype=torch.double)
    with torch.no_grad():
        got = head.scores(X)
        want = _literal_scores(head, X, isolated=context == "isolated")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


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
    head.eval()
    copy = CandleHead.from_config(head.get_config(), head.state_dict())
    X = torch.randn(4, 16)
    torch.testing.assert_close(copy.scores(X), head.scores(X), rtol=0, atol=0)


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
