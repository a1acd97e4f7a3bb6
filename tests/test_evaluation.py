"""Robustness and inspection of saved models (evaluation.py, evaluate.py): tiny runs
trained once on a Fashion-MNIST IDX folder, then checked against independent
computations."""

import csv
import dataclasses
import json
import shutil

import keras
import matplotlib.image
import numpy as np
import pytest

from playing_distraction import evaluation
from playing_distraction.cli import evaluate_main, train_main
from playing_distraction.errors import UserError
from playing_distraction.heatmaps import grad_cam
from playing_distraction.layouts import Part, write_fashion_mnist
from playing_distraction.pipeline import fit_image
from playing_distraction.reports import mean_std
from playing_distraction.runs import load_run
from playing_distraction.robustness import erase

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURE_CELL = 2.2 * 120  # inches per panel times dpi in gradcam_figure


def fashion_parts(seed=0):
    """The parts of conftest's ``fashion_dir``: 12 train and 4 test images per class."""
    rng = np.random.default_rng(seed)

    def part(per_class):
        labels = np.repeat(np.arange(10), per_class).astype(np.uint8)
        images = rng.integers(0, 256, (len(labels), 28, 28)).astype(np.uint8)
        images = (images // 4 + labels[:, None, None] * 18).astype(np.uint8)
        return Part(images, labels)

    return part(12), part(4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two baseline and two 0-occlusion runs of one epoch; returns (dataset folder,
    test part, baseline run folders, 0-occlusion run folders)."""
    root = tmp_path_factory.mktemp("evaluation")
    train, test = fashion_parts()
    data = root / "fmnist"
    write_fashion_mnist(data, train, test)
    out = root / "runs"
    runs = {}
    for occlusion in ("none", "zero"):
        assert train_main(["--dataset", "fashion-mnist", "--data-dir", str(data), "--epochs", "1",
                           "--learning-rate", "0.0003", "--batch-size", "16", "--verbose", "0",
                           "--probability", "0.5", "--occlusion", occlusion, "--repeats", "2",
                           "--out-dir", str(out)]) == 0
        runs[occlusion] = [out / f"fashion-mnist-{occlusion}-small_cnn-seed{seed}"
                           for seed in (0, 1)]
    return data, test, runs["none"], runs["zero"]


@pytest.fixture(scope="module")
def baseline(trained):
    """The first baseline run, its model and its test images."""
    run = load_run(trained[2][0])
    return run, evaluation.load_model(run), evaluation.load_test_images(run)


def clean_probabilities(model, prepared):
    logits = model(np.asarray(prepared.images, np.float32) / 255.0, training=False)
    return keras.ops.convert_to_numpy(keras.ops.softmax(logits)).astype(np.float64)


# ------------------------------------------------------------------ test images


def test_load_test_images_gives_the_run_test_set_in_prediction_order(trained, baseline):
    _, test, _, _ = trained
    run, model, prepared = baseline
    assert len(prepared) == len(run.labels) == 40
    assert [str(item) for item in prepared.items] == run.items
    np.testing.assert_array_equal(prepared.labels, run.labels)
    size = run.config["image_size"]
    assert prepared.images.shape == (40, size, size, 3) and prepared.images.dtype == np.uint8
    for k, item in enumerate(run.items):
        expected = fit_image(test.images[int(item)], size).numpy()
        np.testing.assert_array_equal(prepared.images[k], expected)
    # The saved model on these images gives the saved predictions, row by row.
    np.testing.assert_allclose(clean_probabilities(model, prepared), run.probabilities,
                               atol=2e-6)


def changed_test_part(test, change):
    rng = np.random.default_rng(99)
    if change == "fewer images":
        return test.take(np.arange(len(test) - 10))
    if change == "reordered":
        return test.take(rng.permutation(len(test)))
    # "new pixels": the same number of images and the same labels, other images.
    images = rng.integers(0, 256, test.images.shape).astype(np.uint8)
    return Part(images, test.labels)


@pytest.mark.parametrize("change", ["fewer images", "reordered", "new pixels"])
def test_load_test_images_refuses_a_changed_test_set(trained, baseline, tmp_path, change):
    data, test, _, _ = trained
    run = baseline[0]
    changed = tmp_path / "fmnist"
    write_fashion_mnist(changed, fashion_parts()[0], changed_test_part(test, change))
    moved = dataclasses.replace(run, config=run.config | {"data_path": str(changed)})
    with pytest.raises(UserError) as error:
        evaluation.load_test_images(moved)
    message = str(error.value)
    assert "\n" not in message and str(run.path) in message


# ------------------------------------------------------------------ robustness


def test_erased_probabilities_are_seeded_and_differ_from_the_clean_ones(baseline):
    run, model, prepared = baseline
    erased = evaluation.erased_probabilities(model, prepared, seed=0)
    assert erased.shape == (40, 10) and erased.dtype == np.float64
    np.testing.assert_allclose(erased.sum(axis=1), 1.0, atol=1e-6)
    assert erased.min() >= 0
    np.testing.assert_array_equal(evaluation.erased_probabilities(model, prepared, seed=0),
                                  erased)
    # The batch size does not change the erased set.
    np.testing.assert_allclose(evaluation.erased_probabilities(model, prepared, 0, batch_size=7),
                               erased, atol=1e-6)
    # Independently: the model on the test images erased by robustness.erase.
    images = erase(np.asarray(prepared.images, np.float32) / 255.0, np.arange(40), 0)
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(model(images, training=False)))
    np.testing.assert_allclose(erased, expected, atol=1e-6)

    other = evaluation.erased_probabilities(model, prepared, seed=1)
    assert np.mean(np.abs(other - erased).max(axis=1) > 1e-4) > 0.9
    clean = clean_probabilities(model, prepared)
    np.testing.assert_allclose(clean, run.probabilities, atol=2e-6)
    assert np.mean(np.abs(clean - erased).max(axis=1) > 1e-4) > 0.9


# ------------------------------------------------------------------ inspection


def test_heat_share_and_focus_area_match_independent_computations(baseline):
    run, model, prepared = baseline
    layer, threshold = run.config["cam_layer"], run.config["threshold"]
    assert threshold == 0.85
    share, focus = evaluation.heat_and_focus(model, prepared, layer, threshold)
    assert share.shape == focus.shape == (40,)

    images = np.asarray(prepared.images, np.float32) / 255.0
    heat = grad_cam(model, images, prepared.labels, layer).numpy()
    assert heat.shape == images.shape[:3]
    expected_share = np.mean(heat > 0.85, axis=(1, 2))
    # Batches of 32 and of 40 may differ by float noise in a pixel at the threshold.
    np.testing.assert_allclose(share, expected_share, atol=1.5 / heat[0].size)
    assert 0 < share.mean() < 0.5  # not trivially all or nothing

    feature_map = keras.Model(model.inputs, model.get_layer(layer).output)([images])
    feature_map = np.asarray(feature_map, np.float64)
    assert feature_map.ndim == 4 and feature_map.shape[1] > 1 and feature_map.shape[2] > 1
    channel_mean = feature_map.mean(axis=-1)
    above = channel_mean > channel_mean.mean(axis=(1, 2), keepdims=True)
    expected_focus = above.mean(axis=(1, 2))
    positions = feature_map.shape[1] * feature_map.shape[2]
    np.testing.assert_allclose(focus, expected_focus, atol=1.5 / positions)
    assert 0 < focus.min() and focus.max() < 1
    # Other batch sizes give the same numbers.
    again = evaluation.heat_and_focus(model, prepared, layer, threshold, batch_size=40)
    np.testing.assert_allclose(again[0], expected_share, atol=1e-9)
    np.testing.assert_allclose(again[1], expected_focus, atol=1e-9)
    # The threshold is the one given.
    lower, _ = evaluation.heat_and_focus(model, prepared, layer, 0.3, batch_size=40)
    np.testing.assert_allclose(lower, np.mean(heat > 0.3, axis=(1, 2)), atol=1.5 / heat[0].size)
    assert np.all(lower >= again[0]) and lower.mean() > again[0].mean()


def test_figure_indices_pick_different_classes_while_there_are_classes():
    labels = np.repeat(np.arange(10), 4)
    for count in (1, 4, 10):
        chosen = evaluation.figure_indices(labels, count, seed=0)
        assert len(chosen) == count and len(set(labels[chosen])) == count
    chosen = evaluation.figure_indices(labels, 13, seed=0)
    assert len(chosen) == len(set(chosen)) == 13
    assert set(labels[chosen]) == set(range(10))
    assert sorted(evaluation.figure_indices(labels, 60, seed=0)) == list(range(40))
    assert evaluation.figure_indices(labels, 0, seed=0) == []
    unbalanced = np.array([2, 2, 2, 2, 2, 7])
    chosen = evaluation.figure_indices(unbalanced, 3, seed=0)
    assert len(set(chosen)) == 3 and 5 in chosen  # the only image of class 7

    draws = [evaluation.figure_indices(labels, 4, seed) for seed in range(5)]
    assert draws[0] == evaluation.figure_indices(labels, 4, 0)
    assert len({tuple(draw) for draw in draws}) > 1


# ------------------------------------------------------------------ evaluate.py


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_evaluate_writes_robustness_inspection_and_the_gradcam_figure(trained, tmp_path,
                                                                      capsys):
    _, _, baselines, zeros = trained
    out = tmp_path / "reports"
    assert evaluate_main(["--baseline", *map(str, baselines), "--method", *map(str, zeros),
                          "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    for stem in ("metrics", "robustness", "inspection"):
        for suffix in ("md", "tex", "csv"):
            assert (out / f"{stem}.{suffix}").stat().st_size > 0
        assert (out / f"{stem}.md").read_text() in printed
    assert "**Test metrics with one random region erased per image" in printed
    assert "**Model inspection**" in printed
    assert "gradcam.png" in printed.splitlines()[-1]

    # The figure: a row per image, a column for the input and one per method.
    png = out / "gradcam.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(png)
    assert pixels.shape[:2] == (round(4 * FIGURE_CELL), round(3 * FIGURE_CELL))
    assert pixels[..., :3].std() > 0.05  # not blank

    # Per run: the erased accuracy is the accuracy on the seed-0 erased test set.
    rows = read_csv(out / "runs.csv")
    assert [row["run"] for row in rows] == [str(path) for path in [*baselines, *zeros]]
    for row in rows:
        run = load_run(row["run"])
        model, prepared = evaluation.load_model(run), evaluation.load_test_images(run)
        erased = evaluation.erased_probabilities(model, prepared, seed=0)
        assert float(row["erased_accuracy"]) == pytest.approx(
            np.mean(erased.argmax(axis=1) == prepared.labels))
        assert float(row["accuracy"]) == pytest.approx(
            np.mean(run.probabilities.argmax(axis=1) == run.labels))

    # The robustness table's accuracy cells are mean ± std of those per-run values.
    table = {row["Metric"]: row for row in read_csv(out / "robustness.csv")}
    for method in ("baseline", "0-occlusion"):
        values = [float(row["erased_accuracy"]) for row in rows if row["method"] == method]
        assert len(values) == 2
        assert table["Accuracy"][method] == mean_std(values, 3)
        assert table["Accuracy"][method].split(" ± ")[0] == f"{np.mean(values):.3f}"

    # The inspection cells pool every image of every run of a method.
    inspection = read_csv(out / "inspection.csv")
    assert len(inspection) == 2
    for method, paths in (("baseline", baselines), ("0-occlusion", zeros)):
        shares, focus = [], []
        for path in paths:
            run = load_run(path)
            share, coverage = evaluation.heat_and_focus(
                evaluation.load_model(run), evaluation.load_test_images(run),
                run.config["cam_layer"], run.config["threshold"])
            shares.append(share)
            focus.append(coverage)
        assert inspection[0][method] == mean_std(np.concatenate(shares), 3)
        assert inspection[1][method] == mean_std(np.concatenate(focus), 3)

    # Faithfulness (on by default): runs.csv holds each run's means of its saved model's
    # measures on its test images at its Grad-CAM layer, seeded by --erase-seed, and the
    # table's cells are their mean ± std, measure by measure.
    from playing_distraction.faithfulness import faithfulness_of_model
    from playing_distraction.faithfulness_reports import (MEASURES, FaithfulnessSettings,
                                                          run_values)

    assert "**Faithfulness of the Grad-CAM heat maps**" in printed
    assert (out / "faithfulness.png").read_bytes()[:8] == PNG_SIGNATURE
    faithfulness = read_csv(out / "faithfulness.csv")
    assert [row["Measure"].split(" (")[0] for row in faithfulness] == [
        "Deletion AUC", "Insertion AUC", "ROAD MoRF accuracy", "ROAD LeRF accuracy",
        "ROAD LeRF - MoRF"]
    assert [row["Method"] for row in read_csv(out / "faithfulness_p.csv")] == ["0-occlusion"]
    for method, paths in (("baseline", baselines), ("0-occlusion", zeros)):
        per_run = []
        for path in paths:
            run = load_run(path)
            prepared = evaluation.load_test_images(run)
            per_run.append(run_values(faithfulness_of_model(
                evaluation.load_model(run), prepared.images, prepared.labels,
                run.config["cam_layer"], FaithfulnessSettings(seed=0))))
            row = next(row for row in rows if row["run"] == str(path))
            for key, _, _ in MEASURES:
                assert float(row[f"faithfulness_{key}"]) == pytest.approx(per_run[-1][key])
        for number, (key, _, _) in enumerate(MEASURES):
            assert faithfulness[number][method] == mean_std([v[key] for v in per_run], 3)


def test_evaluate_figure_size_follows_figure_images_and_zero_means_none(trained, tmp_path,
                                                                         capsys):
    _, _, baselines, _ = trained
    out = tmp_path / "two"
    assert evaluate_main(["--baseline", *map(str, baselines), "--figure-images", "2",
                          "--out-dir", str(out)]) == 0
    pixels = matplotlib.image.imread(out / "gradcam.png")
    assert pixels.shape[:2] == (round(2 * FIGURE_CELL), round(2 * FIGURE_CELL))
    assert "gradcam.png" in capsys.readouterr().out

    out = tmp_path / "none"
    assert evaluate_main(["--baseline", *map(str, baselines[:1]), "--figure-images", "0",
                          "--out-dir", str(out)]) == 0
    assert not (out / "gradcam.png").exists()
    assert (out / "robustness.csv").exists() and (out / "inspection.csv").exists()
    assert "gradcam.png" not in capsys.readouterr().out


def test_evaluate_without_models_writes_neither_robustness_nor_inspection(trained, tmp_path,
                                                                          capsys):
    _, _, baselines, zeros = trained
    out = tmp_path / "reports"
    assert evaluate_main(["--baseline", *map(str, baselines), "--method", *map(str, zeros),
                          "--no-models", "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (out / "metrics.md").read_text() in printed
    assert "erased" not in printed and "Model inspection" not in printed
    written = {path.name for path in out.iterdir()}
    assert not {name for name in written
                if name.startswith(("robustness", "inspection", "gradcam"))}
    assert "erased_accuracy" not in read_csv(out / "runs.csv")[0]


def test_evaluate_fails_in_one_line_when_the_test_set_changed(trained, tmp_path, capsys):
    _, test, baselines, _ = trained
    changed = tmp_path / "fmnist"
    write_fashion_mnist(changed, fashion_parts()[0], changed_test_part(test, "fewer images"))
    copy = tmp_path / "run"
    shutil.copytree(baselines[0], copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(config | {"data_path": str(changed)}))
    out = tmp_path / "reports"
    assert evaluate_main(["--baseline", str(copy), "--out-dir", str(out)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith("evaluate.py: error: the test images of fashion-mnist are no longer")
    assert not (out / "robustness.csv").exists()


# ------------------------------------------------------------------ occlusion (Table 2)


GROUPS = ["r20-centre", "r20-random", "r10-centre", "r10-random"]


def test_evaluate_occlusion_writes_table_2_its_p_values_figure_and_columns(trained, tmp_path,
                                                                           capsys):
    from sklearn.metrics import accuracy_score

    from playing_distraction.occluders import (load_occluders, make_patterns, occlude_numpy,
                                               render)

    _, _, baselines, zeros = trained
    out = tmp_path / "reports"
    assert evaluate_main(["--baseline", *map(str, baselines), "--method", *map(str, zeros),
                          "--corruptions", "occlusion", "--random-positions", "1",
                          "--figure-images", "0", "--no-faithfulness",
                          "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    for stem in ("occlusion", "occlusion_p"):
        for suffix in ("md", "tex", "csv"):
            assert (out / f"{stem}.{suffix}").stat().st_size > 0
        assert (out / f"{stem}.md").read_text() in printed
    assert not (out / "robustness.md").exists() and not any(out.glob("occlusion_r*"))
    assert printed.splitlines()[-1] == (
        f"tables written to {out}/: metrics, per_class_tpr, cost, occlusion, occlusion_p, "
        "inspection (.md, .tex, .csv), runs.csv, corruptions.csv, confusion_<method>.csv, "
        "occlusion.png, curves.png, index.html")
    png = out / "occlusion.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert matplotlib.image.imread(png)[..., :3].std() > 0.05

    rows = read_csv(out / "runs.csv")
    columns = [f"occlusion_{group}_accuracy" for group in [*GROUPS, "avg"]]
    header = list(rows[0])
    assert header[header.index("top5_accuracy") + 1:][:5] == columns
    corrupted = read_csv(out / "corruptions.csv")
    patterns = make_patterns(load_occluders(), random_positions=1)
    assert len(patterns) == 12
    assert [(row["setting"], row["run"]) for row in corrupted] == [
        (pattern.name, str(path)) for pattern in patterns for path in [*baselines, *zeros]]

    # Independently: the baseline models on the test images occluded here, scored by
    # scikit-learn; a group pools the images of its patterns.
    occluders = load_occluders()
    by_run = {row["run"]: row for row in rows}
    centre, clean = [], []
    for path in baselines:
        run = load_run(path)
        model = keras.models.load_model(path / "model.keras")
        prepared = evaluation.load_test_images(run)
        images = np.asarray(prepared.images, np.float32) / 255.0
        height, width = images.shape[1:3]
        accuracies = {}
        for group in GROUPS:
            labels, predictions = [], []
            for pattern in patterns:
                if pattern.group == group:
                    occluded = occlude_numpy(images, *render(pattern, occluders, height, width))
                    predictions.append(model.predict(occluded, verbose=0).argmax(axis=1))
                    labels.append(prepared.labels)
            accuracies[group] = accuracy_score(np.concatenate(labels), np.concatenate(predictions))
            assert float(by_run[str(path)][f"occlusion_{group}_accuracy"]) == \
                pytest.approx(accuracies[group])
        assert float(by_run[str(path)]["occlusion_avg_accuracy"]) == pytest.approx(
            np.mean(list(accuracies.values())))
        centre.append(100 * accuracies["r20-centre"])
        clean.append(100 * accuracy_score(run.labels, run.probabilities.argmax(axis=1)))
        assert accuracies["r20-centre"] != pytest.approx(clean[-1] / 100) or \
            accuracies["r10-centre"] != pytest.approx(clean[-1] / 100)
    table = {row["Method"]: row for row in read_csv(out / "occlusion.csv")}
    assert table["baseline"]["20 % centre"] == mean_std(centre, 2)
    assert table["baseline"]["Clean"] == mean_std(clean, 2)
    p_values = read_csv(out / "occlusion_p.csv")
    assert [row["Method"] for row in p_values] == ["0-occlusion"]
    assert list(p_values[0]) == ["Method", "Clean", "20 % centre", "20 % random", "10 % centre",
                                 "10 % random", "Avg. over occlusions"]


@pytest.mark.parametrize("flags, code, message", [
    (["--corruptions", "occlusion", "--occluders", "{missing}"], 1,
     "occluder folder {missing} does not exist"),
    (["--corruptions", "occlusion", "--occluders", "{empty}"], 1,
     "occluder folder {empty} holds no image file"),
    (["--corruptions", "occlusion", "--occlusion-ratios", "0.2", "1.5"], 2,
     "--occlusion-ratios must be in (0, 1), got 1.5"),
    (["--corruptions", "occlusion", "--random-positions", "-1"], 2,
     "--random-positions must be 0 or more, got -1"),
    (["--corruptions", "occlusion", "--pattern-seed", "-4"], 2,
     "--pattern-seed must be 0 or more, got -4"),
    (["--random-positions", "2"], 2, "--random-positions applies to --corruptions occlusion only"),
    (["--deletion-step", "0"], 2, "--deletion-step must be a whole number of pixels >= 1, got 0"),
    (["--insertion-sigma", "-1"], 2, "--insertion-sigma must be a positive number, got -1.0"),
    (["--road-percentiles", "10", "100"], 2,
     "--road-percentiles must be one or more numbers in (0, 100), got 10.0 100.0"),
    (["--road-percentiles", "50", "20"], 2, "--road-percentiles must be strictly increasing"),
    (["--road-noise", "-0.1"], 2, "--road-noise must be 0 or more, got -0.1"),
    (["--no-models", "--road-noise", "0.1"], 2, "--road-noise does not apply with --no-models"),
    (["--no-faithfulness", "--deletion-step", "4"], 2,
     "--deletion-step does not apply with --no-faithfulness"),
])
def test_bad_occlusion_and_faithfulness_flags_fail_in_one_line_before_any_run_is_read(
        tmp_path, capsys, flags, code, message):
    (tmp_path / "empty").mkdir()
    paths = {"missing": tmp_path / "missing", "empty": tmp_path / "empty"}
    flags = [flag.format(**paths) for flag in flags]
    out = tmp_path / "reports"
    # The run folder does not exist: the flags are refused before it is read.
    assert evaluate_main(["--baseline", str(tmp_path / "no-run"), "--out-dir", str(out),
                          *flags]) == code
    captured = capsys.readouterr()
    assert captured.err.startswith(f"evaluate.py: error: {message.format(**paths)}")
    assert captured.err.count("\n") == 1 and captured.err.endswith("\n")
    assert captured.out == ""
    assert not out.exists()
