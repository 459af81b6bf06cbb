"""The reference protocol (candle_sklearn.datasets.protocol): long-tailed counts and
indices, and the split functions against hand-computed counts and against a
transcription of the reference's own rule."""

from collections import Counter

import numpy as np
import pytest

from candle_sklearn.datasets import (base_new_classes, base_to_new_split, fewshot_indices,
                                     imbalanced_fewshot_indices, long_tailed_counts,
                                     long_tailed_indices)


def _labels(sizes):
    return np.repeat(np.arange(len(sizes)), sizes)


def _counts(labels, indices, n):
    return np.bincount(labels[indices], minlength=n).tolist()


def test_fewshot_keeps_at_most_shots_per_class():
    y = _labels([120, 8, 16, 0, 3])
    idx = fewshot_indices(y, 16, random_state=0)
    assert _counts(y, idx, 5) == [16, 8, 16, 0, 3]
    assert np.all(np.diff(idx) > 0)  # sorted, no repeats
    assert len(fewshot_indices(y, 0)) == len(y)  # shots < 1: everything (as Dassl)


def test_base_new_is_the_first_half_rounded_up():
    assert base_new_classes([4, 0, 3, 1, 2])[0].tolist() == [0, 1, 2]
    base, new = base_new_classes(np.arange(37))  # Oxford Pets: 19 base, 18 new
    assert (len(base), len(new)) == (19, 18) and base[-1] == 18


def test_long_tail_counts_by_hand():
    # After 100 shots: [100, 80, 100, 30, 100, 10]. Ranked (ties by label): 0, 2, 4, 1, 3, 5
    # keep floor(100 * 0.02**(i/5)) = 100, 45 (45.7), 20 (20.9), 9 (9.56), 4 (4.37), 2.
    y = _labels([120, 80, 150, 30, 100, 10])
    idx = imbalanced_fewshot_indices(y, 100, 0.02, random_state=1)
    assert _counts(y, idx, 6) == [100, 9, 45, 4, 20, 2]


def test_base_to_new_split_by_hand():
    y = _labels([120, 80, 150, 30, 100, 10])
    y_test = _labels([5, 5, 5, 5, 5, 5])
    split = base_to_new_split(y, y_test, shots=100, imbalance_ratio=0.02, random_state=1)
    # Base 0, 1, 2 with [100, 80, 100] after 100 shots; ranked 0, 2, 1: 100, 14 (14.1), 2.
    assert split.base_classes.tolist() == [0, 1, 2] and split.new_classes.tolist() == [3, 4, 5]
    assert split.train_counts.tolist() == [100, 2, 14, 0, 0, 0]
    assert _counts(y, split.train, 6) == split.train_counts.tolist()
    assert split.test_base.tolist() == list(range(15))
    assert split.test_new.tolist() == list(range(15, 30))


def test_largest_class_under_the_cap_sets_the_head():
    # The reference's img_max is the largest class after few-shot, not the cap: 60 here,
    # so 60, floor(60 * 0.02**0.5) = 8, floor(60 * 0.02) = 1.
    y = _labels([60, 50, 40, 5, 5, 5])
    split = base_to_new_split(y, y, shots=100, imbalance_ratio=0.02, random_state=0)
    assert split.train_counts.tolist() == [60, 8, 1, 0, 0, 0]


def test_balanced_setting():
    y = _labels([120, 8, 150, 30, 100])
    split = base_to_new_split(y, y, shots=16, imbalance_ratio=1.0, random_state=3)
    assert split.train_counts.tolist() == [16, 8, 16, 0, 0]


def test_same_seed_same_split_and_seeds_differ():
    y = _labels([120, 80, 150, 30, 100, 10])
    a = base_to_new_split(y, y, random_state=1)
    b = base_to_new_split(y, y, random_state=np.random.RandomState(1))
    c = base_to_new_split(y, y, random_state=2)
    assert np.array_equal(a.train, b.train)
    assert not np.array_equal(a.train, c.train)
    assert a.train_counts.tolist() == c.train_counts.tolist()  # only the draw changes


def _reference_counts(labels, shots, ratio):
    """Per-class counts by a transcription of the reference: Dassl's few-shot (every
    class), Candle's ``subsample_classes`` (first ceil(n/2) labels) and
    ``gen_imbalanced_data`` (``Counter.most_common``, ``int(max(img_max * r**(i/(K-1)), 1))``)."""
    few = {c: min(n, shots) for c, n in Counter(labels).items()}
    ordered = sorted(few)
    base = ordered[:-(-len(ordered) // 2)]
    if ratio == 1.0:
        return {c: few[c] for c in base}
    train = [c for c in base for _ in range(few[c])]  # label order, as in the split files
    ranking = Counter(train).most_common(len(base))
    img_max = ranking[0][1]
    k = len(base)
    out = {}
    for i, (c, n) in enumerate(ranking):
        out[c] = min(n, int(max(img_max * ratio ** (i / (k - 1.0)), 1)))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_counts_match_the_reference_rule(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 160, size=rng.integers(4, 30))
    y = _labels(sizes)
    for shots, ratio in ((100, 0.02), (100, 0.01), (16, 1.0), (50, 0.1)):
        split = base_to_new_split(y, y, shots=shots, imbalance_ratio=ratio, random_state=seed)
        expected = _reference_counts(y.tolist(), shots, ratio)
        got = {c: int(split.train_counts[c]) for c in split.base_classes}
        assert got == expected, (shots, ratio, sizes)


def test_bad_ratio_and_unknown_labels():
    y = _labels([3, 3])
    with pytest.raises(ValueError, match="imbalance_ratio"):
        base_to_new_split(y, y, imbalance_ratio=0)
    with pytest.raises(ValueError, match="not in classes"):
        base_to_new_split(y, y, classes=[0])


def test_long_tailed_counts_follow_the_reference_rule():
    counts = long_tailed_counts(5, imbalance_ratio=0.02, max_per_class=100)
    expected = [int(np.floor(max(100 * 0.02 ** (i / 4), 1))) for i in range(5)]
    np.testing.assert_array_equal(counts, expected)
    assert counts[0] == 100 and counts[-1] == 2
    assert long_tailed_counts(1).tolist() == [100]
    assert long_tailed_counts(200, 0.001)[-1] == 1  # never below one image


def test_long_tailed_indices_rank_by_count():
    labels = np.repeat(["a", "b", "c"], [50, 300, 120])
    idx = long_tailed_indices(labels, imbalance_ratio=0.1, max_per_class=100, random_state=0)
    kept = dict(zip(*np.unique(labels[idx], return_counts=True)))
    assert kept == {"b": 100, "c": 31, "a": 10}
    again = long_tailed_indices(labels, imbalance_ratio=0.1, max_per_class=100, random_state=0)
    np.testing.assert_array_equal(idx, again)


def test_long_tailed_keeps_all_when_class_is_small():
    labels = np.repeat([0, 1], [200, 3])
    idx = long_tailed_indices(labels, imbalance_ratio=0.5, max_per_class=100, random_state=0)
    assert (labels[idx] == 1).sum() == 3


@pytest.mark.parametrize("bad", [0, 1.5, -1])
def test_long_tailed_counts_rejects_bad_ratio(bad):
    with pytest.raises(ValueError, match="imbalance_ratio"):
        long_tailed_counts(3, bad)
