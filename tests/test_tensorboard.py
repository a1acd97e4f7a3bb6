"""TensorBoard logs (``train.py --tensorboard``, ``tensorboard.py``) and the schemes'
``illustrate`` hook: what is logged, where, that a resumed run appends to the same
logs, and that logging changes no bit of training."""

import csv
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import fashion_part, make_classifier, structured_images
from test_resume import interrupt_after
from tensorflow.core.util import event_pb2

from playing_distraction.cli import train_main
from playing_distraction.config import TrainConfig, parse_config
from playing_distraction.heatmaps import grad_cam, normalize_per_image, resize_bilinear
from playing_distraction.layouts import write_fashion_mnist
from playing_distraction.pipeline import Prepared
from playing_distraction.run_folders import CONFIG, open_run_dir, resumed
from playing_distraction.saliency_figures import saliency_maps
from playing_distraction.tensorboard import (TensorBoardLog, log_dir, overlay, panel_batch,
                                              stage_log)
from playing_distraction.training import build_model

NUM_CLASSES, SIZE = 3, 32
LOGGED = ("--tensorboard", "--tensorboard-images-every", "1")


def write_dataset(directory):
    """Fashion-MNIST IDX files: 12 training and 4 test images per class."""
    rng = np.random.default_rng(0)

    write_fashion_mnist(directory, fashion_part(rng, 12), fashion_part(rng, 4))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two-epoch runs on 90 training and 30 validation images: 0-occlusion with the
    random fill at p = 0.5 with and without logs, the same interrupted after its first
    epoch and resumed, and pairwise; {name: run folder}."""
    root = tmp_path_factory.mktemp("tensorboard")
    write_dataset(root / "fmnist")

    def train(name, *extra):
        return train_main(["--dataset", "fashion-mnist", "--data-dir", str(root / "fmnist"),
                           "--epochs", "2", "--verbose", "0", "--weights", "none",
                           "--learning-rate", "0.0003", "--out-dir", str(root / name), *extra])

    distraction = ("--occlusion", "random", "--probability", "0.5")
    assert train("logged", *distraction, *LOGGED) == 0
    assert train("plain", *distraction) == 0
    with pytest.MonkeyPatch.context() as patch:
        interrupt_after(0, patch)
        assert train("resumed", *distraction, *LOGGED) == 130
    assert train("resumed", *distraction, *LOGGED, "--resume") == 0
    assert train("pairwise", "--method", "pairwise", *LOGGED, "--tensorboard-images", "3") == 0
    name = "fashion-mnist-random-small_cnn-seed0"
    return {"logged": root / "logged" / name, "plain": root / "plain" / name,
            "resumed": root / "resumed" / name,
            "pairwise": root / "pairwise" / "fashion-mnist-pairwise-small_cnn-seed0"}


def event_files(folder):
    """{file name: [(step, tag, value)]}: scalars as floats, images as their decoded
    (height, width, 3) uint8 arrays."""
    found = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        rows = found.setdefault(path.name, [])
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                content = tf.make_ndarray(value.tensor)
                if value.metadata.plugin_data.plugin_name == "images":
                    content = [tf.io.decode_png(png).numpy() for png in content[2:]]
                else:
                    content = float(content)
                rows.append((event.step, value.tag, content))
    return found


def logged(folder):
    """{(step, tag): value} over every event file of a log folder."""
    return {(step, tag): value for rows in event_files(folder).values()
            for step, tag, value in rows}


def history_rows(run):
    with open(run / "history.csv", newline="") as handle:
        return [{key: value for key, value in row.items() if key != "seconds"}
                for row in csv.DictReader(handle)]


# ------------------------------------------------------------------ runs


def test_a_run_logs_keras_epoch_scalars_and_panels_of_validation_images(runs):
    logs = runs["logged"] / "tensorboard"
    history = list(csv.DictReader(open(runs["logged"] / "history.csv", newline="")))
    train, validation = logged(logs / "train"), logged(logs / "validation")
    for epoch, row in enumerate(history):
        for name in ("loss", "accuracy", "occluded_steps"):
            assert train[epoch, f"epoch_{name}"] == pytest.approx(float(row[name]), rel=1e-6)
        for name in ("loss", "accuracy"):
            assert validation[epoch, f"epoch_{name}"] == pytest.approx(
                float(row[f"val_{name}"]), rel=1e-6)
        for tag in ("image", "gradcam", "mask", "occluded"):
            pictures = validation[epoch, f"validation/{tag}"]
            assert len(pictures) == 8 and all(p.shape == (SIZE, SIZE, 3) for p in pictures)
    # Epoch scalars only (no batch scalars, no graph), and images in validation/ only.
    assert {tag for _, tag in train} == {f"epoch_{name}" for name in (
        "loss", "accuracy", "occluded_steps", "occluded_area", "seconds", "learning_rate")}
    assert {step for step, _ in (*train, *validation)} == {0, 1}
    assert not any(tag.startswith("evaluation_") for _, tag in validation)
    # The occluded picture is the image wherever the mask is black.
    image, mask = validation[1, "validation/image"], validation[1, "validation/mask"]
    occluded = validation[1, "validation/occluded"]
    kept = [m < 128 for m in mask]
    assert any(m.any() for m in kept) and not all(m.all() for m in kept)
    for picture, mask_, original in zip(occluded, kept, image):
        np.testing.assert_array_equal(picture[mask_], original[mask_])


def test_a_pairwise_run_logs_its_erased_images(runs):
    validation = logged(runs["pairwise"] / "tensorboard" / "validation")
    tags = {tag for _, tag in validation if tag.startswith("validation/")}
    assert tags == {"validation/image", "validation/gradcam", "validation/erased"}
    for epoch in (0, 1):
        erased = validation[epoch, "validation/erased"]
        image = validation[epoch, "validation/image"]
        assert len(erased) == 3
        # Erased pixels are black; the others are the image's.
        changed = np.stack(erased) != np.stack(image)
        assert changed.any() and (np.stack(erased)[changed] == 0).all()


def test_logging_changes_no_bit_of_training(runs):
    plain = runs["plain"]
    weights = keras.models.load_model(plain / "model.keras").get_weights()
    for name in ("logged", "resumed"):
        run = runs[name]
        assert (run / "predictions.csv").read_text() == (plain / "predictions.csv").read_text()
        assert history_rows(run) == history_rows(plain)
        for mine, theirs in zip(keras.models.load_model(run / "model.keras").get_weights(),
                                weights, strict=True):
            np.testing.assert_array_equal(mine, theirs)
    assert not (plain / "tensorboard").exists()


def test_a_resumed_run_appends_its_epochs_to_the_same_logs(runs):
    logs = runs["resumed"] / "tensorboard"
    for folder in ("train", "validation"):
        files = event_files(logs / folder)
        assert sorted(sorted({step for step, _, _ in rows}) for rows in files.values()) == [
            [0], [1]], "one file per process, the second continuing at epoch 2"
    # The resumed run's logs hold what the uninterrupted run's do.
    whole = logged(runs["logged"] / "tensorboard" / "validation")
    parts = logged(logs / "validation")
    assert whole.keys() == parts.keys()
    for key in whole:
        if key[1].startswith("validation/"):
            np.testing.assert_array_equal(np.stack(parts[key]), np.stack(whole[key]))
        else:
            assert parts[key] == whole[key]


def test_logging_settings_neither_name_a_run_nor_stop_it_resuming(tmp_path):
    base = ["--out-dir", str(tmp_path), "--epochs", "1"]
    logging = parse_config([*base, "--tensorboard", "--tensorboard-images", "4"])
    quiet = parse_config([*base, "--resume"])
    assert logging.default_run_name == quiet.default_run_name
    run_dir, state, lock = open_run_dir(logging)
    lock.release()
    (run_dir / CONFIG).write_text(json.dumps(logging.to_dict()))
    run_dir, state, lock = open_run_dir(quiet)
    lock.release()
    assert state == "resume"
    # Left out of the command, they are not taken from the run's config.json.
    assert resumed(quiet, {"resume", "out_dir", "epochs"}) == quiet


@pytest.mark.parametrize("args, message", [
    (["--tensorboard", "--tensorboard-images-every", "0"],
     "--tensorboard-images-every must be positive, got 0"),
    (["--tensorboard", "--tensorboard-images", "-1"],
     "--tensorboard-images must be positive, got -1"),
    (["--tensorboard-images", "4"], "--tensorboard-images applies to --tensorboard only"),
])
def test_bad_logging_flags_end_in_one_line(args, message, capsys):
    assert train_main(args) == 2
    assert capsys.readouterr().err == f"train.py: error: {message}\n"


# ------------------------------------------------------------------ the callback


def test_panels_of_a_plain_classifier_are_the_images_and_their_grad_cam(tmp_path,
                                                                       monkeypatch):
    classifier = make_classifier(NUM_CLASSES)
    images = structured_images(4, SIZE)
    labels = np.array([0, 2, 1, 2])
    log = TensorBoardLog(tmp_path, images, labels, images_every=3)
    log.set_model(classifier)
    panels = log.panels()
    assert panels.keys() == {"image", "gradcam"}
    np.testing.assert_allclose(panels["image"], images, atol=1e-7)
    expected = overlay(images, grad_cam(classifier, images, labels))
    np.testing.assert_allclose(panels["gradcam"], expected, atol=1e-5)
    log.set_params({"epochs": 10})
    assert [epoch for epoch in range(10) if log.panels_due(epoch)] == [0, 2, 5, 8, 9]

    # In fit: scalars per epoch only (Keras' callback would call tf.summary.scalar for
    # every log of every step), the panels of its one epoch, and no graph.
    scalars = []
    original = tf.summary.scalar
    monkeypatch.setattr(tf.summary, "scalar",
                        lambda name, *args, **kwargs: scalars.append(name)
                        or original(name, *args, **kwargs))
    classifier.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), metrics=["accuracy"])
    classifier.fit(images, labels, batch_size=2, epochs=1, verbose=0, callbacks=[log],
                   validation_data=(images, labels))
    assert sorted(scalars) == sorted(f"epoch_{name}" for name in (
        "loss", "accuracy", "learning_rate", "loss", "accuracy"))
    written = logged(tmp_path / "validation")
    assert {tag for _, tag in written} == {"epoch_loss", "epoch_accuracy",
                                           "validation/image", "validation/gradcam"}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["train", "validation"]


def test_panel_batch_is_drawn_once_from_the_seed_within_the_split():
    images = np.arange(20, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    prepared = Prepared(images, np.arange(20) % 3, [], np.arange(20))
    split = (prepared, np.arange(10, 20))
    first, labels = panel_batch(split, 4, seed=3)
    again, _ = panel_batch(split, 4, seed=3)
    np.testing.assert_array_equal(first, again)
    drawn = np.rint(first[:, 0, 0, 0] * 255).astype(int)
    assert len(drawn) == 4 and set(drawn) <= set(range(10, 20)) and list(drawn) == sorted(drawn)
    np.testing.assert_array_equal(labels, drawn % 3)
    assert not np.array_equal(panel_batch(split, 4, seed=4)[0], first)
    assert len(panel_batch((prepared, None), 50, seed=0)[0]) == 20  # all, if fewer
    assert log_dir("run", 0, "train").as_posix() == "run/tensorboard"
    # A later stage logs in a folder of its own; without a validation split, the panels
    # show training images.
    log = stage_log(TrainConfig(tensorboard=True, tensorboard_images=3, seed=3),
                    {"train": split, "validation": None}, "run", 1, "finetune")
    assert log.log_dir == "run/tensorboard/finetune" and log.split == "train"
    np.testing.assert_array_equal(log.images, panel_batch(split, 3, seed=3)[0])


# ------------------------------------------------------------------ illustrate


def built(method):
    config = TrainConfig(method=method, backbone="small_cnn", weights="none", image_size=SIZE,
                         jit_compile="off").resolved().for_classes(NUM_CLASSES)
    keras.utils.set_random_seed(config.seed)
    return config, build_model(config, NUM_CLASSES)[1]


@pytest.mark.parametrize("method, names", [
    ("distraction", {"mask", "occluded"}), ("pairwise", {"erased"}),
    ("saliency", {"saliency"}), ("feataug", set())])
def test_illustrate_draws_what_the_method_does_and_changes_nothing(method, names):
    config, model = built(method)
    images = structured_images(4, SIZE)
    labels = np.array([0, 1, 2, 1])
    variables = [np.array(variable) for variable in model.variables]
    pictures = {name: np.asarray(value) for name, value in model.illustrate(images, labels).items()}
    assert pictures.keys() == names
    for picture in pictures.values():
        assert picture.shape == (4, SIZE, SIZE, 3) and picture.dtype == np.float32
        assert 0.0 <= picture.min() and picture.max() <= 1.0
    # Deterministic and graph-safe, and nothing moved: weights, BatchNormalization
    # statistics, seed generators.
    again = tf.function(model.illustrate)(tf.constant(images), tf.constant(labels))
    for name, picture in pictures.items():
        np.testing.assert_array_equal(np.asarray(again[name]), picture)
    for before, variable in zip(variables, model.variables, strict=True):
        np.testing.assert_array_equal(np.array(variable), before)
    if method == "distraction":
        heat = np.asarray(grad_cam(model.classifier, images, labels, config.cam_layer))
        hot = heat > config.threshold
        np.testing.assert_array_equal(pictures["mask"], np.repeat(hot[..., None], 3, -1))
        np.testing.assert_array_equal(pictures["occluded"], np.where(hot[..., None], 0, images))
    if method == "saliency":
        maps = saliency_maps(model.classifier, images)
        expected = normalize_per_image(resize_bilinear(maps, (SIZE, SIZE)))
        np.testing.assert_allclose(pictures["saliency"][..., 0], expected, atol=1e-5)


def test_the_random_fill_of_illustrate_is_fixed_and_draws_no_training_seed():
    _, model = built("distraction")
    model.fill = "random"
    images, labels = structured_images(4, SIZE), np.array([0, 1, 2, 1])
    state = np.array(model.seed_generator.state)
    first = np.asarray(model.illustrate(images, labels)["occluded"])
    np.testing.assert_array_equal(np.asarray(model.illustrate(images, labels)["occluded"]),
                                  first)
    np.testing.assert_array_equal(np.array(model.seed_generator.state), state)
    hot = np.asarray(model.illustrate(images, labels)["mask"]) > 0.5
    assert hot.any() and (first[hot] != images[hot]).mean() > 0.99  # filled at random
