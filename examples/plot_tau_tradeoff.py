"""
Choosing the loss margin ``tau``: the base / new trade-off
==========================================================

``tau`` weighs the log class prior that the compensating logit-adjusted loss adds to the
logits in training: the larger it is, the more the loss compensates the long tail of the
base classes, at the expense of the new classes, which count as one-sample classes. No
value is best for both, so ``tau`` is chosen by what it trades off.

Ordinary folds never hold a new class. :class:`~candle_sklearn.model_selection.BaseNewSplit`
holds whole classes out of each training part, so that they become the fold's new classes,
known by name only; ``GridSearchCV`` then scores base accuracy, new accuracy and their
harmonic mean on each fold (reference protocol) and keeps the ``tau`` with the best mean.
The features are synthetic (``make_clip_like_features``).
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import GridSearchCV

from candle_sklearn import CandleClassifier
from candle_sklearn.datasets import make_clip_like_features
from candle_sklearn.metrics import base_new_accuracy, make_base_new_scorer
from candle_sklearn.model_selection import BaseNewSplit

# 30 base classes, from 100 training images down to 1 (imbalance 0.01), and 20 new classes
data = make_clip_like_features(n_base=30, n_new=20, dim=128, imbalance_ratio=0.01,
                               n_test_per_class=20, random_state=0)

# %%
# ``new_class_bias=0.0``: the reference protocol scores the head's own scores, and the
# automatic bias would refit the model at every fit for nothing.
taus = [0.0, 0.5, 1.0, 2.0, 4.0]
search = GridSearchCV(
    CandleClassifier(classes=data.classes, text_features=data.text_features,
                     new_class_bias=0.0, random_state=0),
    {"tau": taus},
    cv=BaseNewSplit(n_splits=2, new_size=0.25, random_state=0),
    scoring={metric: make_base_new_scorer(metric) for metric in ("base", "new", "hm")},
    refit="hm")
search.fit(data.X_train, data.y_train)
print("best tau:", search.best_params_["tau"])

# %%
# The same trade-off on the test images, where the new classes are the real ones.
test = {metric: [] for metric in ("base", "new", "hm")}
for tau in taus:
    clf = CandleClassifier(classes=data.classes, text_features=data.text_features, tau=tau,
                           new_class_bias=0.0, random_state=0).fit(data.X_train, data.y_train)
    scores = base_new_accuracy(data.y_test, clf.predict_proba(data.X_test, calibrated=False),
                               clf.classes_, clf.new_classes_)
    for metric in test:
        test[metric].append(scores[metric])
print({metric: np.round(values, 3).tolist() for metric, values in test.items()})

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
results = search.cv_results_
for metric, style in (("base", "o-"), ("new", "s-"), ("hm", "d-")):
    axes[0].errorbar(taus, results[f"mean_test_{metric}"], yerr=results[f"std_test_{metric}"],
                     fmt=style, capsize=3, label=metric)
    axes[1].plot(taus, test[metric], style, label=metric)
for ax, title in zip(axes, ("cross-validation (held-out base classes as new)",
                            "test images (the real new classes)")):
    ax.axvline(search.best_params_["tau"], color="grey", ls="--", lw=1)
    ax.set(xlabel="tau (loss margin)", ylabel="accuracy (reference protocol)", title=title)
    ax.title.set_fontsize(10)
    ax.legend()
fig.tight_layout()
plt.show()
