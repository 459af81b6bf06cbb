import copy
import json
import os
import pickle
import shutil
import warnings

import numpy as np
import pytest
import safetensors.numpy
import torch
from open_clip import zero_shot_metadata as ocm
from sklearn.base import clone

import candle_sklearn
from candle_sklearn import CandleClassifier, ClipEmbedder, _clip, io, make_candle_pipeline
from candle_sklearn.baselines import LinearProbeClassifier, ZeroShotClassifier
from candle_sklearn.io import InvalidModelFileError, WeightsMismatchError

from . import conftest
from ._fuzz import event, fuzz, given, st
from .conftest import FAST, TINY


@pytest.fixture(scope="module")
def fitted(small_data):
    """String labels and names, auto bias (calibration_ record), a few templates."""
    d = small_data
    classes = np.array([f"class_{c}" for c in d.classes])
    clf = CandleClassifier(classes=classes, text_features=d.text_features,
                           class_names=[f"thing {c}" for c in d.classes],
                           templates=ocm.SIMPLE_IMAGENET_TEMPLATES, calibration_repeats=1,
                           **FAST)
    return clf.fit(d.X_train, classes[d.y_train])


def _roundtrip(est, tmp_path, **load_params):
    path = tmp_path / "model.safetensors"
    candle_sklearn.save(est, path)
    return candle_sklearn.load(path, **load_params), path


def _assert_same_fitted_state(a, b):
    for attr in ("classes_", "class_counts_", "base_classes_", "new_classes_", "class_names_",
                 "text_features_", "head_order_", "history_", "n_features_in_"):
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr), err_msg=attr)
    assert a.new_class_bias_ == b.new_class_bias_
    assert a.classes_.dtype == b.classes_.dtype
    for k, v in a.head_.state_dict().items():
        assert torch.equal(v, b.head_.state_dict()[k]), k


def test_classifier_roundtrip_predicts_identically(fitted, small_data, tmp_path):
    loaded, _ = _roundtrip(fitted, tmp_path)
    X = small_data.X_test
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))
    np.testing.assert_array_equal(loaded.decision_function(X, calibrated=False),
                                  fitted.decision_function(X, calibrated=False))
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))
    _assert_same_fitted_state(fitted, loaded)
    assert loaded.calibration_["n_held_out_classes"] == fitted.calibration_["n_held_out_classes"]
    np.testing.assert_array_equal(loaded.calibration_["held_out"][0],
                                  fitted.calibration_["held_out"][0])
    assert loaded.calibration_["by_zero_shot_weight"] == fitted.calibration_[
        "by_zero_shot_weight"]
    assert loaded.zero_shot_weight_ == fitted.zero_shot_weight_
    assert loaded.temperature_ == fitted.temperature_
    # open_clip's template lambdas are stored as the format strings they equal
    assert loaded.templates == tuple(t("{}") for t in ocm.SIMPLE_IMAGENET_TEMPLATES)
    assert loaded.get_params()["tau"] == fitted.tau
    # and the loaded model is an ordinary estimator: pickles, clones, refits, takes classes
    again = pickle.loads(pickle.dumps(loaded))
    np.testing.assert_array_equal(again.predict(X), fitted.predict(X))
    loaded.add_classes(["class_extra"], text_features=small_data.text_features[:1])
    assert "class_extra" in loaded.classes_
    clone(loaded).set_params(new_class_bias=0.0).fit(small_data.X_train[:40],
                                                       fitted.classes_[small_data.y_train[:40]])


@pytest.mark.parametrize("params", [dict(context="batch"), dict(visual_only=True)])
def test_classifier_variants_roundtrip(small_data, tmp_path, params):
    d = small_data
    if params.pop("visual_only", False):  # no text: visual-only head, no new classes
        keep = np.isin(d.classes, d.base_classes)
        clf = CandleClassifier(**FAST).fit(d.X_train, d.y_train)
        X = d.X_test[np.isin(d.y_test, d.classes[keep])]
    else:
        clf = CandleClassifier(classes=d.classes, text_features=d.text_features,
                               new_class_bias=1.5, **FAST, **params).fit(d.X_train, d.y_train)
        X = d.X_test
    loaded, _ = _roundtrip(clf, tmp_path)
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_feature_names_and_output_config_roundtrip(small_data, tmp_path):
    pd = pytest.importorskip("pandas")
    d = small_data
    X = pd.DataFrame(d.X_train, columns=[f"f{i}" for i in range(d.X_train.shape[1])])
    clf = CandleClassifier(**FAST).fit(X, d.y_train)
    loaded, _ = _roundtrip(clf, tmp_path)
    np.testing.assert_array_equal(loaded.feature_names_in_, clf.feature_names_in_)
    assert loaded.feature_names_in_.dtype == object


def test_fitted_on_another_device_loads_on_cpu(fitted, small_data, tmp_path):
    X = small_data.X_test
    # as if fitted with device="cuda" (the head is kept on CPU after fit anyway)
    on_gpu = clone(fitted)
    on_gpu.__dict__.update({k: v for k, v in vars(fitted).items() if k.endswith("_")})
    on_gpu.set_params(device="cuda:0")
    path = tmp_path / "gpu.safetensors"
    candle_sklearn.save(on_gpu, path)
    if not torch.cuda.is_available():
        with pytest.warns(UserWarning, match="no CUDA device, so it uses device='cpu'"):
            loaded = candle_sklearn.load(path)
        assert loaded.device == "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = candle_sklearn.load(path, device="cpu")
    assert loaded.device == "cpu"
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))


@pytest.mark.parametrize("name, value", [("zero_shot_weight_", 0.0), ("temperature_", 1.0)])
def test_a_file_from_before_an_optional_attribute_predicts_as_it_did(fitted, small_data,
                                                                     tmp_path, name, value):
    """Files written before ``zero_shot_weight_`` (blend nothing) or ``temperature_`` (the
    plain softmax) existed, in the same format, load with the value that predicts as they
    did."""
    old = clone(fitted)
    old.__dict__.update({k: v for k, v in vars(fitted).items() if k.endswith("_")})
    setattr(old, name, value)
    expected = old.predict_proba(small_data.X_test)
    delattr(old, name)
    candle_sklearn.save(old, tmp_path / "old.safetensors")
    loaded = candle_sklearn.load(tmp_path / "old.safetensors")
    assert getattr(loaded, name) == value
    np.testing.assert_array_equal(loaded.predict_proba(small_data.X_test), expected)


def test_fitted_on_a_mac_loads_on_cpu_elsewhere(fitted, small_data, tmp_path):
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    on_mac = clone(fitted).set_params(device="mps")
    on_mac.__dict__.update({k: v for k, v in vars(fitted).items() if k.endswith("_")})
    path = tmp_path / "mac.safetensors"
    candle_sklearn.save(on_mac, path)
    with pytest.warns(UserWarning, match="no MPS device, so it uses device='cpu'"):
        loaded = candle_sklearn.load(path)
    assert loaded.device == "cpu"
    np.testing.assert_array_equal(loaded.predict_proba(small_data.X_test),
                                  fitted.predict_proba(small_data.X_test))


def test_saved_on_a_gpu_index_this_machine_lacks_loads_on_its_gpu(fitted, tmp_path,
                                                                     monkeypatch):
    on_gpu = clone(fitted)
    on_gpu.__dict__.update({k: v for k, v in vars(fitted).items() if k.endswith("_")})
    on_gpu.set_params(device="cuda:3")
    path = tmp_path / "gpu3.safetensors"
    candle_sklearn.save(on_gpu, path)
    # a machine with one GPU (only the device checks are faked: nothing runs on it here)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.warns(UserWarning, match="has 1 CUDA device.*uses device='cuda'"):
        loaded = candle_sklearn.load(path)
    assert loaded.device == "cuda"
    on_gpu.set_params(device="cuda:0")
    candle_sklearn.save(on_gpu, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert candle_sklearn.load(path).device == "cuda:0"


@pytest.mark.gpu
def test_fitted_on_gpu_loads_on_cpu(small_data, tmp_path):
    d = small_data
    clf = CandleClassifier(classes=d.classes, text_features=d.text_features,
                           **{**FAST, "device": "cuda"}).fit(d.X_train, d.y_train)
    loaded, _ = _roundtrip(clf, tmp_path, device="cpu")
    # CUDA against CPU float32 kernels: logits up to ~100 differ in the 6th digit
    np.testing.assert_allclose(loaded.predict_proba(d.X_test), clf.predict_proba(d.X_test),
                               atol=1e-4)
    _assert_same_fitted_state(clf, loaded)


def test_zero_shot_roundtrip(small_data, tmp_path):
    d = small_data
    zs = ZeroShotClassifier(d.classes, text_features=d.text_features).fit(d.X_test)
    loaded, _ = _roundtrip(zs, tmp_path)
    np.testing.assert_array_equal(loaded.predict_proba(d.X_test), zs.predict_proba(d.X_test))


# ------------------------------------------------------------- pipelines, weights
@pytest.fixture
def tiny_weights(tmp_path):
    """A private copy of the tiny model's checkpoint, forgotten by the model cache after."""
    path = tmp_path / "weights" / "tiny.pt"
    path.parent.mkdir()
    shutil.copy(conftest.TINY_WEIGHTS, path)
    yield path
    _clip.clear_cache()


def _tiny_pipeline(weights, image_dir, **params):
    paths, labels = image_dir
    pipe = make_candle_pipeline(TINY, str(weights), classes=np.unique(labels),
                                embedder_params={"device": "cpu", "num_workers": 0},
                                new_class_bias=0.0, **{**FAST, **params})
    train = labels != "yellow"  # yellow: a new class, known by name only
    return pipe.fit([p for p, t in zip(paths, train) if t], labels[train])


def test_pipeline_roundtrip_as_on_another_machine(tiny_weights, image_dir, tmp_path):
    from candle_sklearn._cache import MEMORY

    paths, _ = image_dir
    pipe = _tiny_pipeline(tiny_weights, image_dir)
    path = tmp_path / "pipe.safetensors"
    candle_sklearn.save(pipe, path)
    expected = pipe.predict_proba(paths)
    # as in a fresh process: no loaded CLIP, no cached embedding
    _clip.clear_cache()
    MEMORY.clear()
    loaded = candle_sklearn.load(path)
    assert loaded.named_steps["candle"].encoder is loaded.named_steps["clip"]
    proba = loaded.predict_proba(paths)
    # CLIP re-encodes the images in other batches: float32 noise, then a float32 head
    np.testing.assert_allclose(proba, expected, rtol=1e-4, atol=1e-9)
    np.testing.assert_array_equal(loaded.predict(paths), pipe.predict(paths))


def test_weights_are_stored_by_reference_and_checked(tiny_weights, image_dir, tmp_path):
    pipe = _tiny_pipeline(tiny_weights, image_dir)
    path = tmp_path / "pipe.safetensors"
    candle_sklearn.save(pipe, path)
    header = candle_sklearn.io.read_header(path)
    ref = header["estimator"]["steps"][0][1]["__estimator__"]["weights"]
    assert ref["model_name"] == TINY and ref["pretrained"] == str(tiny_weights)
    assert isinstance(ref["fingerprint"], str) and len(ref["fingerprint"]) >= 32
    assert os.path.getsize(path) < os.path.getsize(tiny_weights) / 2  # no CLIP weights

    # another machine: the checkpoint is elsewhere
    moved = tmp_path / "moved.pt"
    shutil.move(tiny_weights, moved)
    _clip.clear_cache()
    # a missing file is reported as one (and is still a WeightsMismatchError)
    with pytest.raises(WeightsMismatchError, match="weights are not on this machine: "
                       "pretrained checkpoint file not found") as missing:
        candle_sklearn.load(path)
    assert isinstance(missing.value, FileNotFoundError)
    loaded = candle_sklearn.load(path, pretrained=moved)
    assert loaded.named_steps["clip"].pretrained == moved
    candle_sklearn.load(path, check_weights=False)  # no check, no weights needed

    # same path, other weights
    with torch.random.fork_rng():
        torch.manual_seed(1)
        import open_clip
        torch.save(open_clip.create_model(TINY).state_dict(), tiny_weights)
    _clip.clear_cache()
    with pytest.raises(WeightsMismatchError, match="image features would not match"):
        candle_sklearn.load(path)


# ------------------------------------------------------------- refusing files
def _rewrite(path, edit_doc=None, edit_tensors=None):
    """Write a tampered copy of a model file."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        doc = json.loads(f.metadata()["candle_sklearn"])
    tensors = safetensors.numpy.load_file(str(path))
    if edit_doc:
        doc = edit_doc(doc) or doc
    if edit_tensors:
        edit_tensors(tensors)
    out = path.with_name("tampered.safetensors")
    text = doc if isinstance(doc, str) else json.dumps(doc)
    safetensors.numpy.save_file(tensors, str(out), metadata={"candle_sklearn": text})
    return out


def _set(key, value):
    def edit(doc):
        node = doc
        *parents, last = key
        for k in parents:
            node = node[k]
        node[last] = value
    return edit


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "model.safetensors"
    candle_sklearn.save(fitted, path)
    return path


@pytest.mark.parametrize("edit_doc, edit_tensors, match", [
    (lambda d: "{not json", None, "not valid JSON"),
    (_set(["format_version"], 99), None,
     "written by candle_sklearn .* in file format 99; this version reads formats 1 to 3"),
    (_set(["format_version"], 0), None, "file format 0 .* is no longer supported"),
    (_set(["format_version"], "1"), None, "format_version '1' is not an integer"),
    (_set(["format"], "sklearn"), None, "not a candle_sklearn model description"),
    (_set(["estimator", "class"], "os.system"), None,
     "class 'os.system' is not one this version loads"),
    (_set(["estimator", "params", "tau"], {"__estimator__": {"class": "builtins.eval",
                                                             "params": {}}}), None,
     "class 'builtins.eval' is not one"),
    (_set(["estimator", "params", "surprise"], 1), None, r"no parameter\(s\) \['surprise'\]"),
    (_set(["estimator", "params", "tau"], "high"), None, "tau"),
    (_set(["estimator", "fitted", "secret_"], 1), None,
     r"no fitted attribute\(s\) \['secret_'\]"),
    (_set(["estimator", "fitted", "history_"], {"__pickle__": "gASV"}), None, "unknown entry"),
    (None, lambda t: t.update({"estimator.text_features_": t["estimator.text_features_"][:3]}),
     "has shape .3, 32. and dtype float32, the description says .12, 32."),
    (_set(["estimator", "fitted", "text_features_", "shape"], [3, 32]),
     lambda t: t.update({"estimator.text_features_": t["estimator.text_features_"][:3]}),
     "text_features_ does not have shape"),
    (_set(["estimator", "head", "config", "n_base"], 2), None,
     "the head's configuration and tensors do not fit together"),
    (None, lambda t: t.pop("estimator.head_.W_v"), "tensor 'estimator.head_.W_v' is missing"),
    (None, lambda t: t.update({"extra": np.zeros(3)}), r"tensors \['extra'\] are not described"),
    (None, lambda t: t["estimator.head_.visual_gain"].__imul__(0.5),
     r"head_.visual_gain ranges from .*: from exactly 1 to at most 4"),
    (None, lambda t: t["estimator.head_.visual_gain"].fill(4.0), r"head_.visual_gain ranges"),
    (lambda d: d["estimator"]["head"]["state"].pop("visual_gain") and None,
     lambda t: t.pop("estimator.head_.visual_gain"), "head_.visual_gain is missing"),
    (_set(["estimator", "fitted", "classes_", "dtype"], "<U2"), None, "bad string array"),
    (_set(["estimator", "fitted", "head_order_", "__tensor__"], "estimator.class_counts_"),
     None, "head_order_ is not a permutation"),
])
def test_tampered_files_are_refused_clearly(saved, edit_doc, edit_tensors, match):
    bad = _rewrite(saved, edit_doc, edit_tensors)
    with pytest.raises(InvalidModelFileError, match=match):
        candle_sklearn.load(bad)


def test_non_model_files_are_refused(tmp_path, saved):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x80\x04\x95 not a safetensors file")
    with pytest.raises(InvalidModelFileError, match="not a readable safetensors file"):
        candle_sklearn.load(junk)
    other = tmp_path / "other.safetensors"
    safetensors.numpy.save_file({"w": np.zeros(2)}, str(other))
    with pytest.raises(InvalidModelFileError, match="not a candle_sklearn model"):
        candle_sklearn.load(other)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(saved.read_bytes()[:-100])
    with pytest.raises(InvalidModelFileError):
        candle_sklearn.load(truncated)


def test_loading_never_unpickles_or_evaluates(saved, small_data, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("load used pickle or eval")

    for module, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"),
                         (torch, "load")]:
        monkeypatch.setattr(module, name, forbidden)
    import builtins
    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    loaded = candle_sklearn.load(saved)
    monkeypatch.undo()
    assert loaded.predict(small_data.X_test).shape == (len(small_data.X_test),)
    raw = saved.read_bytes()
    assert b"\x80\x04\x95" not in raw and b"\x80\x05\x95" not in raw  # pickle frames


def test_older_formats_are_upgraded(saved, monkeypatch):
    seen = []

    def v3_to_v4(doc):
        seen.append(doc["format_version"])
        return {**doc, "format_version": 4}

    monkeypatch.setattr(io, "FORMAT_VERSION", 4)
    monkeypatch.setitem(io._MIGRATIONS, 3, v3_to_v4)
    assert candle_sklearn.load(saved).new_class_bias_ is not None
    assert seen == [3]
    assert io.read_header(saved)["format_version"] == 4


def _doc_as_version_2(doc):
    """A version-3 document as version 2 wrote it: no attenuation_correction, no head
    gains (_tensors_as_version_2 drops their tensors)."""
    for node in io._candle_nodes(doc):
        del node["params"]["attenuation_correction"]
        del node["head"]["state"]["visual_gain"]
    return {**doc, "format_version": 2}


def _tensors_as_version_2(tensors):
    for name in [n for n in tensors if n.endswith("head_.visual_gain")]:
        del tensors[name]


def test_a_version_2_file_predicts_as_it_did(fitted, small_data, tmp_path):
    """Format 2 had no attenuation correction: loaded, such a model predicts without it
    (gains of one), and says so in its parameters, so that a refit does the same."""
    old = copy.deepcopy(fitted).set_params(attenuation_correction=False)
    old.head_.set_visual_gain(torch.ones(len(old.head_.visual_gain)))
    path = tmp_path / "v2.safetensors"
    candle_sklearn.save(old, path)
    loaded = candle_sklearn.load(_rewrite(path, _doc_as_version_2, _tensors_as_version_2))
    assert loaded.attenuation_correction is False
    np.testing.assert_array_equal(loaded.head_.visual_gain.numpy(), 1.0)
    np.testing.assert_array_equal(loaded.decision_function(small_data.X_test),
                                  old.decision_function(small_data.X_test))


def test_a_version_1_file_predicts_as_it_did(fitted, small_data, tmp_path):
    """Format 1 had no visual_weight (the visual logits weighed as in training): loaded,
    such a model predicts as a visual_weight=1 model, not at today's default of 0.5."""
    import copy

    old = copy.deepcopy(fitted).set_params(visual_weight=1.0, attenuation_correction=False)
    old.head_.set_inference_visual_scale(old.visual_scale)
    old.head_.set_visual_gain(torch.ones(len(old.head_.visual_gain)))
    path = tmp_path / "v1.safetensors"
    candle_sklearn.save(old, path)

    def as_version_1(doc):
        node = _doc_as_version_2(doc)["estimator"]
        del node["params"]["visual_weight"]
        del node["head"]["config"]["inference_visual_scale"]
        return {**doc, "format_version": 1}

    assert io.read_header(path)["format_version"] == 3
    loaded = candle_sklearn.load(_rewrite(path, as_version_1, _tensors_as_version_2))
    assert loaded.visual_weight == 1.0
    np.testing.assert_array_equal(loaded.decision_function(small_data.X_test),
                                  old.decision_function(small_data.X_test))


# ------------------------------------------------------------- refusing to save
class OtherEncoder:
    def encode_text(self, texts):
        return np.ones((len(texts), 4))


def test_save_refuses_what_it_cannot_store(fitted, small_data, tmp_path):
    path = tmp_path / "m.safetensors"
    with pytest.raises(TypeError, match="estimator.encoder of type .*OtherEncoder"):
        candle_sklearn.save(clone(fitted).set_params(encoder=OtherEncoder()), path)
    with pytest.raises(TypeError, match="templates: .*cannot be written as a format string"):
        candle_sklearn.save(clone(fitted).set_params(templates=[lambda c: c.upper()]), path)
    with pytest.raises(TypeError, match="LinearProbeClassifier is not one of the estimators"):
        candle_sklearn.save(LinearProbeClassifier().fit(small_data.X_train, small_data.y_train),
                            path)
    with pytest.raises(TypeError, match=r"random_state of type .*RandomState"):
        candle_sklearn.save(clone(fitted).set_params(random_state=np.random.RandomState(0)),
                            path)
    new_attr = copy.copy(fitted)
    new_attr.margin_ = 2.0  # a fitted attribute io was not taught about
    with pytest.raises(TypeError, match=r"attribute\(s\) \['margin_'\]; add them to "
                                        r"io._FITTED"):
        candle_sklearn.save(new_attr, path)
    assert not path.exists() and not list(tmp_path.glob("*.tmp"))


def test_unfitted_estimators_and_embedders_roundtrip(tmp_path):
    emb = ClipEmbedder("candle-tiny", "bundled", device="cpu")
    loaded, _ = _roundtrip(CandleClassifier(encoder=emb, tau=2.0), tmp_path)
    assert loaded.tau == 2.0 and isinstance(loaded.encoder, ClipEmbedder)
    assert not hasattr(loaded, "classes_")


def test_random_weights_cannot_be_restored_elsewhere(tmp_path):
    emb = ClipEmbedder(TINY, pretrained=None, device="cpu").fit([np.zeros((8, 8, 3), np.uint8)])
    path = tmp_path / "random.safetensors"
    candle_sklearn.save(emb, path)
    assert candle_sklearn.load(path).embed_dim_ == emb.embed_dim_  # same process: same model
    _clip.clear_cache()  # as in another process
    with pytest.raises(WeightsMismatchError, match="pretrained=None means random weights"):
        candle_sklearn.load(path)


class _HeadAsData(CandleClassifier):
    """The __getstate__ / __setstate__ that make CandleClassifier storable by skops."""

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: it may be self.__dict__ itself
        if "head_" in state:
            state["head_"] = io.head_to_state(state["head_"])
        return state

    def __setstate__(self, state):
        if isinstance(state.get("head_"), dict):
            state = {**state, "head_": io.head_from_state(state["head_"])}
        super().__setstate__(state)


def test_head_as_data_serves_skops_and_pickle(small_data, tmp_path):
    sio = pytest.importorskip("skops.io")
    d = small_data
    clf = _HeadAsData(classes=d.classes, text_features=d.text_features, new_class_bias=1.0,
                      **FAST).fit(d.X_train, d.y_train)
    path = tmp_path / "model.skops"
    sio.dump(clf, path)
    untrusted = sio.get_untrusted_types(file=path)
    assert untrusted == [f"{__name__}._HeadAsData"]  # only the estimator class to trust
    loaded = sio.load(path, trusted=untrusted)
    np.testing.assert_array_equal(loaded.predict_proba(d.X_test), clf.predict_proba(d.X_test))
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(d.X_test), clf.predict_proba(d.X_test))
    assert isinstance(clf.head_, torch.nn.Module)  # pickling left the fitted model alone


# ------------------------------------------------------------- fitted values (issue 25)
# A model file is input from outside: every fitted value is checked at load, and a bad
# one is a one-line InvalidModelFileError naming the file and the field.
def _one_line_naming(exc, path, field):
    message = str(exc)
    assert "\n" not in message, message
    assert str(path) in message and field in message, message


def _nan_head_weights(t):
    t["estimator.head_.W_v"] = np.full_like(t["estimator.head_.W_v"], np.nan)


@pytest.mark.parametrize("edit_doc, edit_tensors, field", [
    (None, _nan_head_weights, "head_.W_v"),
    (_set(["estimator", "fitted", "new_class_bias_"], {"__float__": "nan"}), None,
     "new_class_bias_"),
    (_set(["estimator", "fitted", "new_class_bias_"], 1e308), None, "new_class_bias_"),
    (_set(["estimator", "fitted", "new_class_bias_"], "1.5"), None, "new_class_bias_"),
    (_set(["estimator", "fitted", "zero_shot_weight_"], 7), None, "zero_shot_weight_"),
    (_set(["estimator", "fitted", "zero_shot_weight_"], None), None, "zero_shot_weight_"),
    (_set(["estimator", "fitted", "feature_scale_"], 0), None, "feature_scale_"),
    (_set(["estimator", "fitted", "feature_scale_"], -1), None, "feature_scale_"),
    (lambda d: d["estimator"]["fitted"].pop("feature_scale_") and None, None,
     "feature_scale_"),
    (_set(["estimator", "fitted", "lr_"], {"__float__": "inf"}), None, "lr_"),
    (_set(["estimator", "fitted", "history_"], ["low"]), None, "history_"),
    (_set(["estimator", "fitted", "calibration_"], 3), None, "calibration_"),
    (_set(["estimator", "head", "config", "dropout"], 2.0), None, "dropout"),
    (_set(["estimator", "head", "config", "num_heads"], 5), None, "num_heads"),
    (_set(["estimator", "params", "n_jobs"], 0), None, "n_jobs"),
    (_set(["estimator", "params", "device"], "meta"), None, "device"),
    (None, lambda t: t.update({"estimator.head_.alpha": np.array(1e30, np.float32)}),
     "head_.alpha"),
    (_set(["estimator", "head", "state", "W_v", "dtype"], "<f8"),
     lambda t: t.update({"estimator.head_.W_v": t["estimator.head_.W_v"].astype(np.float64)}),
     "head_.W_v"),
    (None, lambda t: t.update({"estimator.class_counts_": t["estimator.class_counts_"] * 0}),
     "class_counts_"),
    (None, lambda t: t.update(
        {"estimator.text_features_": t["estimator.text_features_"][::-1].copy()}),
     "text_features_"),
])
def test_bad_fitted_values_are_refused_naming_the_field(saved, small_data, edit_doc,
                                                        edit_tensors, field):
    bad = _rewrite(saved, edit_doc, edit_tensors)
    with pytest.raises(InvalidModelFileError) as refused:
        candle_sklearn.load(bad)
    _one_line_naming(refused.value, bad, field)


def _peers(d):
    from candle_sklearn import baselines

    table = dict(classes=d.classes, text_features=d.text_features, new_class_bias=0.5,
                 random_state=0)
    return {"LinearAdapterClassifier": baselines.LinearAdapterClassifier(**table, max_iter=5),
            "ClapClassifier": baselines.ClapClassifier(**table, max_epochs=2),
            "GDAClassifier": baselines.GDAClassifier(**table),
            "TipAdapterClassifier": baselines.TipAdapterClassifier(**table, fine_tune=True,
                                                                   max_epochs=1),
            "CrossModalLinearProbe": baselines.CrossModalLinearProbe(**table, max_iter=5),
            "LogitAdjustedCosineClassifier": baselines.LogitAdjustedCosineClassifier(
                **table, max_epochs=1)}


@pytest.fixture(scope="module")
def saved_peers(small_data, tmp_path_factory):
    """Each peer fitted (with new classes) and saved: name -> (estimator, path)."""
    d = small_data
    folder = tmp_path_factory.mktemp("peers")
    out = {}
    for name, est in _peers(d).items():
        est.fit(d.X_train, d.y_train)
        candle_sklearn.save(est, folder / f"{name}.safetensors")
        out[name] = (est, folder / f"{name}.safetensors")
    zs = ZeroShotClassifier(d.classes, text_features=d.text_features).fit(d.X_test)
    candle_sklearn.save(zs, folder / "ZeroShotClassifier.safetensors")
    out["ZeroShotClassifier"] = (zs, folder / "ZeroShotClassifier.safetensors")
    return out


def test_peers_roundtrip_and_their_fitted_values_are_checked(saved_peers, small_data):
    X = small_data.X_test
    for name, (est, path) in saved_peers.items():
        loaded = candle_sklearn.load(path)
        np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X),
                                      err_msg=name)


def _scale_tensor(key, factor):
    return lambda t: t.update({key: (t[key] * factor).astype(t[key].dtype)})


def _tensor_value(key, value):
    def edit(t):
        arr = t[key].copy()
        arr.flat[0] = value
        t[key] = arr
    return edit


@pytest.mark.parametrize("name, edit_doc, edit_tensors, field", [
    ("LinearAdapterClassifier", None, _tensor_value("estimator.adapter_", np.nan), "adapter_"),
    ("LinearAdapterClassifier", _set(["estimator", "fitted", "reg_"], -1), None, "reg_"),
    ("ClapClassifier", None, _tensor_value("estimator.multipliers_", 2.0), "multipliers_"),
    ("ClapClassifier", None, _tensor_value("estimator.weights_", np.inf), "weights_"),
    ("GDAClassifier", None, _tensor_value("estimator.coef_", 1e300), "coef_"),
    ("GDAClassifier", lambda d: d["estimator"]["fitted"].pop("intercept_") and None,
     lambda t: t.pop("estimator.intercept_"), "intercept_"),
    ("TipAdapterClassifier", None, _tensor_value("estimator.cache_labels_", 99),
     "cache_labels_"),
    ("TipAdapterClassifier", None, _scale_tensor("estimator.cache_keys_", 1e3), "cache_keys_"),
    ("CrossModalLinearProbe", None, _scale_tensor("estimator.class_vectors_", 2.0),
     "class_vectors_"),
    ("CrossModalLinearProbe", _set(["estimator", "fitted", "n_iter_"], 1.5), None, "n_iter_"),
    ("LogitAdjustedCosineClassifier", lambda d: d["estimator"]["fitted"].update(
        new_classes_=d["estimator"]["fitted"]["base_classes_"]),
     lambda t: t.pop("estimator.new_classes_"), "new_classes_"),
    ("ZeroShotClassifier", None, _scale_tensor("estimator.text_features_", 3.0),
     "text_features_"),
    ("ZeroShotClassifier", _set(["estimator", "fitted", "n_features_in_"], 16), None,
     "n_features_in_"),
])
def test_bad_fitted_values_of_the_peers_are_refused(saved_peers, name, edit_doc,
                                                    edit_tensors, field):
    bad = _rewrite(saved_peers[name][1], edit_doc, edit_tensors)
    with pytest.raises(InvalidModelFileError) as refused:
        candle_sklearn.load(bad)
    _one_line_naming(refused.value, bad, field)


def test_save_refuses_what_load_would_refuse(fitted, tmp_path):
    bad = copy.deepcopy(fitted)
    bad.new_class_bias_ = 1e308
    path = tmp_path / "m.safetensors"
    with pytest.raises(ValueError, match=r"estimator\.new_class_bias_ must be a finite number "
                                         r"in \[-1e\+09, 1e\+09\], got 1e\+308"):
        candle_sklearn.save(bad, path)
    assert not path.exists() and not list(tmp_path.glob("*.tmp"))


# ------------------------------------------------------------- weights and devices at load
@pytest.fixture(scope="module")
def bundled_pipeline(image_dir, tmp_path_factory):
    """A pipeline on the bundled tiny CLIP ("candle-tiny", pretrained="bundled"), saved."""
    paths, labels = image_dir
    pipe = make_candle_pipeline("candle-tiny", "bundled", classes=np.unique(labels),
                                embedder_params={"device": "cpu", "num_workers": 0,
                                                 "cache": False},
                                new_class_bias=0.0, **FAST)
    train = labels != "yellow"
    pipe.fit([p for p, t in zip(paths, train) if t], labels[train])
    path = tmp_path_factory.mktemp("bundled") / "pipe.safetensors"
    candle_sklearn.save(pipe, path)
    return pipe, path


def test_the_bundled_models_weights_can_be_given_at_load(bundled_pipeline, image_dir):
    """pretrained= at load overrides the bundled model's weights as it does others': its
    architecture is the bundled folder's, whatever names the weights."""
    pipe, path = bundled_pipeline
    paths = image_dir[0]
    expected = pipe.predict_proba(paths)
    folder = _clip.BUNDLED_DIR / "candle-tiny"
    for pretrained in ["bundled", folder, str(folder), f"local-dir:{folder}",
                       folder / "open_clip_model.safetensors"]:
        loaded = candle_sklearn.load(path, pretrained=pretrained)
        np.testing.assert_allclose(loaded.predict_proba(paths), expected, rtol=1e-4,
                                   atol=1e-9, err_msg=str(pretrained))


def test_weights_that_cannot_serve_the_bundled_model_say_why(bundled_pipeline, tmp_path):
    from candle_sklearn.exceptions import WeightsNotFoundError

    _, path = bundled_pipeline
    other = tmp_path / "other.pt"
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = ClipEmbedder("candle-tiny", None, device="cpu").load_model().model
        torch.save({k: v + 0.01 * torch.randn_like(v) for k, v in model.state_dict().items()},
                   other)
    with pytest.raises(WeightsMismatchError, match="image features would not match"):
        candle_sklearn.load(path, pretrained=other)
    missing = tmp_path / "gone.pt"
    with pytest.raises(WeightsNotFoundError, match=f"not found: '{missing}'") as gone:
        candle_sklearn.load(path, pretrained=missing)
    assert isinstance(gone.value, FileNotFoundError)
    with pytest.raises(WeightsMismatchError, match="nor a known tag of 'candle-tiny'") as tag:
        candle_sklearn.load(path, pretrained="openai")
    for exc in (gone.value, tag.value):
        assert "unknown open_clip model" not in str(exc)


@pytest.mark.parametrize("device", ["meta", "banana", "cuda", "cuda:99"])
def test_unusable_devices_at_load_are_device_errors(bundled_pipeline, device):
    if device == "cuda" and torch.cuda.is_available() or torch.cuda.device_count() > 99:
        pytest.skip("this machine has that device")
    _, path = bundled_pipeline
    with pytest.raises(ValueError, match=f"load\\(device='{device}'\\): device=") as bad:
        candle_sklearn.load(path, device=device)
    assert not isinstance(bad.value, WeightsMismatchError)


# ------------------------------------------------------------- where save writes
def test_save_names_the_path_and_what_is_wrong_with_it(fitted, tmp_path, monkeypatch):
    missing = tmp_path / "no" / "such" / "m.safetensors"
    with pytest.raises(FileNotFoundError, match=f"cannot save to '{missing}': the folder "
                       f"'{missing.parent}' does not exist"):
        candle_sklearn.save(fitted, missing)
    with pytest.raises(IsADirectoryError, match=f"cannot save to '{tmp_path}': it is a folder"):
        candle_sklearn.save(fitted, tmp_path)
    monkeypatch.chdir(tmp_path)
    for here in (".", ""):
        with pytest.raises(IsADirectoryError, match=f"cannot save to '{here}': it is a folder"):
            candle_sklearn.save(fitted, here)
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="'.*a_file' is a file, not a folder"):
        candle_sklearn.save(fitted, a_file / "m.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing written


def test_a_pipelines_steps_agree_on_the_feature_width(tiny_weights, image_dir, tmp_path):
    path = tmp_path / "pipe.safetensors"
    candle_sklearn.save(_tiny_pipeline(tiny_weights, image_dir), path)
    bad = _rewrite(path, _set(["estimator", "steps", 0, 1, "__estimator__", "fitted",
                               "embed_dim_"], 16))
    with pytest.raises(InvalidModelFileError, match=r"steps\.candle\.n_features_in_: 32 "
                                                    r"differs from the embed_dim_ \(16\)"):
        candle_sklearn.load(bad, check_weights=False)


# ------------------------------------------------------------- fuzz of model files
# One field of a saved model changed at a time: a JSON value (fitted attribute, parameter
# or head setting) replaced, swapped with another of its kind or deleted, or a tensor's
# values, dtype or shape changed or the tensor removed. load must refuse the file with a
# one-line InvalidModelFileError that names the file and the field, or return a model
# whose probabilities are finite and sum to 1. Parameters are checked against their
# estimator's own constraints, as at fit: the fuzz gives them values of every type, but
# not the extreme magnitudes that fit accepts too (GDAClassifier(alpha=1e308) predicts
# NaN after fit as well). Reproducible (derandomized); CANDLE_FUZZ_RANDOM=1 explores.
_JSON_VALUES = [None, True, False, "x", "", 0, 1, -1, 2, 7, 0.5, -0.5, 1e308, -1e308, 10**30,
                {"__float__": "nan"}, {"__float__": "inf"}, {"__float__": "-inf"}, [], [1, 2],
                {"__dict__": {}}, {"__tuple__": [1]}, "cuda", "batch", "isolated"]
_PARAM_VALUES = [v for v in _JSON_VALUES if not (isinstance(v, (int, float))
                                                and not isinstance(v, bool) and abs(v) > 1e3)]
_FLOAT_VALUES = [np.nan, np.inf, -np.inf, 0.0, -1.0, 7.0, 0.5, 1e-30, 1e30, -1e30, 3e38]
_INT_VALUES = [-1, 0, 1, 7, 99, 2**31 - 1]
_DTYPES = ["float16", "float32", "float64", "int32", "int64", "uint8", "bool"]


class _ModelFiles(dict):
    """name -> (JSON document, tensors); with the folder to write to and features to
    predict (a short repr for hypothesis' reports)."""

    def __repr__(self):
        return f"<model files: {sorted(self)}>"


@pytest.fixture(scope="module")
def model_files(saved, saved_peers, small_data, tmp_path_factory):
    """Saved models: CandleClassifier with string labels (auto bias) and with int labels
    (batch context, tied text, a zero-shot blend), the six peers and ZeroShotClassifier."""
    from safetensors import safe_open

    d = small_data
    batch = CandleClassifier(classes=d.classes, text_features=d.text_features,
                             context="batch", tied_text=True, new_class_bias=1.0,
                             zero_shot_weight=0.5, **FAST).fit(d.X_train, d.y_train)
    paths = {"candle": saved, **{name: path for name, (_, path) in saved_peers.items()}}
    paths["candle-batch"] = tmp_path_factory.mktemp("batch") / "batch.safetensors"
    candle_sklearn.save(batch, paths["candle-batch"])
    files = _ModelFiles()
    for name, path in paths.items():
        with safe_open(str(path), "np") as f:
            doc = json.loads(f.metadata()["candle_sklearn"])
        files[name] = (doc, safetensors.numpy.load_file(str(path)))
    files.folder, files.X = tmp_path_factory.mktemp("fuzzed"), d.X_test
    return files


def _fields(doc, tensors):
    est = doc["estimator"]
    fields = [("fitted", k) for k in est["fitted"]] + [("params", k) for k in est["params"]]
    if "head" in est:
        fields += [("config", k) for k in est["head"]["config"]]
    return fields + [("tensor", k) for k in sorted(tensors)]


def _description(node, name):
    """The JSON node that describes tensor ``name``, and where it is: (parent, key)."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        if isinstance(value, dict) and value.get("__tensor__") == name:
            return node, key
        if isinstance(value, (dict, list)):
            try:
                return _description(value, name)
            except KeyError:
                pass
    raise KeyError(name)


def _mutated(doc, tensors, field, data):
    """A copy of the model with ``field`` changed (drawn from ``data``), and the name
    that a refusal must give."""
    doc, tensors = copy.deepcopy(doc), dict(tensors)
    est, (kind, key) = doc["estimator"], field
    if kind != "tensor":
        node = {"fitted": est["fitted"], "params": est["params"],
                "config": est.get("head", {}).get("config")}[kind]
        how = data.draw(st.sampled_from(["value", "value", "swap", "delete"]), label="how")
        if how == "delete":
            del node[key]
        elif how == "swap":
            node[key] = copy.deepcopy(node[data.draw(st.sampled_from(sorted(node)))])
        else:
            node[key] = data.draw(st.sampled_from(
                _PARAM_VALUES if kind == "params" else _JSON_VALUES), label="value")
        return doc, tensors, key
    arr = tensors[key]
    parent, entry = _description(est, key)
    how = data.draw(st.sampled_from(["value", "value", "dtype", "shape", "absent", "orphan"]),
                    label="how")
    with np.errstate(all="ignore"):
        if how == "value" and arr.size:
            value = data.draw(st.sampled_from(
                _FLOAT_VALUES if arr.dtype.kind == "f" else _INT_VALUES), label="value")
            new = arr.copy()
            if data.draw(st.booleans(), label="everywhere"):
                new[...] = value
            else:
                new.flat[data.draw(st.integers(0, arr.size - 1), label="at")] = value
        elif how == "dtype":
            new = arr.astype(data.draw(st.sampled_from(_DTYPES), label="dtype"))
        elif how == "shape":
            shapes = {"flat": arr.ravel(), "extra axis": arr[None]}
            if arr.ndim:
                shapes.update({"row less": arr[:-1], "row more": np.concatenate([arr, arr[:1]]),
                               "empty": arr[:0]})
            if arr.ndim == 2:
                shapes["transposed"] = arr.T
            new = shapes[data.draw(st.sampled_from(sorted(shapes)), label="shape")]
        else:
            new = arr
    if how in ("absent", "orphan"):
        del tensors[key]
        if how == "absent":
            del parent[entry]
    else:
        tensors[key] = np.ascontiguousarray(new)
        parent[entry].update(dtype=new.dtype.str, shape=list(new.shape))
    return doc, tensors, key.removeprefix("estimator.")


def _load_or_refuse_clearly(model_files, data):
    name = data.draw(st.sampled_from(sorted(model_files)), label="model")
    doc, tensors = model_files[name]
    field = data.draw(st.sampled_from(_fields(doc, tensors)), label="field")
    doc, tensors, named = _mutated(doc, tensors, field, data)
    path, X = model_files.folder / "fuzzed.safetensors", model_files.X
    safetensors.numpy.save_file(tensors, str(path),
                                metadata={"candle_sklearn": json.dumps(doc)})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. a device this machine lacks
            model = candle_sklearn.load(path)
    except InvalidModelFileError as exc:
        event("refused")
        _one_line_naming(exc, path, named)
        return
    event("loaded")
    proba = model.predict_proba(X)
    assert np.isfinite(proba).all(), f"{name}, {field}: non-finite probabilities"
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=0, atol=1e-9)
    assert model.predict(X).shape == (len(X),)


@fuzz(100)
@given(data=st.data())
def test_fuzzed_model_files_load_correctly_or_are_refused_naming_the_field(model_files,
                                                                           data):
    _load_or_refuse_clearly(model_files, data)


@pytest.mark.slow  # 3000 generated cases
@fuzz(3000)
@given(data=st.data())
def test_fuzzed_model_files_many(model_files, data):
    _load_or_refuse_clearly(model_files, data)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_saved_files_follow_the_umask(fitted, tmp_path):
    """Saved models were mode 0600 whatever the umask (the temporary file's mode)."""
    old = os.umask(0o022)
    try:
        candle_sklearn.save(fitted, tmp_path / "a.safetensors")
        os.umask(0o077)
        candle_sklearn.save(fitted, tmp_path / "b.safetensors")
    finally:
        os.umask(old)
    assert (tmp_path / "a.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.safetensors").stat().st_mode & 0o777 == 0o600
    os.chmod(tmp_path / "a.safetensors", 0o600)  # a file saved over keeps its mode
    candle_sklearn.save(fitted, tmp_path / "a.safetensors")
    assert (tmp_path / "a.safetensors").stat().st_mode & 0o777 == 0o600


def test_a_model_pickled_before_the_temperature_predicts_probabilities(fitted, small_data):
    """A pickle from before temperature_ existed gives its plain softmax, not an error."""
    old = copy.deepcopy(fitted)
    old.temperature_ = 1.0
    expected = old.predict_proba(small_data.X_test)
    del old.temperature_
    np.testing.assert_array_equal(old.predict_proba(small_data.X_test), expected)
