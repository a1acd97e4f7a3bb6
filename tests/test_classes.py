"""--classes (a subset of a dataset's classes, relabelled in the given order) and the
backbone weights files every run writes (``backbone.weights.h5``, ``save_backbone``,
``check_weights_file``). Expected labels are computed here with plain NumPy from the
raw labels, not by the code under test."""

import csv
import dataclasses
import hashlib
import json
import re

import h5py
import keras
import numpy as np
import pytest

from playing_distraction.backbones import (
    BACKBONE_ATTRIBUTE,
    BACKBONES,
    build_classifier,
    check_weights_file,
    get_backbone,
    save_backbone,
)
from playing_distraction.cli import evaluate_main, train_main
from playing_distraction.config import classes_tag, parse_config
from playing_distraction.datasets import load_dataset
from playing_distraction.errors import UserError
from playing_distraction.layouts import Dataset, Part, write_fashion_mnist

# Fashion-MNIST's class list, written out here (not imported from the code under test).
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


# ------------------------------------------------------------------ Dataset.subset

NAMES = ("ant", "bee", "cat", "dog", "eel")
RAW = {  # shuffled labels: relabelling must follow the given order, not sorting
    "train": [3, 0, 1, 4, 2, 0, 3, 2, 1, 4, 0, 3],
    "validation": [0, 1, 2, 3, 4, 3],
    "test": [2, 3, 0, 0, 4, 1, 3, 2],
}


def toy_part(labels, tag):
    """A part whose every field says which raw item it came from (its position)."""
    count = len(labels)
    positions = np.arange(count)
    return Part(
        images=np.repeat(positions.astype(np.uint8), 4).reshape(count, 2, 2),
        labels=np.asarray(labels, np.int64),
        paths=np.array([f"{tag}/{index}.png" for index in positions]),
        boxes=np.stack([positions, positions + 1, positions + 2, positions + 3], axis=1),
        events=np.array([f"{tag}-event{index}" for index in positions]),
        trim_bottom=3,
    )


def toy_dataset(validation=True, names=NAMES, raw=None):
    raw = RAW if raw is None else raw
    return Dataset("toy", tuple(names), toy_part(raw["train"], "train"),
                   toy_part(raw["test"], "test"),
                   toy_part(raw["validation"], "validation") if validation else None)


def expected_part(raw_labels, chosen):
    """(raw positions kept, new labels) for the raw class indices ``chosen``."""
    raw_labels = np.asarray(raw_labels)
    kept = np.flatnonzero(np.isin(raw_labels, chosen))
    new = np.array([chosen.index(label) for label in raw_labels[kept]], np.int64)
    return kept, new


def assert_part_is(part, raw_labels, chosen, tag):
    kept, new = expected_part(raw_labels, chosen)
    np.testing.assert_array_equal(part.labels, new)
    # Every field stays aligned with its label: the images encode their raw position.
    np.testing.assert_array_equal(part.images[:, 0, 0], kept)
    np.testing.assert_array_equal(part.paths, [f"{tag}/{index}.png" for index in kept])
    np.testing.assert_array_equal(part.boxes[:, 0], kept)
    np.testing.assert_array_equal(part.events, [f"{tag}-event{index}" for index in kept])
    assert part.trim_bottom == 3


def test_subset_relabels_in_the_given_order_and_filters_every_part_alike():
    data = toy_dataset()
    subset = data.subset(["dog", "ant", "cat"])
    chosen = [3, 0, 2]
    assert subset.name == "toy"
    assert subset.class_names == ("dog", "ant", "cat")
    assert subset.num_classes == 3
    assert subset.class_indices == (3, 0, 2)
    for name in ("train", "validation", "test"):
        assert_part_is(getattr(subset, name), RAW[name], chosen, name)
    assert set(subset.parts()) == {"train", "validation", "test"}
    # The whole dataset is left as it was.
    assert data.class_indices is None and data.class_names == NAMES
    for name in ("train", "validation", "test"):
        np.testing.assert_array_equal(getattr(data, name).labels, RAW[name])


def test_subset_of_two_classes_in_reverse_order():
    subset = toy_dataset().subset(["eel", "bee"])
    assert subset.class_indices == (4, 1)
    # eel (4) -> 0, bee (1) -> 1; the others are gone.
    np.testing.assert_array_equal(subset.train.labels, [1, 0, 1, 0])
    np.testing.assert_array_equal(subset.test.labels, [0, 1])
    np.testing.assert_array_equal(subset.validation.labels, [1, 0])


def test_subset_without_a_validation_part_keeps_none():
    subset = toy_dataset(validation=False).subset(["cat", "ant"])
    assert subset.validation is None
    assert set(subset.parts()) == {"train", "test"}
    assert_part_is(subset.test, RAW["test"], [2, 0], "test")


@pytest.mark.parametrize("classes", [
    ["dog", "ant", "cat"],
    [3, 0, 2],
    ["3", "0", "2"],
    ["dog", 0, "2"],
    [np.int64(3), "ant", "cat"],
], ids=["names", "ints", "digit-strings", "mixed", "numpy-int"])
def test_names_indices_and_a_mixture_give_the_same_subset(classes):
    subset = toy_dataset().subset(classes)
    assert subset.class_names == ("dog", "ant", "cat")
    assert subset.class_indices == (3, 0, 2)
    for name in ("train", "validation", "test"):
        assert_part_is(getattr(subset, name), RAW[name], [3, 0, 2], name)


def test_a_digit_string_that_is_a_class_name_is_matched_as_a_name_first():
    names = ("1", "0", "10", "x")
    data = toy_dataset(names=names, raw={"train": [0, 1, 2, 3, 3, 2, 1, 0],
                                         "validation": [0, 1, 2, 3], "test": [3, 2, 1, 0]})
    assert data.class_index("0") == 1 and data.class_index("1") == 0
    assert data.class_index("10") == 2
    assert data.class_index("2") == 2  # not a name: an index (of the class "10")
    assert data.class_index("3") == 3
    assert data.class_index(1) == 1  # an int is always an index

    subset = data.subset(["0", "1"])
    assert subset.class_names == ("0", "1") and subset.class_indices == (1, 0)
    assert_part_is(subset.train, [0, 1, 2, 3, 3, 2, 1, 0], [1, 0], "train")

    subset = data.subset(["10", "3"])  # a name, then an index
    assert subset.class_names == ("10", "x") and subset.class_indices == (2, 3)
    assert_part_is(subset.test, [3, 2, 1, 0], [2, 3], "test")

    # The recorded indices (ints, as config.json gives them back) name the same classes.
    again = data.subset(list(data.subset(["0", "1"]).class_indices))
    assert again.class_names == ("0", "1")

    with pytest.raises(UserError, match=r"^--classes: toy has no class '11'"):
        data.class_index("11")


def assert_lists_every_class(message, names):
    for index, name in enumerate(names):
        assert f"{index} {name!r}" in message, (index, name, message)


@pytest.mark.parametrize("unknown, shown", [
    ("yak", "'yak'"), ("5", "'5'"), ("Ant", "'Ant'"), ("-1", "'-1'"), ("²", "'²'"),
    (7, "'7'"),
])
def test_unknown_class_is_one_line_listing_every_valid_class(unknown, shown):
    data = toy_dataset()
    with pytest.raises(UserError) as info:
        data.subset(["ant", unknown])
    message = str(info.value)
    assert message.startswith("--classes") and "\n" not in message
    assert shown in message and "toy" in message
    assert_lists_every_class(message, NAMES)


@pytest.mark.parametrize("classes", [
    ["cat", "2"], ["cat", 2], [2, "cat"], ["cat", "cat"], ["2", 2], ["ant", "02", "cat"],
])
def test_a_class_given_twice_is_refused_even_by_name_and_index(classes):
    with pytest.raises(UserError) as info:
        toy_dataset().subset(classes)
    message = str(info.value)
    assert message.startswith("--classes") and "\n" not in message
    assert "'cat'" in message and "twice" in message


@pytest.mark.parametrize("part", ["train", "validation", "test"])
def test_a_part_left_empty_is_refused(part):
    raw = {name: list(labels) for name, labels in RAW.items()}
    # Without an image of dog (3) or eel (4) in this part.
    raw[part] = [label for label in raw[part] if label < 3]
    with pytest.raises(UserError) as info:
        toy_dataset(raw=raw).subset(["dog", "eel"])
    message = str(info.value)
    assert message.startswith("--classes") and "\n" not in message
    assert f"the {part} set of toy" in message
    # The same classes with one image left in that part are fine.
    raw[part].append(4)
    subset = toy_dataset(raw=raw).subset(["dog", "eel"])
    assert 4 - 3 in getattr(subset, part).labels


# ------------------------------------------------------------------ the config


def config_of(*flags):
    return parse_config(["--weights", "none", *flags])


def test_parse_config_keeps_the_order_of_classes():
    assert config_of("--classes", "b", "a").classes == ("b", "a")
    assert config_of("--classes", "Coat", "1", "T-shirt/top").classes == (
        "Coat", "1", "T-shirt/top")
    assert config_of().classes is None


@pytest.mark.parametrize("classes, words", [
    (["Coat"], ["two"]),
    (["Coat", "Coat"], ["'Coat'", "twice"]),
    (["a", "b", "a"], ["'a'", "twice"]),
])
def test_config_refuses_one_class_and_a_repeated_name(classes, words):
    with pytest.raises(ValueError) as info:
        config_of("--classes", *classes)
    message = str(info.value)
    assert message.startswith("--classes") and "\n" not in message
    for word in words:
        assert word in message


def test_classes_tag_short_index_lists_are_spelled_out():
    assert classes_tag([0, 2, 3, 4, 6]) == "c0.2.3.4.6"
    assert classes_tag((4, 1)) == "c4.1"
    # 24 characters: still spelled out; 25: a digest.
    assert classes_tag((0, 1, 10, 11, 12, 13, 14, 15, 16)) == "c0.1.10.11.12.13.14.15.16"
    assert re.fullmatch(r"c9-[0-9a-f]{6}", classes_tag((0, 10, 11, 12, 13, 14, 15, 16, 17)))


def test_classes_tag_long_lists_are_a_stable_digest_of_the_order():
    long = list(range(20))
    tag = classes_tag(long)
    assert re.fullmatch(r"c20-[0-9a-f]{6}", tag), tag
    assert classes_tag(list(range(20))) == tag
    assert classes_tag(long[::-1]) != tag
    assert classes_tag(long[:-1]) != tag and classes_tag(long[:-1]).startswith("c19-")


def test_classes_tag_of_names_is_a_digest_even_when_short():
    tag = classes_tag(("Coat", "Trouser"))
    assert re.fullmatch(r"c2-[0-9a-f]{6}", tag), tag
    assert classes_tag(("Trouser", "Coat")) != tag
    # Digit strings are not yet resolved (they may be names): a digest, not "c4.1".
    assert re.fullmatch(r"c2-[0-9a-f]{6}", classes_tag(("4", "1")))


def test_default_run_name_carries_the_classes():
    config = config_of("--occlusion", "none")
    assert config.default_run_name == "fashion-mnist-mini-none-small_cnn-seed0"
    resolved = dataclasses.replace(config, classes=(0, 2, 3, 4, 6))
    assert resolved.default_run_name == "fashion-mnist-mini-c0.2.3.4.6-none-small_cnn-seed0"
    named = config_of("--occlusion", "none", "--classes", "Coat", "Dress")
    assert re.fullmatch(r"fashion-mnist-mini-c2-[0-9a-f]{6}-none-small_cnn-seed0",
                        named.default_run_name), named.default_run_name


# ------------------------------------------------------------------ end to end


def fashion_part(rng, per_class):
    """per_class images of each of the 10 classes, in shuffled order, 28 px."""
    labels = rng.permutation(np.repeat(np.arange(10), per_class)).astype(np.uint8)
    images = rng.integers(0, 256, (len(labels), 28, 28)) // 4 + labels[:, None, None] * 18
    return Part(images.astype(np.uint8), labels)


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """A tiny Fashion-MNIST IDX folder: 20 train and 10 test images per class."""
    rng = np.random.default_rng(7)
    train, test = fashion_part(rng, 20), fashion_part(rng, 10)
    directory = tmp_path_factory.mktemp("classes") / "fmnist"
    write_fashion_mnist(directory, train, test)
    return directory, train, test


def test_load_dataset_applies_the_subset(fashion):
    directory, train, test = fashion
    data = load_dataset("fashion-mnist", directory, ["Coat", "1"])
    assert data.class_names == ("Coat", "Trouser") and data.class_indices == (4, 1)
    for part, raw in ((data.train, train), (data.test, test)):
        kept, new = expected_part(raw.labels, [4, 1])
        np.testing.assert_array_equal(part.labels, new)
        np.testing.assert_array_equal(part.images, raw.images[kept])
    assert load_dataset("fashion-mnist", directory).num_classes == 10


def read_predictions(run_dir):
    with open(run_dir / "predictions.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def class_runs(fashion, tmp_path_factory):
    """A 1-epoch baseline on --classes Coat 1, and a 0-occlusion run on the same classes
    spelled 4 Trouser that starts from the baseline's backbone.weights.h5."""
    directory, _, _ = fashion
    out = tmp_path_factory.mktemp("class_runs")
    common = ["--dataset", "fashion-mnist", "--data-dir", str(directory), "--out-dir",
              str(out), "--epochs", "1", "--batch-size", "8", "--verbose", "0"]
    assert train_main([*common, "--classes", "Coat", "1", "--weights", "none",
                       "--occlusion", "none"]) == 0
    baseline = out / "fashion-mnist-c4.1-none-small_cnn-seed0"
    assert baseline.is_dir(), sorted(path.name for path in out.iterdir())
    weights = baseline / "backbone.weights.h5"
    assert weights.is_file()
    assert train_main([*common, "--classes", "4", "Trouser", "--weights", str(weights),
                       "--occlusion", "zero", "--probability", "0.5"]) == 0
    method = out / "fashion-mnist-c4.1-zero-small_cnn-seed0"
    assert sorted(path.name for path in out.iterdir()) == sorted([baseline.name, method.name])
    return baseline, method


def test_a_class_subset_run_records_and_tests_on_those_classes(fashion, class_runs):
    _, train, test = fashion
    for run_dir in class_runs:
        config = json.loads((run_dir / "config.json").read_text())
        assert config["classes"] == [4, 1]
        assert config["class_names"] == ["Coat", "Trouser"]
        assert config["run_name"] == run_dir.name

        kept, expected = expected_part(test.labels, [4, 1])
        rows = read_predictions(run_dir)
        labels = np.array([int(row["label"]) for row in rows])
        np.testing.assert_array_equal(labels, expected)
        # Items keep their position in the official test file, not in the subset.
        np.testing.assert_array_equal([int(row["item"]) for row in rows], kept)
        assert set(labels) == {0, 1}
        assert {int(row["prediction"]) for row in rows} <= {0, 1}
        assert list(rows[0]) == ["item", "label", "prediction", "p0", "p1"]

        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["test_images"] == len(kept) == 20
        train_count = int(np.isin(train.labels, [4, 1]).sum())
        assert metrics["train_images"] + metrics["validation_images"] == train_count == 40
        assert (run_dir / "backbone.weights.h5").is_file()
        assert (run_dir / "model.keras").is_file()


def test_a_run_backbone_file_holds_the_trained_backbone_and_seeds_the_next_run(class_runs):
    baseline, method = class_runs
    weights = baseline / "backbone.weights.h5"
    with h5py.File(weights, "r") as handle:
        assert handle.attrs[BACKBONE_ATTRIBUTE] == "small_cnn"
    trained = keras.saving.load_model(baseline / "model.keras")
    rebuilt = build_classifier("small_cnn", 7, 32, weights=str(weights))
    assert_backbone_equal(trained, rebuilt)

    config = json.loads((method / "config.json").read_text())
    assert config["weights"] == str(weights)
    assert config["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert json.loads((baseline / "config.json").read_text())["weights_sha256"] is None


def test_evaluate_recreates_the_class_subset_test_set(class_runs, tmp_path, capsys):
    baseline, method = class_runs
    reports = tmp_path / "reports"
    code = evaluate_main(["--baseline", str(baseline), "--method", str(method),
                          "--figure-images", "0", "--out-dir", str(reports)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # The robustness test re-decoded the test images of the two classes and found
    # them to be those the runs were tested on (evaluation.load_test_images).
    assert (reports / "robustness.csv").is_file() and (reports / "inspection.csv").is_file()
    with open(reports / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["run"] for row in rows] == [str(baseline), str(method)]
    assert all(row["erased_accuracy"] != "" for row in rows)


# ------------------------------------------------------------------ bad input


def tagged_weights_file(path, backbone):
    """A small HDF5 file that says it holds ``backbone``."""
    with h5py.File(path, "w") as handle:
        handle.create_dataset("layers/conv2d/vars/0", data=np.zeros((3, 3, 3, 4), "float32"))
        handle.attrs[BACKBONE_ATTRIBUTE] = backbone
    return path


def no_empty_test_classes(tmp_path):
    """An IDX folder whose test part has no image of classes 8 and 9."""
    rng = np.random.default_rng(1)
    train = fashion_part(rng, 3)
    test = fashion_part(rng, 2)
    keep = test.labels < 8
    directory = tmp_path / "partial"
    write_fashion_mnist(directory, train, Part(test.images[keep], test.labels[keep]))
    return directory


@pytest.mark.parametrize("flags, code, words", [
    (["--classes", "Coat", "Hat"], 1, ["--classes", "'Hat'"]),
    (["--classes", "Coat", "10"], 1, ["--classes", "'10'"]),
    (["--classes", "Coat", "4"], 1, ["--classes", "'Coat'", "twice"]),
    (["--classes", "1", "Trouser"], 1, ["--classes", "'Trouser'", "twice"]),
    (["--classes", "Coat", "Coat"], 2, ["--classes", "'Coat'", "twice"]),
    (["--classes", "Coat"], 2, ["--classes", "two"]),
    (["--classes", "8", "9"], 1, ["--classes", "test set", "no image"]),
    (["--weights", "TAGGED"], 2, ["--weights", "resnet50", "small_cnn"]),
    (["--weights", "TEXT"], 2, ["--weights", "not a Keras weights file"]),
], ids=["unknown", "index-out-of-range", "name-and-index", "index-and-name", "name-twice",
        "one-class", "empty-test", "other-backbone", "not-hdf5"])
def test_bad_input_is_one_line_a_nonzero_exit_and_no_run(fashion, tmp_path, capsys,
                                                          flags, code, words):
    directory = fashion[0]
    if flags[-1] == "9":
        directory = no_empty_test_classes(tmp_path)
    if flags[-1] == "TAGGED":
        flags = ["--weights", str(tagged_weights_file(tmp_path / "resnet.weights.h5",
                                                       "resnet50"))]
    if flags[-1] == "TEXT":
        text = tmp_path / "notes.weights.h5"
        text.write_text("not weights\n")
        flags = ["--weights", str(text)]
    if "--weights" not in flags:
        flags = [*flags, "--weights", "none"]
    out = tmp_path / "out"
    capsys.readouterr()
    result = train_main(["--dataset", "fashion-mnist", "--data-dir", str(directory),
                         "--out-dir", str(out), "--epochs", "1", "--verbose", "0", *flags])
    err = capsys.readouterr().err
    assert result == code, err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(f"train.py: error: {words[0]}"), err
    for word in words[1:]:
        assert word in err, err
    if flags[1] == "Hat":
        assert_lists_every_class(err, FASHION)
    assert not out.exists()


def test_build_classifier_turns_weights_file_problems_into_one_line(tmp_path):
    tagged = tagged_weights_file(tmp_path / "tagged.weights.h5", "resnet50")
    text = tmp_path / "text.weights.h5"
    text.write_text("hello")
    for path, words in ((tagged, ["resnet50", "small_cnn"]),
                        (text, ["not a Keras weights file"]),
                        (tmp_path / "missing.weights.h5", ["no such file"])):
        with pytest.raises(UserError) as info:
            build_classifier("small_cnn", 3, 32, weights=str(path))
        message = str(info.value)
        assert message.startswith(f"--weights {path}") and "\n" not in message, message
        for word in words:
            assert word in message, message


def test_check_weights_file_accepts_untagged_and_matching_files(tmp_path):
    spec = get_backbone("small_cnn")
    untagged = tmp_path / "plain.weights.h5"
    with h5py.File(untagged, "w") as handle:
        handle.create_dataset("x", data=np.zeros(3))
    assert check_weights_file(spec, str(untagged)) is None
    matching = tagged_weights_file(tmp_path / "small.weights.h5", "small_cnn")
    assert check_weights_file(spec, str(matching)) is None
    assert check_weights_file(spec, "none") is None
    assert check_weights_file(get_backbone("resnet50"), "imagenet") is None


# ------------------------------------------------------------------ save_backbone

SIZES = {"inception_v3": 75}  # the others build at 32 px


def randomize(model, seed):
    """Random values in every weight but the preprocessing's (positive variances);
    returns those of the backbone layers (all but the preprocessing and the head)."""
    rng = np.random.default_rng(seed)
    backbone = []
    for layer in model.layers:
        if layer.name == "preprocess" or not layer.weights:
            continue
        values = []
        for variable in layer.weights:
            value = rng.normal(size=variable.shape).astype("float32")
            values.append(np.abs(value) + 0.5 if "variance" in variable.path else value)
        layer.set_weights(values)
        if layer.name != "logits":
            backbone.extend(values)
    return backbone


def backbone_weights(model):
    """Every weight but the head's (the final logits layer), in layer order."""
    assert model.layers[-1].name == "logits"
    return [value for layer in model.layers[:-1] for value in layer.get_weights()]


def assert_backbone_equal(source, target):
    ours, theirs = backbone_weights(source), backbone_weights(target)
    assert len(ours) == len(theirs) > 0
    for mine, loaded in zip(ours, theirs):
        np.testing.assert_array_equal(loaded, mine)


def element_count(path):
    sizes = []
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda name, item: sizes.append(item.size)
                          if isinstance(item, h5py.Dataset) else None)
    return sum(sizes)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_save_backbone_round_trip(name, tmp_path):
    size = SIZES.get(name, 32)
    keras.utils.set_random_seed(0)
    source = build_classifier(name, 3, size, weights="none")
    drawn = randomize(source, seed=1)
    path = tmp_path / f"{name}.weights.h5"
    save_backbone(source, name, str(path))

    with h5py.File(path, "r") as handle:
        assert handle.attrs[BACKBONE_ATTRIBUTE] == name
    # Without the head: as many numbers as the backbone holds (preprocessing aside).
    head = source.get_layer("logits").count_params()
    preprocess = source.get_layer("preprocess").count_params()
    assert element_count(path) == source.count_params() - head - preprocess

    keras.utils.set_random_seed(2)
    loaded = build_classifier(name, 3, size, weights=str(path))
    assert_backbone_equal(source, loaded)
    # The values drawn here, not an initialiser's, in the new classifier's backbone.
    values = [value for layer in loaded.layers if layer.name not in ("preprocess", "logits")
              for value in layer.get_weights()]
    assert len(values) == len(drawn)
    for value, expected in zip(values, drawn):
        np.testing.assert_array_equal(value, expected)

    other = "resnet50" if name == "small_cnn" else "small_cnn"
    with pytest.raises(ValueError) as info:
        check_weights_file(get_backbone(other), str(path))
    message = str(info.value)
    assert name in message and other in message and "\n" not in message
    assert check_weights_file(get_backbone(name), str(path)) is None
    with pytest.raises(UserError, match=re.escape(f"holds a {name} backbone, not {other}")):
        build_classifier(other, 3, SIZES.get(other, 32), weights=str(path))
