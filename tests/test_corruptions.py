"""The corruptions registry (corruptions.py) and evaluate.py's use of it: a corruption
registered here, and nowhere else, adds its tables, runs.csv columns and
corruptions.csv rows, each checked against a direct computation; corrupted test
sets depend on (seed, image index) alone; an unknown name is a one-line error."""

import csv
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from conftest import fashion_part

from playing_distraction import corruptions, evaluation, robustness
from playing_distraction.cli import evaluate_main, train_main
from playing_distraction.corruptions import (CORRUPTIONS, RANDOM_ERASING, Corruption,
                                             corrupted_batches, register)
from playing_distraction.errors import UserError
from playing_distraction.layouts import write_fashion_mnist
from playing_distraction.occluders import load_occluders, make_patterns, occlude_numpy, render
from playing_distraction.runs import load_run

EVALUATE = str(Path(__file__).resolve().parent.parent / "evaluate.py")
SHIPPED = load_occluders()
FRACTIONS = {"half": 0.5, "quarter": 0.25}
TOY_FILES = {f"left_blank_{setting}.{suffix}" for setting in FRACTIONS
             for suffix in ("md", "tex", "csv")}


def blank_left(images, indices, seed, fraction):
    """The toy corruption: the left ``fraction`` of each image set to one gray level
    drawn from (seed, image index)."""
    blanked = np.array(images, np.float32, copy=True)
    columns = round(fraction * blanked.shape[2])
    for image, index in zip(blanked, indices):
        image[:, :columns] = np.random.default_rng([seed, int(index)]).random()
    return blanked


@pytest.fixture
def left_blank():
    """The toy corruption, registered for one test only."""
    corruption = register(Corruption(
        name="left_blank", title="Test metrics with the left {setting} of every image blanked",
        settings=FRACTIONS, corrupt=blank_left))
    yield corruption
    del CORRUPTIONS["left_blank"]


def expected_blanked(images, seed, fraction):
    """``blank_left`` computed another way: a whole-set mask and one gray per image."""
    grays = np.array([np.random.default_rng([seed, k]).random() for k in range(len(images))])
    left = np.arange(images.shape[2]) < round(fraction * images.shape[2])
    return np.where(left[None, None, :, None], grays[:, None, None, None],
                    images).astype(np.float32)


# ------------------------------------------------------------------ the registry


def test_random_erasing_is_the_one_default_with_todays_table_and_column():
    assert corruptions.DEFAULT == ("random_erasing",)
    assert CORRUPTIONS["random_erasing"] is RANDOM_ERASING is corruptions.get("random_erasing")
    assert list(RANDOM_ERASING.settings) == ["one_region"]
    assert RANDOM_ERASING.table_stem("one_region") == "robustness"
    assert RANDOM_ERASING.accuracy_column("one_region") == "erased_accuracy"
    assert RANDOM_ERASING.table_title("one_region") == (
        "Test metrics with one random region erased per image (Random Erasing)")
    # The entry is robustness.erase with the paper's area and aspect ratio.
    images = np.random.default_rng(0).random((5, 30, 20, 3), dtype=np.float32)
    indices = np.arange(10, 15)
    np.testing.assert_array_equal(RANDOM_ERASING.apply(images, indices, 4, "one_region"),
                                  robustness.erase(images, indices, 4))


def test_occlusion_is_registered_with_the_paper_s_24_patterns_but_not_a_default():
    occlusion = corruptions.get("occlusion")
    assert occlusion is corruptions.OCCLUSION and "occlusion" not in corruptions.DEFAULT
    patterns = make_patterns(SHIPPED)
    assert list(occlusion.settings) == [pattern.name for pattern in patterns]
    assert [occlusion.settings[p.name]["pattern"] for p in patterns] == patterns
    assert occlusion.summary is not None


def test_occlusion_pastes_one_pattern_on_every_image_whatever_the_seed_and_index():
    images = np.random.default_rng(3).random((4, 36, 28, 3), dtype=np.float32)
    occlusion = corruptions.occlusion_corruption(SHIPPED, ratios=(0.1,), random_positions=1,
                                                 seed=7)
    assert list(occlusion.settings) == ["r10-centre-hand", "r10-random1-hand",
                                        "r10-centre-leaf", "r10-random1-leaf",
                                        "r10-centre-tile", "r10-random1-tile"]
    for setting, parameters in occlusion.settings.items():
        rgb, mask = render(parameters["pattern"], SHIPPED, 36, 28)
        expected = occlude_numpy(images, rgb, mask)
        np.testing.assert_array_equal(occlusion.apply(images, [0, 1, 2, 3], 0, setting), expected)
        np.testing.assert_array_equal(occlusion.apply(images, [9, 5, 4, 8], 11, setting),
                                      expected)
        assert mask.sum() > 0 and np.all(expected[:, mask] == rgb[mask])
    random = occlusion.settings["r10-random1-leaf"]["pattern"].centre
    assert random == tuple(np.random.default_rng([7, 1, 0]).random((1, 2))[0])


@pytest.mark.parametrize("kwargs, message", [
    ({"ratios": (0.3, 1.2)}, "--occlusion-ratios must be in (0, 1), got 1.2"),
    ({"random_positions": -2}, "--random-positions must be 0 or more, got -2"),
    ({"seed": -1}, "--pattern-seed must be 0 or more, got -1"),
])
def test_occlusion_corruption_names_the_bad_flag(kwargs, message):
    with pytest.raises(ValueError) as error:
        corruptions.occlusion_corruption(SHIPPED, **kwargs)
    assert str(error.value) == message


def test_default_names_of_a_new_corruption_come_from_the_entry(left_blank):
    assert corruptions.get("left_blank") is left_blank
    assert [left_blank.table_stem(s) for s in FRACTIONS] == ["left_blank_half",
                                                              "left_blank_quarter"]
    assert [left_blank.accuracy_column(s) for s in FRACTIONS] == [
        "left_blank_half_accuracy", "left_blank_quarter_accuracy"]
    assert left_blank.table_title("half") == "Test metrics with the left half of every image blanked"


def test_an_unknown_name_is_a_one_line_user_error_naming_the_choices():
    with pytest.raises(UserError) as error:
        corruptions.get("occluders")
    assert str(error.value) == ("unknown corruption 'occluders'; choose from random_erasing, "
                                "occlusion")


def test_evaluate_models_refuses_an_unknown_corruption_before_any_work():
    # No method at all: the name is checked before anything is loaded.
    with pytest.raises(UserError, match="unknown corruption 'nope'"):
        evaluation.evaluate_models([], 0, corruptions=["random_erasing", "nope"])


def toy(**changes):
    fields = dict(name="toy", title="Toy {setting}", settings={"a": 1}, corrupt=blank_left)
    return Corruption(**(fields | changes))


@pytest.mark.parametrize("corruption, message", [
    (toy(name="random_erasing"), "a corruption named random_erasing is already registered"),
    (toy(name="two words"), "must be letters, digits, _ or -: ['two words']"),
    (toy(settings={"10%": 0.1}), "must be letters, digits, _ or -: ['10%']"),
    (toy(settings={}), "corruption toy has no setting"),
    (toy(stem="robustness"), "corruption toy: table robustness is not unique"),
    (toy(stem="inspection"), "corruption toy: table inspection is not unique"),
    (toy(stem="{name}", settings={"a": 1, "b": 2}), "corruption toy: table toy is not unique"),
    (toy(column="erased_accuracy"), "runs.csv column erased_accuracy is not unique"),
])
def test_register_refuses_clashing_or_unsafe_names(corruption, message):
    before = dict(CORRUPTIONS)
    try:
        with pytest.raises(ValueError) as error:
            register(corruption)
        assert message in str(error.value)
        assert CORRUPTIONS == before
    finally:  # a wrong registration must not leak into other tests
        CORRUPTIONS.clear()
        CORRUPTIONS.update(before)


def test_a_corruption_that_changes_the_shape_is_refused():
    crop = toy(corrupt=lambda images, indices, seed, setting: images[:, 1:])
    with pytest.raises(ValueError, match=r"changed the batch shape \(2, 8, 8, 3\) to "
                                         r"\(2, 7, 8, 3\)"):
        crop.apply(np.zeros((2, 8, 8, 3), np.float32), [0, 1], 0, "a")


# ------------------------------------------------------------------ determinism


def test_every_registered_corrupted_set_depends_on_seed_and_index_only(left_blank):
    rng = np.random.default_rng(2)
    prepared = rng.integers(0, 256, (17, 24, 24, 3)).astype(np.uint8)
    original = prepared.copy()
    scaled = prepared.astype(np.float32) / 255.0
    checked = []
    for corruption in CORRUPTIONS.values():
        for setting in corruption.settings:
            whole = np.concatenate(list(corrupted_batches(corruption, setting, prepared, 17, 9)))
            assert whole.shape == prepared.shape and whole.dtype == np.float32
            assert 0.0 <= whole.min() and whole.max() <= 1.0
            assert np.mean([not np.array_equal(a, b) for a, b in zip(whole, scaled)]) > 0.9
            for batch_size in (1, 3, 7):
                batches = list(corrupted_batches(corruption, setting, prepared, batch_size, 9))
                assert [len(batch) for batch in batches] == [
                    min(batch_size, 17 - start) for start in range(0, 17, batch_size)]
                np.testing.assert_array_equal(np.concatenate(batches), whole)
            # An image corrupted alone or among others, in any order: the same result.
            order = rng.permutation(17)
            np.testing.assert_array_equal(
                corruption.apply(scaled[order], order, 9, setting), whole[order])
            np.testing.assert_array_equal(prepared, original)
            checked.append((corruption.name, setting))
    assert checked == [("random_erasing", "one_region"),
                       *(("occlusion", pattern.name) for pattern in make_patterns(SHIPPED)),
                       ("left_blank", "half"), ("left_blank", "quarter")]
    np.testing.assert_array_equal(
        np.concatenate(list(corrupted_batches(left_blank, "quarter", prepared, 5, 9))),
        expected_blanked(scaled, 9, 0.25))


# ------------------------------------------------------------------ with saved models


def fashion_parts(seed=0):
    """12 train and 4 test images per class, class-dependent brightness."""
    rng = np.random.default_rng(seed)

    return fashion_part(rng, 12), fashion_part(rng, 4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two baseline runs and one 0-occlusion run of one epoch: (baseline, 0-occlusion)."""
    root = tmp_path_factory.mktemp("corruptions")
    write_fashion_mnist(root / "fmnist", *fashion_parts())
    runs = {}
    for occlusion, repeats in (("none", 2), ("zero", 1)):
        assert train_main(["--dataset", "fashion-mnist", "--data-dir", str(root / "fmnist"),
                           "--epochs", "1", "--learning-rate", "0.0003", "--batch-size", "16",
                           "--verbose", "0", "--probability", "0.5", "--occlusion", occlusion,
                           "--repeats", str(repeats), "--out-dir", str(root / "runs")]) == 0
        runs[occlusion] = [root / "runs" / f"fashion-mnist-{occlusion}-small_cnn-seed{seed}"
                           for seed in range(repeats)]
    return runs["none"], runs["zero"]


def test_corrupted_probabilities_do_not_depend_on_the_batch_size(trained, left_blank):
    run = load_run(trained[0][0])
    model, prepared = evaluation.load_model(run), evaluation.load_test_images(run)
    clean = evaluation.corrupted_probabilities(
        model, prepared, toy(corrupt=lambda images, *_: images), "a", 0)
    np.testing.assert_allclose(clean, run.probabilities, atol=2e-6)
    for corruption in (RANDOM_ERASING, left_blank):
        for setting in corruption.settings:
            by_40 = evaluation.corrupted_probabilities(model, prepared, corruption, setting, 3,
                                                       batch_size=40)
            by_7 = evaluation.corrupted_probabilities(model, prepared, corruption, setting, 3,
                                                      batch_size=7)
            np.testing.assert_allclose(by_7, by_40, atol=1e-6)
            assert np.mean(np.abs(by_40 - clean).max(axis=1) > 1e-4) > 0.9


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def expected_cell(values):
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def test_a_registered_corruption_adds_its_tables_columns_and_rows_and_nothing_else(
        trained, left_blank, tmp_path, capsys):
    baselines, zeros = trained
    argv = ["--baseline", *map(str, baselines), "--method", *map(str, zeros),
            "--erase-seed", "5", "--figure-images", "1", "--no-faithfulness"]
    assert evaluate_main([*argv, "--out-dir", str(tmp_path / "before")]) == 0
    before_out = capsys.readouterr().out
    assert evaluate_main([*argv, "--corruptions", "random_erasing", "left_blank",
                          "--out-dir", str(tmp_path / "after")]) == 0
    after_out = capsys.readouterr().out
    before, after = tmp_path / "before", tmp_path / "after"

    # Random Erasing alone (the default) writes today's robustness table.
    assert (before / "robustness.md").read_text().startswith(
        "**Test metrics with one random region erased per image (Random Erasing)**\n")
    assert not any(before.glob("left_blank*"))
    # The new corruption adds its files; every other file is unchanged, bit for bit.
    written = {path.name for path in before.iterdir()}
    assert {path.name for path in after.iterdir()} == written | TOY_FILES
    for name in written - {"runs.csv", "corruptions.csv", "index.html"}:
        assert (after / name).read_bytes() == (before / name).read_bytes(), name
    # runs.csv gains one column per setting after erased_accuracy, nothing else.
    old_rows, new_rows = read_csv(before / "runs.csv"), read_csv(after / "runs.csv")
    metrics = ["accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted",
               "recall_weighted", "f1_weighted", "top5_accuracy"]
    cost = ["epochs_run", "best_epoch", "seconds_per_epoch"]
    assert list(old_rows[0]) == ["method", "run", "seed", *metrics, "erased_accuracy", *cost]
    assert list(new_rows[0]) == ["method", "run", "seed", *metrics, "erased_accuracy",
                                 "left_blank_half_accuracy", "left_blank_quarter_accuracy",
                                 *cost]
    assert [{key: value for key, value in row.items() if not key.startswith("left_blank")}
            for row in new_rows] == old_rows
    # corruptions.csv gains the rows of the new corruption, after the old ones.
    old_rows, new_rows = read_csv(before / "corruptions.csv"), read_csv(after / "corruptions.csv")
    assert new_rows[:len(old_rows)] == old_rows
    assert [(row["corruption"], row["setting"]) for row in old_rows] == [
        ("random_erasing", "one_region")] * 3
    toy_rows = new_rows[len(old_rows):]
    assert [(row["corruption"], row["setting"], row["method"], row["run"]) for row in toy_rows] == [
        ("left_blank", setting, method, str(path)) for setting in FRACTIONS
        for method, paths in (("baseline", baselines), ("0-occlusion", zeros)) for path in paths]
    # The printed tables: the new ones between robustness and inspection.
    robustness_md = (after / "robustness.md").read_text()
    new_tables = "".join((after / f"left_blank_{s}.md").read_text() + "\n" for s in FRACTIONS)
    assert after_out.replace(new_tables, "", 1).replace(
        "robustness, left_blank_half, left_blank_quarter, robustness_by_area, inspection",
        "robustness, robustness_by_area, inspection"
    ).replace(str(after), str(before)) == before_out
    assert robustness_md + "\n" + new_tables in after_out
    assert after_out.splitlines()[-1] == (
        f"tables written to {after}/: metrics, per_class_tpr, cost, robustness, "
        "left_blank_half, left_blank_quarter, robustness_by_area, inspection (.md, .tex, "
        ".csv), runs.csv, corruptions.csv, confusion_<method>.csv, gradcam.png, "
        "robustness_by_area.png, curves.png, index.html")

    # The numbers: the saved models on the blanked test images, scored by scikit-learn.
    runs_csv = {row["run"]: row for row in read_csv(after / "runs.csv")}
    for setting, fraction in FRACTIONS.items():
        accuracy = {}
        table = {row["Metric"]: row for row in read_csv(after / f"left_blank_{setting}.csv")}
        assert (after / f"left_blank_{setting}.md").read_text().startswith(
            f"**Test metrics with the left {setting} of every image blanked**\n")
        for method, paths in (("baseline", baselines), ("0-occlusion", zeros)):
            accuracy[method] = []
            for path in paths:
                run = load_run(path)
                prepared = evaluation.load_test_images(run)
                images = expected_blanked(np.asarray(prepared.images, np.float32) / 255.0, 5,
                                         fraction)
                model = keras.models.load_model(path / "model.keras")
                predictions = model.predict(images, verbose=0).argmax(axis=1)
                assert np.mean(predictions != run.probabilities.argmax(axis=1)) > 0.1
                value = accuracy_score(prepared.labels, predictions)
                accuracy[method].append(value)
                assert float(runs_csv[str(path)][f"left_blank_{setting}_accuracy"]) == \
                    pytest.approx(value)
                row = next(row for row in toy_rows
                           if row["setting"] == setting and row["run"] == str(path))
                assert float(row["accuracy"]) == pytest.approx(value)
                assert float(row["f1_macro"]) == pytest.approx(f1_score(
                    prepared.labels, predictions, labels=range(10), average="macro",
                    zero_division=0))
                assert row["seed"] == str(run.seed)
            assert table["Accuracy"][method] == expected_cell(accuracy[method])
        assert table["p-value (paired t-test on accuracy vs baseline)"]["0-occlusion"] == "n/a"


def test_a_corruption_alone_replaces_the_robustness_table(trained, left_blank, tmp_path,
                                                          capsys):
    out = tmp_path / "reports"
    assert evaluate_main(["--baseline", str(trained[0][0]), "--corruptions", "left_blank",
                          "--figure-images", "0", "--no-faithfulness",
                          "--out-dir", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"tables written to {out}/: metrics, per_class_tpr, cost, left_blank_half, "
        "left_blank_quarter, inspection (.md, .tex, .csv), runs.csv, corruptions.csv, "
        "confusion_<method>.csv, curves.png, index.html")
    assert not (out / "robustness.md").exists()
    assert "erased_accuracy" not in read_csv(out / "runs.csv")[0]
    assert {row["corruption"] for row in read_csv(out / "corruptions.csv")} == {"left_blank"}


def test_no_models_writes_no_corrupted_table_column_or_row(trained, left_blank, tmp_path,
                                                          capsys):
    out = tmp_path / "reports"
    assert evaluate_main(["--baseline", str(trained[0][0]), "--corruptions", "left_blank",
                          "--no-models", "--out-dir", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"tables written to {out}/: metrics, per_class_tpr, cost (.md, .tex, .csv), runs.csv, "
        "confusion_<method>.csv, curves.png, index.html")
    assert not any(out.glob("left_blank*")) and not (out / "corruptions.csv").exists()
    assert not [key for key in read_csv(out / "runs.csv")[0] if key.startswith("left_blank")]


# ------------------------------------------------------------------ evaluate.py


def test_the_script_refuses_an_unknown_corruption_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, EVALUATE, "--baseline", str(tmp_path / "run"),
                           "--corruptions", "random_erasing", "occluders"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == ("evaluate.py: error: argument --corruptions: invalid choice: "
                           "'occluders' (choose from 'random_erasing', 'occlusion')\n")
    assert done.stdout == "" and not (tmp_path / "reports").exists()
