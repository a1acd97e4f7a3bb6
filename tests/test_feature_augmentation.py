"""Deep feature augmentation for occluded images (PAPERS.md §5): the scheme's step and
bank against hand-written references, the pair sets, and the method end to end."""

import csv
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_classifier, structured_images
from test_resume import history_rows, interrupt_after

from playing_distraction.cli import train_main
from playing_distraction.heatmaps import linear_head
from playing_distraction.schemes import FeatureAugmentationModel

NUM_CLASSES, SIZE = 3, 32


def pooled_model(classifier):
    """An independent way to the pooled features: the model up to the layer whose
    output the last Dense layer takes."""
    dense = classifier.layers[-1]
    assert isinstance(dense, keras.layers.Dense)
    return keras.Model(classifier.inputs, classifier.layers[-2].output)


def scheme(bank_size=6, **kwargs):
    classifier = make_classifier(NUM_CLASSES, SIZE)
    return classifier, FeatureAugmentationModel(classifier, bank_size, seed=0, **kwargs)


def test_the_bank_equals_a_numpy_recomputation_from_the_pooled_features():
    classifier, model = scheme(bank_size=6)
    clean = (structured_images(2, SIZE, seed=1) * 255).astype(np.uint8)
    occluded = (structured_images(6, SIZE, seed=2) * 255).astype(np.uint8)
    pair_of = np.array([0, 0, 0, 1, 1, 1])
    before = [np.array(weight) for weight in classifier.weights]
    model.refresh_bank(clean, occluded, pair_of, batch_size=4)
    features = pooled_model(classifier).predict(
        np.concatenate([clean, occluded]).astype(np.float32) / 255.0, verbose=0)
    expected = features[2:] - features[:2][pair_of]
    np.testing.assert_allclose(np.array(model.bank), expected, rtol=1e-5, atol=1e-6)
    assert np.abs(expected).max() > 0.01  # occlusion moved the features
    # Inference mode: no weight and no BatchNormalization statistic changed.
    for old, weight in zip(before, classifier.weights):
        np.testing.assert_array_equal(old, np.array(weight))


def test_a_bank_of_another_shape_is_refused():
    _, model = scheme(bank_size=5)
    images = np.zeros((2, SIZE, SIZE, 3), np.uint8)
    with pytest.raises(ValueError, match="bank of shape"):
        model.refresh_bank(images, np.zeros((6, SIZE, SIZE, 3), np.uint8), np.zeros(6, int))


def with_bank(model, rows):
    model.bank.assign(np.asarray(rows, np.float32))


def test_alpha_zero_leaves_the_logits_of_plain_training():
    classifier, model = scheme(bank_size=4, dv_probability=0.0)
    with_bank(model, np.random.default_rng(0).normal(size=(4, model.bank.shape[1])) * 10)
    images = structured_images(8, SIZE)
    outputs = model(images, training=True)
    np.testing.assert_array_equal(np.array(outputs["logits"]),
                                  np.array(classifier(images, training=True)))
    assert float(np.sum(outputs["shifted"])) == 0.0


def test_alpha_one_shifts_every_feature_by_beta_times_a_bank_vector():
    classifier, model = scheme(bank_size=3, dv_probability=1.0, dv_scale=2.5)
    rows = np.random.default_rng(1).normal(size=(3, model.bank.shape[1])).astype(np.float32)
    with_bank(model, rows)
    images = structured_images(8, SIZE)
    outputs = model(images, training=True)
    pooled = pooled_model(classifier)(images, training=True).numpy()
    kernel, bias = (np.array(weight) for weight in classifier.layers[-1].weights)
    candidates = np.stack([(pooled + 2.5 * row) @ kernel + bias for row in rows], axis=1)
    logits = np.array(outputs["logits"])
    gaps = np.abs(candidates - logits[:, None, :]).max(axis=-1)  # (images, bank rows)
    assert np.all(gaps.min(axis=1) < 1e-4), "each image is shifted by one bank vector"
    assert np.all(np.abs(logits - (pooled @ kernel + bias)).max(axis=-1) > 1e-3)
    assert float(np.mean(outputs["shifted"])) == 1.0
    # The draws cover the bank (8 images, 3 vectors).
    assert len(set(gaps.argmin(axis=1))) > 1


def test_the_gradient_flows_only_through_the_training_flow():
    """One SGD step equals a hand-written step in which the difference vector is a
    constant added to the pooled features: nothing flows into the bank or into the
    pair images it came from."""
    classifier, model = scheme(bank_size=1, dv_probability=1.0, dv_scale=0.5)
    vector = np.random.default_rng(2).normal(size=(1, model.bank.shape[1])).astype(np.float32)
    with_bank(model, vector)
    images = structured_images(8, SIZE, seed=3)
    labels = np.arange(8) % NUM_CLASSES

    reference = make_classifier(NUM_CLASSES, SIZE)
    reference.set_weights(classifier.get_weights())
    features = pooled_model(reference)
    dense = reference.layers[-1]
    with tf.GradientTape() as tape:
        logits = dense(features(images, training=True) + 0.5 * vector)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    gradients = tape.gradient(loss, reference.trainable_weights)
    expected = {weight.path: np.array(weight) - 0.1 * np.array(gradient)
                for weight, gradient in zip(reference.trainable_weights, gradients)}

    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_on_batch(images, labels)
    for weight in classifier.trainable_weights:
        np.testing.assert_allclose(np.array(weight), expected[weight.path], rtol=1e-4,
                                   atol=1e-6)
    np.testing.assert_array_equal(np.array(model.bank), vector)
    assert not model.bank.trainable
    assert all(weight is not model.bank for weight in model.trainable_weights)


def test_the_bank_is_a_variable_of_the_model_so_checkpoints_hold_it():
    _, model = scheme(bank_size=2)
    assert any(variable is model.bank for variable in model.variables)
    assert linear_head(model.classifier) is not None


# ------------------------------------------------------------------ end to end


def train(fashion_dir, out, *argv):
    return train_main(["--dataset", "fashion-mnist", "--data-dir", str(fashion_dir),
                       "--epochs", "2", "--batch-size", "8", "--verbose", "0",
                       "--out-dir", str(out), "--jit-compile", "off", *argv])


def weights_of(run):
    return keras.models.load_model(run / "model.keras").get_weights()


def test_alpha_zero_is_bit_identical_to_plain_training(fashion_dir, tmp_path):
    classes = ("--classes", "0", "1", "2")
    assert train(fashion_dir, tmp_path, *classes, "--occlusion", "none") == 0
    assert train(fashion_dir, tmp_path, *classes, "--method", "feataug",
                 "--dv-probability", "0", "--random-positions", "1") == 0
    plain = tmp_path / "fashion-mnist-c0.1.2-none-small_cnn-seed0"
    ours = tmp_path / "fashion-mnist-c0.1.2-feataug-incl-a0-small_cnn-seed0"
    assert (ours / "predictions.csv").read_text() == (plain / "predictions.csv").read_text()
    for mine, theirs in zip(weights_of(ours), weights_of(plain), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert [{key: row[key] for key in ("accuracy", "loss", "val_accuracy", "val_loss")}
            for row in history_rows(ours)] == [
        {key: row[key] for key in ("accuracy", "loss", "val_accuracy", "val_loss")}
        for row in history_rows(plain)]


def test_exclusive_pairs_come_from_the_pair_classes_and_are_recorded(fashion_dir, tmp_path):
    assert train(fashion_dir, tmp_path, "--classes", "0", "1", "2", "--method", "feataug",
                 "--pair-classes", "Sandal", "8", "--pair-images", "3",
                 "--random-positions", "1", "--epochs", "1") == 0
    run = tmp_path / "fashion-mnist-c0.1.2-feataug-small_cnn-seed0"
    recorded = json.loads((run / "config.json").read_text())
    pairs = recorded["pair_set"]
    assert recorded["pairs"] == "exclusive"
    assert pairs["classes"] == ["Sandal", "Bag"] and len(pairs["items"]) == 6
    # Positions in the official training file, whose labels are 12 of each class in order.
    positions = [int(item.split()[-1]) for item in pairs["items"]]
    assert [position // 12 for position in positions] == [5, 5, 5, 8, 8, 8]
    assert len(set(positions)) == 6
    assert len(pairs["patterns"]) == 3 * 2 * 2  # 3 occluders, 2 ratios, centre + 1
    history = list(csv.DictReader(open(run / "history.csv")))
    assert 0.5 < float(history[0]["shifted_share"]) < 1.0  # alpha 0.9


def test_exclusive_pairs_leave_their_classes_out_of_training_by_default(fashion_dir,
                                                                         tmp_path):
    assert train(fashion_dir, tmp_path, "--method", "feataug", "--pair-classes", "7", "9",
                 "--pair-patterns", "20c", "--epochs", "1") == 0
    run = next(tmp_path.iterdir())
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["classes"] == [0, 1, 2, 3, 4, 5, 6, 8]
    assert len(recorded["pair_set"]["patterns"]) == 3  # 20 % at the centre, 3 occluders
    assert run.name.endswith("-feataug-20c-small_cnn-seed0")


def test_f_models_also_train_on_the_occluded_pair_images(fashion_dir, tmp_path):
    common = ("--classes", "0", "1", "2", "--method", "feataug", "--pair-images", "2",
              "--pair-patterns", "10c", "--epochs", "1")
    assert train(fashion_dir, tmp_path, *common) == 0
    assert train(fashion_dir, tmp_path, *common, "--train-on-pairs") == 0
    clean = json.loads((tmp_path / "fashion-mnist-c0.1.2-feataug-incl-10c-small_cnn-seed0"
                        / "metrics.json").read_text())
    both = json.loads((tmp_path / "fashion-mnist-c0.1.2-feataug-incl-F-10c-small_cnn-seed0"
                       / "metrics.json").read_text())
    # 3 pair classes x 2 images x 3 patterns (10 % at the centre, 3 occluders).
    assert both["train_images"] == clean["train_images"] + 18


def test_an_interrupted_run_resumes_to_the_same_result(fashion_dir, tmp_path, monkeypatch):
    args = ("--classes", "0", "1", "2", "--method", "feataug", "--random-positions", "1",
            "--epochs", "3", "--learning-rate", "0.001")
    assert train(fashion_dir, tmp_path / "whole", *args) == 0
    whole = next((tmp_path / "whole").iterdir())
    with monkeypatch.context() as patch:
        interrupt_after(0, patch)
        assert train(fashion_dir, tmp_path / "cut", *args) == 130
    run = tmp_path / "cut" / whole.name
    with np.load(run / "checkpoint.npz") as stored:
        banks = [key for key in stored.files if stored[key].shape == (3 * 5 * 12, 128)]
    assert banks, "the checkpoint holds the difference-vector bank"
    assert train(fashion_dir, tmp_path / "cut", *args, "--resume") == 0
    assert history_rows(run) == history_rows(whole)
    assert (run / "predictions.csv").read_text() == (whole / "predictions.csv").read_text()


@pytest.mark.parametrize(("argv", "message"), [
    (["--classes", "0", "1", "2", "--pair-classes", "1", "5"],
     "--pair-classes 1: trained on as well"),
    (["--pairs", "exclusive"], "--pairs exclusive needs --pair-classes"),
    (["--occlusion-ratios", "0.2", "1.5"], "--occlusion-ratios must be in (0, 1), got 1.5"),
    (["--dv-probability", "1.2"], "--dv-probability must be in [0, 1], got 1.2"),
    (["--pairs", "exclusive", "--pair-classes", "4", "5", "--train-on-pairs"],
     "--train-on-pairs needs --pairs inclusive"),
    (["--pair-patterns", "10c", "--occlusion-ratios", "0.2"],
     "--pair-patterns 10c needs 0.1 among --occlusion-ratios"),
    (["--pair-images", "40"], "--pair-images 40: class"),
    (["--pair-classes", "Nonsense", "4"], "--pair-classes: fashion-mnist has no class 'Nonsense'"),
    (["--classes", "2", "3", "4", "--pairs", "inclusive", "--pair-classes", "Trouser"],
     "--pair-classes Trouser: not one of the training classes"),
])
def test_bad_pair_settings_are_one_line_before_any_run_folder(fashion_dir, tmp_path, capsys,
                                                              argv, message):
    out = tmp_path / "models"
    assert train(fashion_dir, out, "--method", "feataug", *argv) in (1, 2)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_occluder_folders_without_occluders_are_one_line(fashion_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    opaque = tmp_path / "opaque"
    opaque.mkdir()
    import cv2

    cv2.imwrite(str(opaque / "square.png"), np.full((20, 20, 3), 90, np.uint8))  # no alpha
    for folder in (empty, opaque):
        out = tmp_path / f"models-{folder.name}"
        assert train(fashion_dir, out, "--method", "feataug", "--occluders", str(folder)) in (1, 2)
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(folder) in err, err
        assert not out.exists()


def test_tune_min_channels_freezes_the_narrow_layers_but_the_head(fashion_dir, tmp_path):
    from playing_distraction.stages import freeze_narrow_layers

    classifier = make_classifier(NUM_CLASSES, SIZE)
    freeze_narrow_layers(classifier, 64)
    for layer in classifier.layers:
        if layer.weights:
            wide = layer.weights[0].shape[-1] >= 64 or layer is classifier.layers[-1]
            assert layer.trainable == wide, layer.name
    assert any(not layer.trainable for layer in classifier.layers if layer.weights)


@pytest.mark.filterwarnings("ignore:.*not the 101 Caltech-101 classes:UserWarning")
def test_on_caltech101_the_papers_ten_pair_classes_are_the_default(tmp_path):
    """Cen et al., Sec. 4.1.1: the last 10 classes in alphabetical order give the pairs,
    the others are trained on, with no class flag given."""
    from test_caltech101 import write_caltech101

    from playing_distraction.layouts import CALTECH101_PAIR_CLASSES

    sizes = {"accordion": 9, "Faces": 9, "sunflower": 9,
             **{name: 7 for name in CALTECH101_PAIR_CLASSES}}
    root = write_caltech101(tmp_path / "caltech", sizes)
    assert train_main(["--dataset", "caltech101", "--data-dir", str(root), "--backbone",
                       "small_cnn", "--weights", "none", "--image-size", "32",
                       "--caltech-train-images", "6", "--caltech-test-images", "3",
                       "--validation-fraction", "0", "--method", "feataug",
                       "--pair-images", "2", "--pair-patterns", "20c", "--epochs", "1",
                       "--batch-size", "6", "--verbose", "0", "--jit-compile", "off",
                       "--out-dir", str(tmp_path / "models")]) == 0
    run = next((tmp_path / "models").iterdir())
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["pairs"] == "exclusive"
    assert recorded["class_names"] == ["accordion", "Faces", "sunflower"]
    assert recorded["pair_set"]["classes"] == list(CALTECH101_PAIR_CLASSES)
    assert len(recorded["pair_set"]["items"]) == 20
    assert all(f"/{name}/" in item for name, item in zip(
        np.repeat(CALTECH101_PAIR_CLASSES, 2), recorded["pair_set"]["items"]))


@pytest.mark.parametrize(("flags", "tag", "column"), [
    ({}, "feataug-incl", "feature aug. C-Full"),
    ({"pair_classes": ("7", "9")}, "feataug", "feature aug. Full"),
    ({"pair_classes": ("7", "9"), "pair_patterns": "20c"}, "feataug-20c", "feature aug. 20C"),
    ({"train_on_pairs": True}, "feataug-incl-F", "feature aug. F-Full"),
    ({"train_on_pairs": True, "dv_probability": 0.0}, "feataug-incl-F-a0", "baseline F"),
    ({"pair_classes": ("7", "9"), "dv_probability": 0.0}, "feataug-a0", "baseline"),
    ({"dv_scale": 2.0, "dv_probability": 0.5}, "feataug-incl-a0.5-b2",
     "feature aug. C-Full (alpha 0.5, beta 2)"),
    ({"hnc": "mse"}, "feataug-incl-hnc_mse", "feature aug. C-Full + HNC-mse"),
])
def test_run_names_and_columns(flags, tag, column):
    from playing_distraction.config import TrainConfig

    config = TrainConfig(method="feataug", dataset="fashion-mnist", **flags).resolved()
    assert (config.method_tag, config.column) == (tag, column)


def test_caltech101_resolves_to_the_exclusive_setting_and_its_pair_classes():
    from playing_distraction.config import TrainConfig
    from playing_distraction.layouts import CALTECH101_PAIR_CLASSES

    config = TrainConfig(method="feataug", dataset="caltech101").resolved()
    assert config.pairs == "exclusive" and config.pair_classes == CALTECH101_PAIR_CLASSES
    inclusive = TrainConfig(method="feataug", dataset="caltech101", pairs="inclusive").resolved()
    assert inclusive.pair_classes is None and inclusive.method_tag == "feataug-incl"
    other = TrainConfig(method="distraction", dataset="caltech101").resolved()
    assert other.pairs is None and other.pair_classes is None  # inactive: untouched
