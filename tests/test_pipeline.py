"""CandlePipeline and make_candle_pipeline: CLIP embeddings and the classifier as one
estimator, whose classifier encodes class names with the pipeline's own CLIP."""

import io
import json

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from candle_sklearn import ClipEmbedder, _clip, make_candle_pipeline
from candle_sklearn._cache import MEMORY
from candle_sklearn.classifier import prompts_text_features

from . import conftest
from .conftest import ASSETS, TINY

pytestmark = pytest.mark.usefixtures("fresh_embedding_cache")


# ------------------------------------------------------------------- pipeline
def test_pipeline_with_new_class_by_name_and_pickle(image_dir):
    from candle_sklearn import make_candle_pipeline
    paths, labels = image_dir
    train = labels != "yellow"  # yellow: known by name only
    pipe = make_candle_pipeline(TINY, conftest.TINY_WEIGHTS, embedder_params={"device": "cpu"},
                                classes=["red", "green", "blue", "yellow"], max_epochs=3,
                                device="cpu", random_state=0)
    pipe.fit(np.array(paths)[train], labels[train])
    candle = pipe.named_steps["candle"]
    assert candle.new_classes_.tolist() == ["yellow"]
    assert candle.classes_.tolist() == ["blue", "green", "red", "yellow"]
    proba = pipe.predict_proba(paths)
    assert proba.shape == (len(paths), 4)
    buf = io.BytesIO()
    joblib.dump(pipe, buf)
    assert buf.tell() < 200_000  # the head and text features, no CLIP weights
    buf.seek(0)
    _clip.clear_cache()
    MEMORY.clear()
    loaded = joblib.load(buf)
    np.testing.assert_allclose(loaded.predict_proba(paths), proba, atol=1e-6)
    np.testing.assert_array_equal(loaded.predict(paths), pipe.predict(paths))


def test_add_classes_on_a_fitted_pipeline(image_dir):
    """A fitted pipeline had no add_classes: the names go through the pipeline's own CLIP,
    also after a clone-and-fit (as a grid search makes it) or a pickle."""
    paths, labels = image_dir
    pipe = make_candle_pipeline(TINY, conftest.TINY_WEIGHTS, embedder_params={"device": "cpu"},
                                max_epochs=3, device="cpu", random_state=0)
    pipe = joblib.load(_pickled(clone(pipe).fit(paths, labels)))
    assert pipe.add_classes(["purple"]) is pipe
    candle = pipe.named_steps["candle"]
    assert candle.classes_.tolist() == ["blue", "green", "purple", "red", "yellow"]
    want = prompts_text_features(pipe.named_steps["clip"], ["purple"], None)[0]
    got = candle.text_features_[candle.classes_.tolist().index("purple")]
    np.testing.assert_allclose(got / np.linalg.norm(got), want / np.linalg.norm(want),
                               atol=1e-6)
    assert pipe.predict_proba(paths).shape == (len(paths), 5)


def _pickled(obj):
    buf = io.BytesIO()
    joblib.dump(obj, buf)
    buf.seek(0)
    return buf


# ===================================================== silent garbage, item 8
def test_grid_over_clip_model_name_keeps_text_and_images_in_step(image_dir, tmp_path):
    import open_clip
    other = tmp_path / "candle-test-tiny-b.json"  # same embedding size, other architecture
    cfg = json.loads((ASSETS / f"{TINY}.json").read_text())
    cfg["vision_cfg"]["layers"] = 2
    other.write_text(json.dumps(cfg))
    open_clip.add_model_config(other)
    paths, labels = image_dir
    pipe = make_candle_pipeline(TINY, None, embedder_params={"device": "cpu"}, max_epochs=2,
                                device="cpu", random_state=0)
    for name in (TINY, "candle-test-tiny-b"):
        fitted = clone(pipe).set_params(clip__model_name=name).fit(paths, labels)
        clip, candle = fitted.named_steps["clip"], fitted.named_steps["candle"]
        assert candle.encoder is clip
        want = prompts_text_features(clip, candle.class_names_, ("a photo of a {}.",))
        np.testing.assert_allclose(candle.text_features_, want, atol=1e-6)
    search = GridSearchCV(pipe, {"clip__model_name": [TINY, "candle-test-tiny-b"]}, cv=2,
                          error_score="raise").fit(paths, labels)
    best = search.best_estimator_
    assert best.named_steps["candle"].encoder is best.named_steps["clip"]
    # A step replaced wholesale is picked up at fit.
    replaced = clone(pipe).set_params(clip=ClipEmbedder("candle-test-tiny-b", None,
                                                        device="cpu"))
    replaced.fit(paths, labels)
    assert replaced.named_steps["candle"].encoder is replaced.named_steps["clip"]
