"""
Candle on CLIP features: long tail and new classes
==================================================

``CandleClassifier`` works on any CLIP image features. Here they are synthetic
(``make_clip_like_features``): 30 base classes with a long-tailed training set and 20 new
classes known only by their text features. The long-tail plot compares it with zero-shot
CLIP class by class.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np

from candle_sklearn import CandleClassifier
from candle_sklearn.baselines import ZeroShotClassifier
from candle_sklearn.datasets import make_clip_like_features
from candle_sklearn.metrics import LongTailDisplay, base_new_accuracy

data = make_clip_like_features(n_base=30, n_new=20, dim=128, imbalance_ratio=0.01,
                               n_test_per_class=20, random_state=0)
print("training images per base class:", np.bincount(data.y_train)[:30])

# %%
# Fit with every class named up front: ``classes`` lists all labels, ``text_features``
# gives one text embedding per class (in the order of ``classes``).
clf = CandleClassifier(classes=data.classes, text_features=data.text_features, random_state=0)
clf.fit(data.X_train, data.y_train)
print("new classes:", clf.new_classes_[:5], "...", "bias on their scores:",
      round(clf.new_class_bias_, 2))

# %%
# Two ways to score base and new classes: the paper's reference protocol (new-class images
# among new classes only, on the head's own scores) and the joint one (every image among all
# classes, as the deployed model predicts).
ref = base_new_accuracy(data.y_test, clf.predict_proba(data.X_test, calibrated=False),
                        clf.classes_, clf.new_classes_)
joint = base_new_accuracy(data.y_test, clf.predict_proba(data.X_test), clf.classes_,
                          clf.new_classes_, protocol="joint")
print("reference:", {k: round(v, 3) for k, v in ref.items()})
print("joint:    ", {k: round(v, 3) for k, v in joint.items()})

# %%
# Per-class accuracy (joint prediction) against the number of training images, with
# zero-shot CLIP (the cosine of image and text features) for comparison. Candle is well
# ahead on the common base classes and on the new classes; its accuracy falls along the
# tail, to zero-shot's level and below on base classes with one or two training images.
zero_shot = ZeroShotClassifier(data.classes, text_features=data.text_features)
zero_shot.fit(data.X_train)
display = LongTailDisplay.from_estimator(clf, data.X_test, data.y_test, baseline=zero_shot,
                                         name="Candle", baseline_name="zero-shot CLIP")
display.ax_.set_title("Per-class accuracy on synthetic CLIP-like features")
plt.show()

# %%
# The loss margin ``tau`` trades base against new accuracy: see
# :ref:`sphx_glr_auto_examples_plot_tau_tradeoff.py` to choose it by cross-validation.
