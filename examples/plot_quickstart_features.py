"""
Candle on CLIP features: long tail, new classes, and choosing the loss margin
=============================================================================

``CandleClassifier`` works on any CLIP image features. Here they are synthetic
(``make_clip_like_features``): 50 base classes with a long-tailed training set and 50 new
classes known only by their text features.
"""

# %%
import numpy as np
from sklearn.model_selection import GridSearchCV

from candle_sklearn import CandleClassifier
from candle_sklearn.datasets import make_clip_like_features
from candle_sklearn.metrics import base_new_accuracy, make_base_new_scorer

data = make_clip_like_features(n_base=50, n_new=50, dim=512, random_state=0)
print("training images per base class:", np.bincount(data.y_train)[:50])

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
# Grid-search the loss margin ``tau``. Cross-validation splits the training images (two
# folds: the rarest base classes have two images); the new classes stay new in every fold.
search = GridSearchCV(
    CandleClassifier(classes=data.classes, text_features=data.text_features,
                     new_class_bias=0.0, random_state=0),
    {"tau": [0.5, 1.0, 2.0]}, scoring=make_base_new_scorer("base"), cv=2)
search.fit(data.X_train, data.y_train)
print("best tau:", search.best_params_["tau"])
