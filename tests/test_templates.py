import numpy as np
import pytest
import torch
from open_clip import zero_shot_metadata as ocm

from candle_sklearn import CandleClassifier, ClipEmbedder, templates
from candle_sklearn.classifier import prompts_text_features
from candle_sklearn.templates import (PRESETS, as_format_string, encode_class_names, preset,
                                      prompts, resolve_templates, text_features_from_open_clip)

from . import conftest
from .conftest import TINY


class WordEncoder:
    """Deterministic toy text encoder: a bag of hashed words, 16 dimensions."""

    def __init__(self):
        self.seen = []

    def encode_text(self, texts):
        self.seen.extend(texts)
        out = np.zeros((len(texts), 16))
        for i, t in enumerate(texts):
            for w in t.replace(",", " ").replace(".", " ").split():
                out[i, sum(map(ord, w)) % 16] += 1.0
        return out + 0.01


def test_format_strings_callables_and_mixtures_fill_alike():
    assert prompts("a photo of a {}.", "golden_retriever") == ["a photo of a golden retriever."]
    assert prompts([lambda c: f"a {c}!", "itap of a {0}."], "cat") == ["a cat!", "itap of a cat."]
    assert prompts(lambda c: f"the {c}", "dog") == ["the dog"]
    assert prompts(None, "dog") == ["a photo of a dog."]


def test_open_clip_template_lists_are_accepted():
    assert len(resolve_templates(ocm.OPENAI_IMAGENET_TEMPLATES)) == 80
    fills = resolve_templates(ocm.SIMPLE_IMAGENET_TEMPLATES)
    assert [f("cat") for f in fills] == [t("cat") for t in ocm.SIMPLE_IMAGENET_TEMPLATES]


def test_presets():
    assert preset("openai_imagenet") == tuple(as_format_string(t)
                                              for t in ocm.OPENAI_IMAGENET_TEMPLATES)
    assert preset("openai_imagenet")[0] == "a bad photo of a {}."
    assert len(preset("simple_imagenet")) == len(ocm.SIMPLE_IMAGENET_TEMPLATES)
    assert preset("oxford_pets") == ("a photo of a {}, a type of pet.",)
    assert prompts("dtd", "banded") == ["banded texture."]
    assert {"openai_imagenet", "simple_imagenet", "eurosat", "imagenet"} <= set(PRESETS)
    for name in PRESETS:
        assert all("{}" in t for t in preset(name))


@pytest.mark.parametrize("bad, error, match", [
    ("not_a_preset", ValueError, "unknown template preset 'not_a_preset'"),
    ("a photo of a {name}.", ValueError, r"exactly one '\{\}' field"),
    ("{} and {}", ValueError, r"found 2 field"),
    ([], ValueError, "templates is empty"),
    ([3], TypeError, "format string or a callable, got int"),
])
def test_bad_templates_name_the_problem(bad, error, match):
    with pytest.raises(error, match=match):
        resolve_templates(bad)


def test_callable_returning_a_non_string_is_named():
    with pytest.raises(TypeError, match="returned int"):
        prompts([lambda c: 3], "cat")


def test_as_format_string():
    assert [as_format_string(t) for t in ocm.SIMPLE_IMAGENET_TEMPLATES] == [
        "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
        "a {} in a video game.", "art of the {}.", "a photo of the small {}."]
    for bad in (lambda c: c.upper(), lambda c: f"{c} and {c}", lambda c: "constant"):
        with pytest.raises(ValueError, match="cannot be written as a format string"):
            as_format_string(bad)


def test_encode_class_names_averages_normalised_templates():
    enc = WordEncoder()
    got = encode_class_names(enc, ["red_fox", "cat"], ["a {}", lambda c: f"the {c}."])
    assert enc.seen == ["a red fox", "a cat", "the red fox.", "the cat."]
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    e = unit(WordEncoder().encode_text(enc.seen))
    np.testing.assert_allclose(got, unit(e[:2] + e[2:]), rtol=1e-6)
    # the classifier's prompt function is the same computation
    np.testing.assert_array_equal(prompts_text_features(WordEncoder(), ["red_fox", "cat"],
                                                        ["a {}", lambda c: f"the {c}."]), got)


def test_candle_classifier_takes_open_clip_templates():
    enc = WordEncoder()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 16)).astype(np.float32)
    y = np.array(["cat", "dog"] * 20)
    clf = CandleClassifier(classes=["cat", "dog", "fox"], encoder=enc,
                           templates=ocm.SIMPLE_IMAGENET_TEMPLATES, new_class_bias=0.0,
                           **conftest.FAST)
    clf.fit(X, y)
    assert len(enc.seen) == 3 * len(ocm.SIMPLE_IMAGENET_TEMPLATES)
    np.testing.assert_allclose(
        clf.text_features_,
        encode_class_names(WordEncoder(), ["cat", "dog", "fox"], "simple_imagenet"), rtol=1e-6)


def test_open_clip_zero_shot_classifier_matches_and_is_transposed():
    from open_clip import build_zero_shot_classifier

    emb = ClipEmbedder(TINY, pretrained=conftest.TINY_WEIGHTS, device="cpu")
    names = ["red circle", "blue square", "green star"]
    loaded = emb._loaded()
    weights = build_zero_shot_classifier(loaded.model, loaded.tokenizer, names,
                                         ocm.SIMPLE_IMAGENET_TEMPLATES)
    assert tuple(weights.shape) == (emb.fit([np.zeros((8, 8, 3), np.uint8)]).embed_dim_, 3)
    text = text_features_from_open_clip(weights, n_classes=3)
    assert text.shape == (3, weights.shape[0]) and text.dtype == np.float32
    np.testing.assert_allclose(text, encode_class_names(emb, names, "simple_imagenet"),
                               atol=1e-5)


def test_transposition_rule_never_guesses():
    square = torch.arange(9.0).reshape(3, 3)
    np.testing.assert_array_equal(text_features_from_open_clip(square, 3), square.numpy().T)
    with pytest.raises(ValueError, match="already transposed"):
        text_features_from_open_clip(np.zeros((5, 32)), n_classes=5)
    with pytest.raises(ValueError, match=r"expected \(embed_dim, 4\)"):
        text_features_from_open_clip(np.zeros((32, 5)), n_classes=4)
    with pytest.raises(ValueError, match="2-D"):
        text_features_from_open_clip(np.zeros(5), n_classes=5)


def test_zero_shot_classifier_takes_a_preset_name():
    from candle_sklearn.baselines import ZeroShotClassifier

    enc = WordEncoder()
    zs = ZeroShotClassifier(["banded", "dotted"], encoder=enc, templates="dtd")
    zs.fit(np.zeros((1, 16)))
    assert enc.seen == ["banded texture.", "dotted texture."]


def test_module_is_public():
    assert templates.DEFAULT_TEMPLATE == "a photo of a {}."


def test_an_encoder_that_returns_a_zero_vector_is_named(monkeypatch):
    class Zero:
        def encode_text(self, texts):
            out = np.ones((len(texts), 4))
            out[1] = 0
            return out

    with pytest.raises(ValueError, match=r"a zero vector for \['a photo of a b.'\]"):
        prompts_text_features(Zero(), ["a", "b"], "a photo of a {}.")
