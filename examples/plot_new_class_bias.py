"""
Joint prediction: the ``new_class_bias`` curve
==============================================

A deployed model predicts over base and new classes at once. New-class scores come from one
virtual prototype each and sit below base-class scores, so without help the new classes are
rarely predicted. ``CandleClassifier`` adds ``new_class_bias_`` to their scores:
``new_class_bias="auto"`` (the default) estimates it at ``fit`` without any new-class
image, by holding base classes out as pretend-new classes. With a few labelled images of
new classes, :func:`~candle_sklearn.metrics.best_new_class_bias` chooses it exactly.

This example draws the joint harmonic mean of base and new accuracy against the bias and
marks both choices. The features are synthetic (``make_clip_like_features``).
"""

# %%
import matplotlib.pyplot as plt
import numpy as np

from candle_sklearn import CandleClassifier
from candle_sklearn.datasets import make_clip_like_features
from candle_sklearn.metrics import base_new_accuracy, best_new_class_bias

data = make_clip_like_features(n_base=30, n_new=20, dim=128, imbalance_ratio=0.01,
                               n_test_per_class=20, random_state=0)
clf = CandleClassifier(classes=data.classes, text_features=data.text_features, random_state=0)
clf.fit(data.X_train, data.y_train)
print("automatic bias:", round(clf.new_class_bias_, 2))

# %%
# Half of the test images serve as the labelled validation images of base and new classes
# on which ``best_new_class_bias`` searches; the other half measures.
rng = np.random.default_rng(0)
is_val = rng.random(len(data.y_test)) < 0.5
X_val, y_val = data.X_test[is_val], data.y_test[is_val]
X_eval, y_eval = data.X_test[~is_val], data.y_test[~is_val]
chosen = best_new_class_bias(clf, X_val, y_val)
print("bias chosen on labelled images:", round(chosen, 2))

# %%
# The curve: the head's own scores (``calibrated=False``) plus a bias on the new classes'
# columns, scored in the joint protocol (every image among all classes).
scores = clf.decision_function(X_eval, calibrated=False)
is_new = np.isin(clf.classes_, clf.new_classes_)
biases = np.linspace(0, 2 * max(chosen, clf.new_class_bias_, 1.0), 121)
curve = {"base": [], "new": [], "hm": []}
for bias in biases:
    joint = base_new_accuracy(y_eval, scores + bias * is_new, clf.classes_, clf.new_classes_,
                              protocol="joint")
    for metric in curve:
        curve[metric].append(joint[metric])
for name, bias in (("no bias", 0.0), ("auto", clf.new_class_bias_), ("labelled", chosen)):
    joint = base_new_accuracy(y_eval, scores + bias * is_new, clf.classes_, clf.new_classes_,
                              protocol="joint")
    print(f"{name:>8}: bias {bias:5.2f}, joint HM {joint['hm']:.3f}")

# %%
fig, ax = plt.subplots(figsize=(8, 4))
ax.plot(biases, curve["base"], color="tab:blue", lw=1, label="base accuracy")
ax.plot(biases, curve["new"], color="tab:orange", lw=1, label="new accuracy")
ax.plot(biases, curve["hm"], color="black", lw=2, label="joint harmonic mean")
ax.axvline(clf.new_class_bias_, color="tab:green", ls="--",
           label=f'new_class_bias="auto" ({clf.new_class_bias_:.1f})')
ax.axvline(chosen, color="tab:red", ls=":", label=f"best_new_class_bias ({chosen:.1f})")
ax.set(xlabel="bias added to the new classes' scores", ylabel="accuracy (joint protocol)",
       ylim=(0, 1))
ax.legend(loc="center left", fontsize=8)
fig.tight_layout()
plt.show()
