"""Index splits and sampling: oversampling, k-shot splits, event-disjoint splits."""

import numpy as np
import pytest

from playing_distraction.errors import UserError
from playing_distraction.layouts import Part
from playing_distraction.splits import k_shot_split, oversample, split_by_events


def labels_with_counts(counts, seed=0):
    """Labels 0, 1, ... with the given class counts, in a shuffled file order."""
    labels = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(labels)


def multiplicities(indices, length):
    return np.bincount(indices, minlength=length)


# ------------------------------------------------------------------ oversample


def test_oversample_tops_small_classes_up_to_the_kth_largest():
    labels = labels_with_counts([50, 40, 30, 20, 10, 5])
    result = oversample(labels, 4, seed=0)
    assert np.all(np.diff(result) >= 0)  # sorted
    np.testing.assert_array_equal(np.bincount(labels[result]), [50, 40, 30, 20, 20, 20])
    times = multiplicities(result, len(labels))
    assert np.all(times >= 1)  # every original image is still there
    # Classes at or above the target are untouched: each image exactly once.
    assert np.all(times[labels <= 3] == 1)
    # 10 -> 20: every member twice; 5 -> 20: every member exactly four times.
    assert np.all(times[labels == 4] == 2)
    assert np.all(times[labels == 5] == 4)


def test_oversample_draws_the_remainder_without_replacement():
    labels = labels_with_counts([30, 25, 20, 15, 8])
    result = oversample(labels, 3, seed=0)  # target 20
    times = multiplicities(result, len(labels))
    # 15 -> 20: five distinct members once more, the rest once.
    fifteen = times[labels == 3]
    assert sorted(fifteen.tolist()) == [1] * 10 + [2] * 5
    # 8 -> 20: one whole repeat (16) and four distinct extra members (three times).
    eight = times[labels == 4]
    assert sorted(eight.tolist()) == [2] * 4 + [3] * 4
    np.testing.assert_array_equal(np.bincount(labels[result]), [30, 25, 20, 20, 20])


def test_oversample_k0_is_identity_and_large_k_uses_the_smallest_class():
    labels = labels_with_counts([12, 7, 3])
    np.testing.assert_array_equal(oversample(labels, 0, seed=0), np.arange(len(labels)))
    np.testing.assert_array_equal(oversample(labels, 10, seed=0), np.arange(len(labels)))
    # k equal to the number of classes: the smallest class is the target, too.
    np.testing.assert_array_equal(oversample(labels, 3, seed=0), np.arange(len(labels)))
    # k = 1: everything topped up to the largest class.
    np.testing.assert_array_equal(np.bincount(labels[oversample(labels, 1, seed=0)]),
                                  [12, 12, 12])


def test_oversample_is_seeded():
    labels = labels_with_counts([40, 30, 20, 15, 13, 11])
    first = oversample(labels, 3, seed=5)
    np.testing.assert_array_equal(first, oversample(labels, 3, seed=5))
    other = oversample(labels, 3, seed=6)
    assert len(other) == len(first)
    assert not np.array_equal(first, other)


def test_oversample_handles_absent_label_values():
    labels = np.array([0] * 9 + [3] * 3 + [7] * 6)
    result = oversample(labels, 1, seed=0)
    np.testing.assert_array_equal(np.bincount(labels[result])[[0, 3, 7]], [9, 9, 9])


# ------------------------------------------------------------------ k-shot


def test_k_shot_split_takes_k_validation_and_test_per_class():
    labels = labels_with_counts([20, 15, 31, 16, 25])
    train, validation, test = k_shot_split(labels, 5, seed=0)
    for indices, count in ((train, 5), (validation, 5), (test, 5)):
        np.testing.assert_array_equal(np.bincount(labels[indices], minlength=5), [count] * 5)
        assert np.all(np.diff(indices) > 0)  # sorted, no repeats
    assert not set(train) & set(validation)
    assert not set(train) & set(test)
    assert not set(validation) & set(test)

    train, validation, test = k_shot_split(labels, 1, seed=0, validation=2, test=3)
    for indices, count in ((train, 1), (validation, 2), (test, 3)):
        np.testing.assert_array_equal(np.bincount(labels[indices], minlength=5), [count] * 5)


def test_k_shot_split_is_seeded():
    labels = labels_with_counts([30, 30, 30])
    first = k_shot_split(labels, 5, seed=1)
    for a, b in zip(first, k_shot_split(labels, 5, seed=1)):
        np.testing.assert_array_equal(a, b)
    other = k_shot_split(labels, 5, seed=2)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_k_shot_split_rejects_a_class_with_too_few_images():
    labels = labels_with_counts([20, 20, 20, 14, 20])
    with pytest.raises(UserError, match=r"class 3\b"):
        k_shot_split(labels, 5, seed=0)
    # Exactly k + validation + test is enough.
    train, validation, test = k_shot_split(labels, 4, seed=0)
    assert (len(train), len(validation), len(test)) == (20, 25, 25)


# ------------------------------------------------------------------ events


def event_part(seed=0, num_classes=5, events_per_class=12):
    """Events of 3-8 images, one class each, plus a few events mixing two classes."""
    rng = np.random.default_rng(seed)
    labels, events = [], []
    for label in range(num_classes):
        for number in range(events_per_class):
            size = int(rng.integers(3, 9))
            labels += [label] * size
            events += [f"c{label}e{number}"] * size
    for number in range(4):
        labels += [number % num_classes] * 3 + [(number + 1) % num_classes] * 2
        events += [f"mixed{number}"] * 5
    order = rng.permutation(len(labels))
    labels = np.array(labels)[order]
    events = np.array(events)[order]
    paths = np.array([f"img{index:04d}.jpg" for index in range(len(labels))])
    return Part(None, labels, paths, events=events)


def test_split_by_events_is_event_disjoint_covering_and_near_the_fractions():
    part = event_part()
    splits = split_by_events(part, (0.7, 0.1, 0.2), seed=0)
    assert set(splits) == {"train", "validation", "test"}
    event_sets = {name: set(split.events.tolist()) for name, split in splits.items()}
    assert not event_sets["train"] & event_sets["validation"]
    assert not event_sets["train"] & event_sets["test"]
    assert not event_sets["validation"] & event_sets["test"]
    # Every image in exactly one split, with its own label and event.
    paths = np.concatenate([split.paths for split in splits.values()])
    assert sorted(paths.tolist()) == sorted(part.paths.tolist())
    lookup = {path: (label, event) for path, label, event
              in zip(part.paths, part.labels, part.events)}
    for split in splits.values():
        for path, label, event in zip(split.paths, split.labels, split.events):
            assert lookup[path] == (label, event)
    for name, fraction in (("train", 0.7), ("validation", 0.1), ("test", 0.2)):
        assert abs(len(splits[name]) / len(part) - fraction) < 0.04, name
    # Roughly class-stratified.
    totals = np.bincount(part.labels)
    for name, fraction in (("train", 0.7), ("test", 0.2)):
        shares = np.bincount(splits[name].labels, minlength=len(totals)) / totals
        assert np.all(np.abs(shares - fraction) < 0.12), (name, shares)
    assert np.all(np.bincount(splits["validation"].labels, minlength=len(totals)) > 0)


def test_split_by_events_is_seeded():
    part = event_part(seed=3)
    first = split_by_events(part, (0.7, 0.1, 0.2), seed=0)
    again = split_by_events(part, (0.7, 0.1, 0.2), seed=0)
    other = split_by_events(part, (0.7, 0.1, 0.2), seed=1)
    for name in first:
        np.testing.assert_array_equal(first[name].paths, again[name].paths)
    assert any(not np.array_equal(first[name].paths, other[name].paths) for name in first)


def test_split_by_events_without_validation():
    part = event_part(seed=1)
    splits = split_by_events(part, (0.8, 0.0, 0.2), seed=0)
    assert set(splits) == {"train", "test"}
    assert len(splits["train"]) + len(splits["test"]) == len(part)
    assert abs(len(splits["test"]) / len(part) - 0.2) < 0.04


def test_split_by_events_requires_every_event_id():
    part = event_part()
    events = part.events.copy()
    events[7] = ""
    with pytest.raises(UserError, match="event id"):
        split_by_events(Part(None, part.labels, part.paths, events=events),
                        (0.7, 0.1, 0.2), seed=0)


# ------------------------------------------------------------------ --train-per-class


class _Labels:
    def __init__(self, labels):
        self.labels = np.asarray(labels)


def test_train_per_class_cuts_every_class_to_the_same_pool_for_every_seed():
    from playing_distraction.splits import OfficialSplit

    labels = np.repeat(np.arange(4), [30, 50, 20, 40])
    np.random.default_rng(1).shuffle(labels)
    parts = {"train": _Labels(labels), "test": _Labels([0, 1])}
    pools = []
    for seed in (0, 1, 2):
        assigned = OfficialSplit(0.25, seed, 0, train_per_class=12).assign(parts)
        train, validation = assigned["train"][1], assigned["validation"][1]
        assert not set(train) & set(validation)
        pool = np.sort(np.concatenate([train, validation]))
        # 12 of every class, 3 of them (25 %) held out for validation, stratified.
        assert np.bincount(labels[pool]).tolist() == [12] * 4
        assert np.bincount(labels[validation]).tolist() == [3] * 4
        pools.append(pool)
    # The pool does not follow the seed (the validation split does).
    assert all(np.array_equal(pool, pools[0]) for pool in pools)
    assert not np.array_equal(OfficialSplit(0.25, 0, 0, 12).assign(parts)["validation"][1],
                              OfficialSplit(0.25, 1, 0, 12).assign(parts)["validation"][1])
    # Unset: every image.
    whole = OfficialSplit(0.25, 0).assign(parts)
    assert len(whole["train"][1]) + len(whole["validation"][1]) == len(labels)


def test_train_per_class_larger_than_a_class_is_one_line():
    from playing_distraction.splits import OfficialSplit

    parts = {"train": _Labels(np.repeat(np.arange(3), [10, 4, 10])), "test": _Labels([0])}
    with pytest.raises(UserError, match="--train-per-class 5: class 1 has only 4"):
        OfficialSplit(0.25, 0, 0, train_per_class=5).assign(parts)


def test_train_per_class_is_recorded_and_names_the_run():
    from playing_distraction.config import parse_config
    from playing_distraction.splits import OfficialSplit, split_of_run

    config = parse_config(["--train-per-class", "100"])
    assert config.default_run_name == "fashion-mnist-mini-n100-zero-small_cnn-seed0"
    split = OfficialSplit.from_config(config.to_dict())
    assert split.train_per_class == 100
    assert split_of_run({"split": split.to_dict()}) == split
    # A config.json written before the flag existed: every training image.
    old = {"kind": "official", "validation_fraction": 0.25, "seed": 0, "oversample": 0}
    assert split_of_run({"split": old}).train_per_class is None
    with pytest.raises(ValueError, match="--train-per-class must be positive"):
        parse_config(["--train-per-class", "0"])
