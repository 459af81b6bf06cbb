"""Train the tiny open_clip model that ships with candle_sklearn ("candle-tiny").

    .venv/bin/python tools/train_tiny_clip.py [--steps 3600] [--out candle_sklearn/weights/candle-tiny]

A CLIP (ViT 32x32 patch 4, 4 layers; text transformer 2 layers; 64-dim embeddings) is
trained with a contrastive loss on captioned images of the generated image world
(candle_sklearn.datasets), on every composition except the held-out ones
(``world_new_classes()``): their words occur in training captions, their combinations
never do. Runs on a 2-core CPU in under 20 minutes. Writes ``open_clip_config.json``,
``open_clip_model.safetensors`` (fp16, token-embedding rows of unused words zeroed) and
``metrics.json`` (zero-shot accuracy) into ``--out``.
"""

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from candle_sklearn.datasets import make_world_images, world_classes, world_new_classes

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
CONFIG = {
    "model_cfg": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 32, "patch_size": 4, "width": 96, "layers": 4,
                       "head_width": 32, "mlp_ratio": 2.0},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2,
                     "layers": 2, "mlp_ratio": 2.0},
    },
    "preprocess_cfg": {"mean": list(MEAN), "std": list(STD), "interpolation": "bicubic",
                       "resize_mode": "shortest"},
}
TEMPLATES = ("a photo of a {p} {c} {s}.", "a {p} {c} {s}.", "a picture of a {c} {s} that is {p}.")


def captions(name):
    p, c, s = name.split(" ")
    return [t.format(p=p, c=c, s=s) for t in TEMPLATES]


def to_tensor(images):
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def build_model(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(CONFIG, indent=2))
    for stale in folder.glob("*.safetensors"):
        stale.unlink()
    name = f"local-dir:{folder}"
    return open_clip.create_model(name), open_clip.get_tokenizer(name)


def contrastive_loss(img, txt, labels, logit_scale):
    """CLIP's symmetric loss with every same-class pair as a positive."""
    logits = logit_scale.exp().clamp(max=100) * F.normalize(img, dim=-1) @ F.normalize(
        txt, dim=-1).T
    target = (labels[:, None] == labels[None, :]).float()
    target /= target.sum(1, keepdim=True)
    return 0.5 * (torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                  + torch.sum(-target * F.log_softmax(logits.T, 1), 1).mean())


@torch.no_grad()
def zero_shot(model, tokenizer, seed=123, per_class=20):
    """Accuracy of text prototypes ("a photo of a <name>.") on fresh images."""
    model.eval()
    names, new = world_classes(), set(world_new_classes())
    images, labels = make_world_images(names, per_class, random_state=seed)
    img = F.normalize(model.encode_image(to_tensor(images)), dim=-1)
    txt = F.normalize(model.encode_text(tokenizer([f"a photo of a {n}." for n in names])), dim=-1)
    scores = (img @ txt.T).numpy()
    y = np.array([names.index(n) for n in labels])
    is_new = np.array([n in new for n in names])
    row_new = is_new[y]
    new_cols, seen_cols = np.flatnonzero(is_new), np.flatnonzero(~is_new)
    acc = {
        "held_out_among_held_out": float((new_cols[scores[row_new][:, new_cols].argmax(1)]
                                          == y[row_new]).mean()),
        "seen_among_seen": float((seen_cols[scores[~row_new][:, seen_cols].argmax(1)]
                                  == y[~row_new]).mean()),
        "all_among_all": float((scores.argmax(1) == y).mean()),
        "chance_held_out": 1 / len(new_cols),
        "chance_all": 1 / len(names),
    }
    model.train()
    return acc


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3600)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--per-class", type=int, default=750)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("candle_sklearn/weights/candle-tiny"))
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    start = time.time()

    seen = [n for n in world_classes() if n not in set(world_new_classes())]
    images, labels = make_world_images(seen, args.per_class, random_state=args.seed)
    label_idx = torch.as_tensor(np.array([seen.index(n) for n in labels]))
    pool = to_tensor(images)
    print(f"{len(pool)} training images of {len(seen)} compositions rendered in "
          f"{time.time() - start:.0f} s", flush=True)

    model, tokenizer = build_model(args.out)
    model.train()
    tokens = tokenizer([c for n in seen for c in captions(n)]).view(len(seen), len(TEMPLATES), -1)
    used = torch.unique(tokens)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    gen = torch.Generator().manual_seed(args.seed)
    warmup = args.steps // 20
    for step in range(args.steps):
        lr = args.lr * min(1, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(len(pool), (args.batch_size,), generator=gen)
        lab = label_idx[idx]
        tpl = torch.randint(len(TEMPLATES), (args.batch_size,), generator=gen)
        x = pool[idx]
        x = torch.where(torch.rand(len(x), 1, 1, 1, generator=gen) < 0.5, x, x.flip(-1))
        loss = contrastive_loss(model.encode_image(x), model.encode_text(tokens[lab, tpl]),
                                lab, model.logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 250 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  lr {lr:.2e}  "
                  f"{time.time() - start:.0f} s", flush=True)

    with torch.no_grad():  # words never seen in captions keep no trained embedding
        keep = torch.zeros(model.token_embedding.weight.shape[0], dtype=torch.bool)
        keep[used] = True
        model.token_embedding.weight[~keep] = 0
    metrics = zero_shot(model, tokenizer)
    metrics.update(steps=args.steps, train_seconds=round(time.time() - start),
                   training_images=len(pool), seed=args.seed)
    print(json.dumps(metrics, indent=2))
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, args.out / "open_clip_model.safetensors")
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    size = (args.out / "open_clip_model.safetensors").stat().st_size / 2**20
    print(f"saved {args.out} ({size:.1f} MiB) in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
