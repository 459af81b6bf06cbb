import numpy as np
import pytest

from candle_sklearn import CandleClassifier
from candle_sklearn.baselines import LinearProbeClassifier, ZeroShotClassifier
from candle_sklearn.metrics import LongTailDisplay

from .conftest import FAST

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
plt = pytest.importorskip("matplotlib.pyplot")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_from_predictions_computes_per_class_accuracy():
    y_true = np.array(["a", "a", "b", "b", "b", "c"])
    y_pred = np.array(["a", "b", "b", "b", "a", "a"])
    disp = LongTailDisplay.from_predictions(y_true, y_pred, class_counts=[5, 20, 0],
                                            y_pred_baseline=y_true, name="m",
                                            baseline_name="oracle")
    np.testing.assert_allclose(disp.per_class_accuracy, [[0.5, 2 / 3, 0.0], [1, 1, 1]])
    assert disp.names == ["m", "oracle"]
    assert list(disp.lines_) == ["m", "oracle"]
    # classes ordered by training images: b (20), a (5), then the new class c
    dots = disp.lines_["m"][0]
    np.testing.assert_allclose(dots.get_ydata(), [2 / 3, 0.5, 0.0])
    # one moving average over the base classes and one over the new class
    assert len(disp.lines_["m"]) == 3
    separator = [ln for ln in disp.ax_.lines if ln.get_linestyle() == "--"]
    assert len(separator) == 1 and separator[0].get_xdata()[0] == pytest.approx(1.5)
    bars = disp.ax_counts_.patches
    assert [b.get_height() for b in bars] == [20, 5, 0]
    assert disp.figure_ is disp.ax_.figure
    assert [t.get_text() for t in disp.ax_.get_legend().get_texts()] == ["m", "oracle"]


def test_plot_on_given_axes_without_counts_or_smoothing():
    fig, ax = plt.subplots()
    disp = LongTailDisplay(np.array([0.2, np.nan, 0.9]), np.array([3, 1, 0]),
                           names="only").plot(ax=ax, smooth=None, show_counts=False,
                                              title="t")
    assert disp.ax_ is ax and disp.figure_ is fig and disp.ax_counts_ is None
    assert len(disp.lines_["only"]) == 1
    assert ax.get_title() == "t"


def test_from_estimator_with_a_zero_shot_baseline(small_data):
    d = small_data
    clf = CandleClassifier(classes=d.classes, text_features=d.text_features,
                           new_class_bias=0.0, **FAST).fit(d.X_train, d.y_train)
    zs = ZeroShotClassifier(d.classes, text_features=d.text_features).fit(d.X_test)
    disp = LongTailDisplay.from_estimator(clf, d.X_test, d.y_test, baseline=zs)
    assert disp.names == ["CandleClassifier", "ZeroShotClassifier"]
    np.testing.assert_array_equal(disp.class_counts, clf.class_counts_)
    for row, model in zip(disp.per_class_accuracy, (clf, zs)):
        pred = model.predict(d.X_test)
        want = [np.mean(pred[d.y_test == c] == c) for c in d.classes]
        np.testing.assert_allclose(row, want)
    # a model without class_counts_ needs them
    with pytest.raises(ValueError, match="pass class_counts"):
        LongTailDisplay.from_estimator(zs, d.X_test, d.y_test)
    probe = LinearProbeClassifier().fit(d.X_train, d.y_train)  # cannot predict new classes
    disp = LongTailDisplay.from_estimator(zs, d.X_test, d.y_test, baseline=probe,
                                          class_counts=d.train_counts, name="zero-shot")
    assert np.all(disp.per_class_accuracy[1][d.train_counts == 0] == 0)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="one count per class"):
        LongTailDisplay.from_predictions([0, 1], [0, 1], class_counts=[1, 2, 3])
    with pytest.raises(ValueError, match=r"not in classes: \[7\]"):
        LongTailDisplay.from_predictions([0, 7], [0, 1], class_counts=[1, 2], classes=[0, 1])
    with pytest.raises(ValueError, match="same length"):
        LongTailDisplay.from_predictions([0, 1], [0], class_counts=[1, 2])
    with pytest.raises(ValueError, match=r"y_pred contains labels .* \['0', '1'\]"):
        LongTailDisplay.from_predictions([0, 1], ["0", "1"], class_counts=[1, 2],
                                         classes=[0, 1])


def test_a_baseline_named_as_the_main_series_does_not_replace_it():
    d = LongTailDisplay.from_predictions([0, 1], [0, 1], class_counts=[5, 1], classes=[0, 1],
                                         y_pred_baseline={"predictions": [1, 0]})
    assert d.names == ["predictions", "predictions (baseline)"]
    np.testing.assert_array_equal(d.per_class_accuracy, [[1, 1], [0, 0]])
    with pytest.raises(ValueError, match="to match class_counts"):
        LongTailDisplay(np.zeros(3), np.zeros(2)).plot()
