"""Two remedies for the modality gap tried on Candle's head, not adopted (decision 0019):
virtual prototypes moved from the text into the image modality, and image features
centred on their training mean before the head.

    .venv/bin/python benchmarks/bench_modality_gap.py WORLD SEED [--gap-init] [--center]

Prints the reference-protocol and joint base / new / HM of the default CandleClassifier
with the variant patched in. ``--gap-init``: a new class's virtual prototype starts at
``p + s (t_c - t)``, the mean visual prototype plus its text's offset from the base texts'
mean, scaled by the ratio of the prototypes' and the texts' spreads. ``--center``: the
head sees ``x - mean(X_train)`` (zero-shot CLIP's blend still sees ``x``).
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from worlds import load_world  # noqa: E402


def patch_gap_init(head_cls):
    text_init = head_cls._init_virtual

    def init(self, n_new, how):
        if how != "text":
            return text_init(self, n_new, how)
        P, T = self.visual_prototypes, self.text_features
        base = T[:P.shape[0]]
        spread = (P - P.mean(0)).pow(2).sum(1).mean().sqrt()
        spread_t = (base - base.mean(0)).pow(2).sum(1).mean().sqrt()
        return P.mean(0) + spread / spread_t * (T[-n_new:] - base.mean(0))

    head_cls._init_virtual = init


def patch_center(head_cls, clf_module):
    init, scores, logits = head_cls.__init__, head_cls.scores, head_cls.training_logits
    fit_method, mean = clf_module.CandleClassifier._fit_method, {}

    def head_init(self, visual_prototypes, *args, **kwargs):
        init(self, visual_prototypes - mean["x"], *args, **kwargs)
        self.register_buffer("image_mean", mean["x"].clone())

    def fit(self, X, y_idx, counts, text, seed):
        scaled = clf_module._for_head(X, clf_module._feature_scale(X))
        mean["x"] = torch.as_tensor(scaled.mean(0))
        return fit_method(self, X, y_idx, counts, text, seed)

    head_cls.__init__ = head_init
    head_cls.scores = lambda self, X, ctx=None: scores(self, X - self.image_mean, ctx)
    head_cls.training_logits = lambda self, X: logits(self, X - self.image_mean)
    clf_module.CandleClassifier._fit_method = fit


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("world")
    parser.add_argument("seed", type=int)
    parser.add_argument("--gap-init", action="store_true")
    parser.add_argument("--center", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from candle_sklearn import CandleClassifier, _head
    from candle_sklearn import classifier as clf_module
    from candle_sklearn.metrics import base_new_accuracy

    if args.gap_init:
        patch_gap_init(_head.CandleHead)
    if args.center:
        patch_center(_head.CandleHead, clf_module)
    d = load_world(args.world, args.seed)
    clf = CandleClassifier(classes=d.classes, text_features=d.text_features, device="cpu",
                           random_state=args.seed).fit(d.X_train, d.y_train)
    for protocol, calibrated in (("reference", False), ("joint", True)):
        r = base_new_accuracy(d.y_test, clf.decision_function(d.X_test, calibrated=calibrated),
                              clf.classes_, d.new_classes, protocol=protocol)
        print(f"{args.world} seed {args.seed} {protocol}: base {r['base']:.3f} "
              f"new {r['new']:.3f} HM {r['hm']:.3f}")


if __name__ == "__main__":
    main()
