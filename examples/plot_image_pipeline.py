"""
From images to base and new classes with one pipeline
=====================================================

``make_candle_pipeline`` joins a ``ClipEmbedder`` and a ``CandleClassifier`` that share one
CLIP model. This example runs offline on the tiny CLIP that ships with the package
(``"candle-tiny"``, trained on a generated world of coloured, patterned shapes); with a real
CLIP, use ``make_candle_pipeline("ViT-B-16", "openai")`` or a local checkpoint file.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np

from candle_sklearn import make_candle_pipeline
from candle_sklearn.baselines import ZeroShotClassifier
from candle_sklearn.datasets import make_world_task
from candle_sklearn.metrics import LongTailDisplay, base_new_accuracy

# long-tailed images of 48 base compositions (50 down to 1 per class), names of all 72
data = make_world_task(0, max_per_class=50, n_test_per_class=10)
print(len(data.y_train), "training images;", "new classes:", data.new_classes[:3], "...")

# %%
# Labels are class names. Classes without training images are listed in ``classes``;
# the pipeline's embedder encodes their names ("a photo of a {name}.").
later = data.new_classes[:4]  # named only after fit, below
pipe = make_candle_pipeline("candle-tiny", "bundled",
                            classes=np.setdiff1d(data.classes, later), random_state=0)
pipe.fit(list(data.X_train), data.y_train)  # arrays, PIL images or file paths
pred = pipe.predict(list(data.X_test))
print("predicted:", pred[:5])

# %%
# A class nobody named at fit time can be added by name, without retraining: its
# name goes through the same text encoder and the fitted head.
candle = pipe.named_steps["candle"]
candle.add_classes(later)
print(len(candle.classes_), "classes now")

# %%
proba = pipe.predict_proba(list(data.X_test), calibrated=False)
print({k: round(v, 3) for k, v in base_new_accuracy(
    data.y_test, proba, pipe.classes_, data.new_classes).items()})

# %%
# The long-tail plot: per-class accuracy (joint prediction) against training images, with
# zero-shot CLIP on the same embeddings and class names for comparison. The pipeline's
# embedder has cached the test images' features, so the baseline embeds nothing again.
embedder = pipe.named_steps["clip"]
features = embedder.transform(list(data.X_test))  # from the cache
zero_shot = ZeroShotClassifier(candle.classes_, encoder=embedder).fit(features)
display = LongTailDisplay.from_estimator(pipe, list(data.X_test), data.y_test,
                                         baseline=zero_shot, X_baseline=features,
                                         name="Candle (pipeline)", baseline_name="zero-shot CLIP")
display.ax_.set_title("Per-class accuracy on the generated image world (tiny CLIP)")
plt.show()
