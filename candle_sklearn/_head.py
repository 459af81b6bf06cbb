"""The Candle head on frozen features: projections, virtual prototypes, cross-modal
attention and the three logits. Torch only.

Class order inside the head is base classes first, then new classes. Class tokens are
the C prototype tokens followed, when there is text, by the C text tokens (M = C or 2C).
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

CONTEXTS = ("isolated", "batch")
# Class-class attention scores are materialised in blocks of query rows of at most this
# many bytes (the class tokens' own attention goes through PyTorch's flash kernels).
CLASS_BLOCK_BYTES = 256 * 2**20
# PyTorch's fused CPU attention kernel, which also returns each query's log-sum-exp over
# the keys; None where this torch build lacks it (the unfused path then runs).
_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _cosine(a, b):
    """Cosine similarity of every row of ``a`` with every row of ``b``."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).transpose(-1, -2)


def n_heads_for(dim, num_heads):
    """Largest head count not above ``num_heads`` that divides ``dim``."""
    return max(h for h in range(1, num_heads + 1) if dim % h == 0)


class ClassContext(NamedTuple):
    """The fused class tokens and what image tokens need to attend to them."""

    fused: torch.Tensor  # (M, D) class tokens after fusion among themselves
    keys: torch.Tensor  # (H, M, dh)
    values: torch.Tensor  # (H, M, dh)
    queries: torch.Tensor  # (H, M, dh)
    # batch-of-one inference only (see CrossModalFusion.with_closed_form)
    lse: torch.Tensor | None = None  # (H, M, 1) log-sum-exp of class-class scores
    head_out: torch.Tensor | None = None  # (H, M, D) G: per-head class outputs, out-projected
    cross: torch.Tensor | None = None  # (H, H, M, dh) W_h^T G_h'm
    fused_head_out: torch.Tensor | None = None  # (H, M) <F_m, G_hm>
    head_out_gram: torch.Tensor | None = None  # (M, H, H) <G_hm, G_h'm>
    # isolated inference only: s * (gamma * n(P~) + n(T~)), so that z^vt + z^vv of a fused
    # image u is one product s * n(u) @ class_matrix^T
    class_matrix: torch.Tensor | None = None  # (C, D)
    # zero-shot CLIP's scores of a raw image x are s * n(x) @ zero_shot_matrix^T
    zero_shot_matrix: torch.Tensor | None = None  # (C, D) n(t), the given text


def _fused_cpu(q):
    """Whether inference attention of queries ``q`` takes the fused CPU kernel (not where
    autograd records: the kernel's log-sum-exp output carries no gradient)."""
    return (_CPU_FLASH is not None and q.device.type == "cpu" and q.dtype == torch.float32
            and not torch.is_grad_enabled())


class CrossModalFusion(nn.Module):
    """One layer ``LN(S) + alpha * Attn(LN(S))`` with multi-head self-attention.

    The parameters live in a standard ``nn.MultiheadAttention`` so that a literal
    forward pass is available for checking the fast paths below.
    """

    def __init__(self, dim, num_heads=8, dropout=0.1, alpha=0.1):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, n_heads_for(dim, num_heads),
                                          dropout=dropout, batch_first=True)
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    @property
    def n_heads(self):
        return self.attn.num_heads

    def _qkv(self, normed):
        """Project normed tokens (N, D) to per-head queries, keys, values (H, N, dh)."""
        qkv = F.linear(normed, self.attn.in_proj_weight, self.attn.in_proj_bias)
        n, h = normed.shape[0], self.n_heads
        return qkv.view(n, 3, h, -1).permute(1, 2, 0, 3).unbind(0)

    def _merge(self, out):
        """Merge heads (H, N, dh) -> (N, D) and apply the output projection."""
        out = out.transpose(0, 1).reshape(out.shape[1], -1)
        return self.attn.out_proj(out)

    def _dropout_p(self):
        return self.attn.dropout if self.training else 0.0

    def fuse_class_tokens(self, tokens):
        """Class tokens attend to class tokens only; computed once per step or predict."""
        normed = self.norm(tokens)
        q, k, v = self._qkv(normed)
        # 4-D (batch of one): CUDA's flash and memory-efficient kernels take nothing
        # else and would fall back to materialising the (H, M, M) scores
        out = F.scaled_dot_product_attention(q[None], k[None], v[None],
                                             dropout_p=self._dropout_p())[0]
        return ClassContext(normed + self.alpha * self._merge(out), k, v, q)

    def fuse_classes_and_images(self, class_tokens, images):
        """:meth:`fuse_class_tokens` then :meth:`fuse_images` in one pass (training).

        Each projection multiplies all tokens at once, so backward computes one weight
        gradient per projection instead of two plus their sum: at small batches these
        D x D (in-projection 3D x D) products, not the attention, are the step's cost.
        Returns the fused class tokens (M, D) and images (n, D).
        """
        m = class_tokens.shape[0]
        normed = self.norm(torch.cat([class_tokens, images]))
        q, k, v = self._qkv(normed)
        cls = F.scaled_dot_product_attention(q[None, :, :m], k[None, :, :m], v[None, :, :m],
                                             dropout_p=self._dropout_p())[0]
        ctx = ClassContext(None, k[:, :m], v[:, :m], q[:, :m])
        img = self._image_attention(q[:, m:], k[:, m:], v[:, m:], ctx)
        fused = normed + self.alpha * self._merge(torch.cat([cls, img], dim=1))
        return fused[:m], fused[m:]

    def fuse_all(self, tokens):
        """Every token attends to every token (reference training)."""
        return self.fuse_class_tokens(tokens).fused

    def _image_attention(self, q, k, v, ctx):
        """Each image query attends to itself and to the class tokens (H, n, dh)."""
        scale = q.shape[-1] ** -0.5
        if not self.training and _fused_cpu(q):
            # the class part through the fused kernel (no (H, n, M) scores in memory, 3x
            # faster in bulk on CPU), then the image's own key merged in by its share of
            # the softmax, sigmoid(s_self - logsumexp over the class keys)
            out, lse = _CPU_FLASH(q[None], ctx.keys[None], ctx.values[None], scale=scale)
            out, lse = out[0], lse[0].unsqueeze(-1)
            own = torch.sigmoid((q * k).sum(-1, keepdim=True) * scale - lse)
            return out + own * (v - out)
        s_self = (q * k).sum(-1, keepdim=True) * scale
        s_cls = q @ ctx.keys.transpose(-1, -2) * scale
        p = torch.softmax(torch.cat([s_self, s_cls], dim=-1), dim=-1)
        p = F.dropout(p, self._dropout_p(), self.training)
        return p[..., :1] * v + p[..., 1:] @ ctx.values

    def fuse_images(self, tokens, ctx):
        """Fuse image tokens (n, D) against a fixed class context, per image."""
        return self._fuse_images(tokens, ctx)[0]

    def _fuse_images(self, tokens, ctx):
        """The fused images and their per-head queries, keys and values."""
        normed = self.norm(tokens)
        q, k, v = self._qkv(normed)
        return normed + self.alpha * self._merge(self._image_attention(q, k, v, ctx)), q, k, v

    def with_closed_form(self, ctx):
        """Add to ``ctx`` the class-only terms of batch-of-one scoring; once per predict."""
        scale = ctx.queries.shape[-1] ** -0.5
        heads, m = ctx.queries.shape[:2]
        block = max(1, CLASS_BLOCK_BYTES // (4 * heads * m))  # (H, block, M) scores at most
        lse, class_out = [], []
        for start in range(0, m, block):
            s_cc = ctx.queries[:, start:start + block] @ ctx.keys.transpose(-1, -2) * scale
            lse.append(torch.logsumexp(s_cc, dim=-1, keepdim=True))
            class_out.append(torch.softmax(s_cc, dim=-1) @ ctx.values)  # (H, block, dh)
        lse, class_out = torch.cat(lse, dim=1), torch.cat(class_out, dim=1)
        w = self._head_slices(self.attn.out_proj.weight)  # (H, D, dh)
        head_out = class_out @ w.transpose(-1, -2)  # (H, M, D)
        return ctx._replace(
            lse=lse, head_out=head_out,
            cross=torch.einsum("hdk,gmd->hgmk", w, head_out),
            fused_head_out=torch.einsum("md,hmd->hm", ctx.fused, head_out),
            head_out_gram=torch.einsum("hmd,gmd->mhg", head_out, head_out))

    def batch_of_one_cosine(self, tokens, ctx):
        """Fuse each image as if it were alone in the sequence [x; class tokens].

        Returns the cosine (n, M) between each fused image and each class token as
        that image's presence changes it. Adding one key/value
        to class token m's context gives the image weight ``b_hm = sigmoid(s - lse)``
        (``lse``: log-sum-exp over the class keys) and scales the old output by
        ``1 - b_hm``; through the output projection the token becomes
        ``F_m + alpha * sum_h b_hm (g_h - G_hm)``, with ``g_h = W_h v_h`` the image's
        per-head value and ``G_hm = W_h a_hm`` the class output. Its dot product with
        the image and its norm expand into products with class-only terms computed
        once per predict, so no per-image class token is ever built: the cost per
        image is O(H * M * D) in matrix products.
        """
        if self.training:
            raise RuntimeError("batch_of_one_cosine is an inference path")
        if ctx.lse is None:
            ctx = self.with_closed_form(ctx)
        x, q, k, v = self._fuse_images(tokens, ctx)  # x: (n, D)
        scale = q.shape[-1] ** -0.5
        n_heads, n = q.shape[0], q.shape[1]
        # layout (H, n, M) throughout: the products below land there without copies
        b = torch.sigmoid(ctx.queries @ k.transpose(-1, -2) * scale - ctx.lse).transpose(1, 2)
        g = v @ self._head_slices(self.attn.out_proj.weight).transpose(-1, -2)  # (H, n, D)
        F_, G = ctx.fused, ctx.head_out
        # <x, token_m> = <x, F_m> + alpha sum_h b_hm (<x, g_h> - <x, G_hm>)
        x_g = (x.unsqueeze(0) * g).sum(-1, keepdim=True)  # (H, n, 1)
        dot = x @ F_.T + self.alpha * (b * (x_g - x @ G.transpose(-1, -2))).sum(0)
        # |token_m|^2 = |F_m|^2 + 2 alpha sum_h b_hm (<F_m, g_h> - <F_m, G_hm>)
        #             + alpha^2 sum_hh' b_hm b_h'm <g_h - G_hm, g_h' - G_h'm>
        linear = (b * (g @ F_.T - ctx.fused_head_out.unsqueeze(1))).sum(0)
        g_g = torch.einsum("hnd,gnd->nhg", g, g)  # <g_h, g_h'>, (n, H, H)
        quad = (b * torch.einsum("nhg,hnm->gnm", g_g, b)).sum(0)
        quad += (b * torch.einsum("mhg,hnm->gnm", ctx.head_out_gram, b)).sum(0)
        g_G = (v @ ctx.cross.reshape(n_heads, -1, v.shape[-1]).transpose(-1, -2)).view(
            n_heads, n, n_heads, -1)  # <g_h, G_h'm>, (H, n, H', M)
        quad -= 2 * (b * (g_G * b.transpose(0, 1).unsqueeze(0)).sum(2)).sum(0)
        norm2 = (F_ * F_).sum(-1) + 2 * self.alpha * linear + self.alpha ** 2 * quad
        # both norms floored as F.normalize floors them: a constant feature row fuses to
        # a zero vector (layer norm), whose cosine is 0 as in training, not 0/0
        x_norm = x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return dot / (x_norm * norm2.clamp_min(1e-24).sqrt())

    def _head_slices(self, weight):
        """Split an output-projection weight (D, D) into its per-head columns (H, D, dh)."""
        d = weight.shape[0]
        return weight.view(d, self.n_heads, d // self.n_heads).permute(1, 0, 2)


class CandleHead(nn.Module):
    """Candle's prototype head over frozen image features.

    Parameters
    ----------
    visual_prototypes : Tensor (C_b, D)
        Mean training feature of each base class (frozen).
    text_features : Tensor (C, D) or None
        One text feature per class, base classes first. ``None`` gives the
        visual-only head (no text tokens, logits z^vv only).
    n_new : int
        Number of new classes (no training images); they get virtual prototypes.
    virtual_init : {"text", "visual"}
        Start virtual prototypes from the new class's text feature, or from the
        mean visual prototype plus small Gaussian noise.
    context : {"isolated", "batch"}
        Attention context in training (see the method note); inference is per sample
        in both.
    tied_text : bool
        The new classes' text tokens read their virtual prototypes (detached), as in the
        reference code, where the virtual prototypes are a view of those text rows and
        training them moves the text tokens too. False: the text rows stay as given.
    projection : Tensor (D, D) or None
        Starting value of both projections W_v and W_t (None: the identity, as in the
        reference code).

    The buffer ``visual_gain`` (C_b,) multiplies each base class's visual logit in
    prediction (ones until :meth:`set_visual_gain`; see :func:`attenuation_gain`).
    """

    def __init__(self, visual_prototypes, text_features=None, n_new=0, *,
                 virtual_init="text", context="isolated", num_heads=8, dropout=0.1,
                 visual_scale=1.0, logit_scale=100.0, tied_text=False, projection=None):
        super().__init__()
        if context not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
        n_base, dim = visual_prototypes.shape
        if tied_text and (text_features is None or virtual_init != "text"):
            raise ValueError("tied_text needs text features and virtual_init='text' (the "
                             "reference ties only text-initialised virtual prototypes)")
        self.context = context
        self.tied_text = bool(tied_text)
        self.logit_scale = float(logit_scale)
        self.visual_scale = float(visual_scale)
        # the scale of z^vv in prediction (the estimator's visual_weight sets it)
        self.inference_visual_scale = float(visual_scale)
        self.register_buffer("visual_prototypes", visual_prototypes.float().clone())
        self.register_buffer("visual_gain", torch.ones(n_base))
        self.register_buffer("text_features", None if text_features is None
                             else text_features.float().clone())
        start = torch.eye(dim) if projection is None else projection.float()
        self.W_v = nn.Parameter(start.clone())
        self.W_t = nn.Parameter(start.clone()) if text_features is not None else None
        self.virtual_prototypes = nn.Parameter(
            self._init_virtual(n_new, virtual_init)) if n_new else None
        self.fusion = CrossModalFusion(dim, num_heads, dropout)

    def _init_virtual(self, n_new, how):
        if how == "text":
            if self.text_features is None:
                raise ValueError("virtual_init='text' needs text features")
            return self.text_features[-n_new:].clone()
        if how == "visual":
            mean = self.visual_prototypes.mean(0)
            noise = torch.randn(n_new, mean.shape[0]) / math.sqrt(mean.shape[0])
            return mean + 0.01 * mean.norm() * noise
        raise ValueError(f"virtual_init must be 'text' or 'visual', got {how!r}")

    def get_config(self):
        """JSON-serialisable arguments that rebuild a head of this shape; with
        ``state_dict()`` they restore it exactly (:meth:`from_config`)."""
        return {"n_base": self.visual_prototypes.shape[0], "n_new": self.n_classes
                - self.visual_prototypes.shape[0], "dim": self.visual_prototypes.shape[1],
                "has_text": self.has_text, "context": self.context,
                "num_heads": self.fusion.n_heads, "dropout": self.fusion.attn.dropout,
                "visual_scale": self.visual_scale, "logit_scale": self.logit_scale,
                "tied_text": self.tied_text,
                "inference_visual_scale": self.inference_visual_scale}

    @classmethod
    def from_config(cls, config, state_dict=None):
        """A head built from :meth:`get_config`, with ``state_dict`` loaded if given."""
        n_base, n_new, dim = config["n_base"], config["n_new"], config["dim"]
        text = torch.zeros(n_base + n_new, dim) if config["has_text"] else None
        head = cls(torch.zeros(n_base, dim), text, n_new, virtual_init="text" if text
                   is not None else "visual", context=config["context"],
                   num_heads=config["num_heads"], dropout=config["dropout"],
                   visual_scale=config["visual_scale"], logit_scale=config["logit_scale"],
                   tied_text=config.get("tied_text", False))
        head.set_inference_visual_scale(config.get("inference_visual_scale",
                                                   config["visual_scale"]))
        if state_dict is not None:
            # heads saved before visual_gain existed predicted without it: ones
            head.load_state_dict({"visual_gain": head.visual_gain, **state_dict})
        return head.eval()

    def train(self, mode=True):
        self.__dict__.pop("_scorers", None)  # parameters may change: drop fitted contexts
        return super().train(mode)

    def set_inference_visual_scale(self, scale):
        """Score ``z^vt + s * scale * cos(u, P~)`` in prediction, where training used
        ``visual_scale`` in place of ``scale``; drops the scorers made before."""
        self.__dict__.pop("_scorers", None)
        self.inference_visual_scale = float(scale)

    def set_visual_gain(self, gain):
        """Multiply base class c's visual logit by ``gain[c]`` in prediction; drops the
        scorers made before."""
        self.__dict__.pop("_scorers", None)
        self.visual_gain = torch.as_tensor(gain, dtype=torch.float32).to(self.visual_gain)

    def __setstate__(self, state):
        state.setdefault("inference_visual_scale", state.get("visual_scale", 1.0))
        super().__setstate__(state)
        if "visual_gain" not in self._buffers:  # pickled before it existed: no gain
            self.register_buffer("visual_gain", torch.ones(len(self.visual_prototypes)))

    def __getstate__(self):
        state = super().__getstate__()
        state = dict(state)  # a copy: never drop the live module's attributes
        state.pop("_scorers", None)  # recomputed after loading
        return state

    @torch.no_grad()
    def add_new_classes(self, text_features):
        """Append new classes after the last one, virtual prototypes from their text."""
        if not self.has_text:
            raise ValueError("a head without text features cannot take new classes")
        self.__dict__.pop("_scorers", None)
        text_features = text_features.to(self.text_features)
        self.text_features = torch.cat([self.text_features, text_features])
        old = self.virtual_prototypes
        self.virtual_prototypes = nn.Parameter(
            text_features.clone() if old is None else torch.cat([old, text_features]))

    @property
    def n_classes(self):
        n_new = 0 if self.virtual_prototypes is None else self.virtual_prototypes.shape[0]
        return self.visual_prototypes.shape[0] + n_new

    @property
    def has_text(self):
        return self.text_features is not None

    def _prototypes(self):
        """Visual prototypes then virtual ones (C, D), before projection."""
        if self.virtual_prototypes is None:
            return self.visual_prototypes
        return torch.cat([self.visual_prototypes, self.virtual_prototypes])

    def class_tokens(self):
        """Projected prototype tokens P (C, D) and text tokens T (C, D) or None."""
        return self._class_tokens(self._prototypes() @ self.W_v)

    def _class_tokens(self, P):
        """``P`` and the projected text tokens T (C, D) or None."""
        if not self.has_text:
            return P, None
        text = self.text_features
        if self.tied_text and self.virtual_prototypes is not None:
            n_base = self.visual_prototypes.shape[0]
            text = torch.cat([text[:n_base], self.virtual_prototypes.detach()])
        return P, text @ self.W_t

    def _class_sequence(self, P, T):
        return P if T is None else torch.cat([P, T])

    def _split_classes(self, fused):
        c = self.n_classes
        return fused[..., :c, :], (fused[..., c:, :] if self.has_text else None)

    def _fused_logits(self, rows, P_f, T_f):
        """z^vt and z^vv (z^vt is None without text)."""
        zvv = self.logit_scale * self.visual_scale * _cosine(rows, P_f)
        zvt = None if T_f is None else self.logit_scale * _cosine(rows, T_f)
        return zvt, zvv

    def training_logits(self, X):
        """Logits (z0, zvt, zvv) for the rows [X; P] of one training step.

        Row ``B + c`` is the prototype of class ``c``; absent logits are None.
        """
        # images and prototypes through W_v in one product (one weight gradient)
        rows = torch.cat([X, self._prototypes()]) @ self.W_v
        U, (P, T) = rows[:X.shape[0]], self._class_tokens(rows[X.shape[0]:])
        z0 = None if T is None else self.logit_scale * _cosine(rows, T)
        if self.context == "isolated":
            classes, U_f = self.fusion.fuse_classes_and_images(self._class_sequence(P, T), U)
            P_f, T_f = self._split_classes(classes)
        else:
            fused = self.fusion.fuse_all(torch.cat([U, self._class_sequence(P, T)]))
            U_f = fused[: U.shape[0]]
            P_f, T_f = self._split_classes(fused[U.shape[0]:])
        return (z0, *self._fused_logits(torch.cat([U_f, P_f]), P_f, T_f))

    def class_context(self):
        """Fuse the class tokens once, for inference over any number of images."""
        P, T = self.class_tokens()
        ctx = self.fusion.fuse_class_tokens(self._class_sequence(P, T))
        if self.has_text:
            ctx = ctx._replace(zero_shot_matrix=F.normalize(self.text_features, dim=-1))
        if self.context == "batch":
            return self.fusion.with_closed_form(ctx)
        P_f, T_f = self._split_classes(ctx.fused)
        matrix = self._visual_weights()[:, None] * F.normalize(P_f, dim=-1)
        if T_f is not None:
            matrix = matrix + F.normalize(T_f, dim=-1)
        return ctx._replace(class_matrix=self.logit_scale * matrix)

    def scores(self, X, ctx=None):
        """Inference scores z^vt + z^vv (n, C); each row depends on its image only.

        In ``isolated`` context an image attends to itself and the class tokens; in
        ``batch`` context each image is scored as the sequence [x; P; T] (batch of
        one), computed in closed form.
        """
        ctx = self.class_context() if ctx is None else ctx
        U = X @ self.W_v
        if self.context == "isolated":
            U_f = self.fusion.fuse_images(U, ctx)
            return F.normalize(U_f, dim=-1) @ ctx.class_matrix.T
        else:
            cosine = self.fusion.batch_of_one_cosine(U, ctx)
            c = self.n_classes
            zvv = self.logit_scale * self._visual_weights() * cosine[:, :c]
            zvt = self.logit_scale * cosine[:, c:] if self.has_text else None
        return zvv if zvt is None else zvt + zvv

    def _visual_weights(self):
        """Each class's weight of z^vv in prediction (C,): the inference scale, times
        the base classes' gains (new classes have none)."""
        n_new = self.n_classes - len(self.visual_gain)
        return self.inference_visual_scale * F.pad(self.visual_gain, (0, n_new), value=1.0)

    def zero_shot_scores(self, X, ctx):
        """Zero-shot CLIP's scores (n, C) of raw features: s * cos(x, t_c) with the text
        as given (not the learned text tokens)."""
        return self.logit_scale * F.normalize(X, dim=-1) @ ctx.zero_shot_matrix.T

    def flops_per_image(self):
        """Floating-point operations that scoring one image costs, roughly."""
        dim, heads = self.visual_prototypes.shape[1], self.fusion.n_heads
        m = self.n_classes * (2 if self.has_text else 1)
        # projections (W_v, in, out: 5 D^2), attention to M class tokens, one product
        # with the C rows of the class matrix
        isolated = 2 * (5 * dim * dim + (2 * m + self.n_classes) * dim)
        if self.context == "isolated":
            return isolated
        return isolated + 2 * (3 * heads * m * dim + 2 * heads * heads * m * dim // heads)

    def elements_per_image(self):
        """Tensor elements that scoring one image holds at its peak (for chunking)."""
        dim, heads = self.visual_prototypes.shape[1], self.fusion.n_heads
        m = self.n_classes * (2 if self.has_text else 1)
        # each image's attention scores over itself and the M class tokens: (H, M + 1),
        # a few times over (scores, softmax), plus its own D-sized activations
        isolated = 3 * heads * (m + 1) + 8 * dim
        if self.context == "isolated":
            return isolated
        # batch of one adds a few (H, H, M) tensors of pairwise head terms
        return isolated + 4 * heads ** 2 * m
