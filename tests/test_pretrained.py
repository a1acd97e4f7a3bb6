"""Pretraining and fine-tuning: the weights shipped for small_cnn, the script that
rebuilds them, the "pretrain, then fine-tune" workflow through run folders, and
resuming a run whose defaults have changed since it started."""

import hashlib
import json
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest

from playing_distraction import checkpoints, pretrain
from playing_distraction.backbones import (BACKBONE_ATTRIBUTE, BACKBONES, SHIPPED_DIR,
                                           build_classifier, get_backbone)
from playing_distraction.cli import train_main
from playing_distraction.config import parse_config
from playing_distraction.layouts import Part, load_fashion_mnist, write_fashion_mnist

SHIPPED = get_backbone("small_cnn").shipped_file(pretrain.NAME)
RECORD = SHIPPED.with_name(f"small_cnn-{pretrain.NAME}.json")
FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot")


def backbone_weights(classifier):
    """Every weight but the head's (the last layer, ``logits``)."""
    head = {id(variable) for variable in classifier.get_layer("logits").weights}
    return [keras.ops.convert_to_numpy(v) for v in classifier.weights if id(v) not in head]


# ------------------------------------------------------------------ the shipped weights


def test_shipped_weights_are_small_recorded_and_tagged():
    assert SHIPPED.parent == SHIPPED_DIR and SHIPPED.is_file()
    assert SHIPPED.stat().st_size < 2 * 1024 * 1024
    record = json.loads(RECORD.read_text())
    assert record["sha256"] == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    assert record["bytes"] == SHIPPED.stat().st_size
    assert record["backbone"] == "small_cnn" and record["file"] == SHIPPED.name
    with h5py.File(SHIPPED, "r") as handle:
        assert handle.attrs[BACKBONE_ATTRIBUTE] == "small_cnn"
    # Source and held-out (target) classes: five each, disjoint, all of Fashion-MNIST.
    source, target = record["source_classes"], record["held_out_classes"]
    assert len(source) == len(target) == 5
    assert sorted(source + target) == sorted(FASHION_NAMES)
    assert "--classes " + " ".join(f"'{name}'" if " " in name or "/" in name else name
                                   for name in source) in record["command"]
    assert record["results"]["best_epoch"] <= record["results"]["epochs_run"]


def test_small_cnn_starts_from_the_shipped_weights_by_default():
    config = parse_config([])
    assert config.backbone == "small_cnn" and config.weights == pretrain.NAME
    assert parse_config(["--backbone", "resnet50"]).weights == "imagenet"
    keras.utils.set_random_seed(0)
    pretrained = build_classifier("small_cnn", 5, 32, config.weights)
    keras.utils.set_random_seed(0)
    random = build_classifier("small_cnn", 5, 32, "none")
    loaded = backbone_weights(pretrained)
    with h5py.File(SHIPPED, "r") as handle:
        kernels = []
        handle.visititems(lambda name, item: kernels.append(item[()]) if isinstance(
            item, h5py.Dataset) and item.ndim == 4 else None)
    # Every convolution kernel of the file is in the classifier, none of the random one.
    for kernel in kernels:
        assert any(w.shape == kernel.shape and np.array_equal(w, kernel) for w in loaded)
        assert not any(w.shape == kernel.shape and np.array_equal(w, kernel)
                       for w in backbone_weights(random))
    # Any input size: the backbone is fully convolutional.
    build_classifier("small_cnn", 3, 48, config.weights)


def test_a_shipped_weight_set_of_another_backbone_is_refused():
    with pytest.raises(ValueError, match="no such file"):
        parse_config(["--backbone", "densenet121", "--weights", pretrain.NAME])
    assert all(spec.pretrained in (None, pretrain.NAME) for spec in BACKBONES.values())


# ------------------------------------------------------------------ the rebuild script


@pytest.fixture
def fashion_100(tmp_path):
    """Fashion-MNIST in its IDX layout, 100 training images per class: enough for a
    batch of 64 (the recipe's) after the validation split of five classes."""
    rng = np.random.default_rng(0)

    def part(per_class):
        labels = np.repeat(np.arange(10), per_class).astype(np.uint8)
        images = (rng.integers(0, 64, (len(labels), 28, 28)) + 18 * labels[:, None, None])
        return Part(images.astype(np.uint8), labels)

    write_fashion_mnist(tmp_path / "fmnist100", part(100), part(4))
    return tmp_path / "fmnist100"


def test_rebuild_script_writes_weights_that_load_and_their_record(fashion_100, tmp_path):
    fashion_dir = fashion_100
    weights_dir = tmp_path / "weights"
    # In a process of its own: the script turns on TensorFlow's deterministic ops for
    # the whole process (and Keras then turns XLA off).
    done = subprocess.run(
        [sys.executable, "-m", "playing_distraction.pretrain", str(fashion_dir), "--out-dir",
         str(tmp_path / "runs"), "--weights-dir", str(weights_dir), "--epochs", "1"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "SHA-256" in done.stdout
    written = weights_dir / SHIPPED.name
    record = json.loads((weights_dir / RECORD.name).read_text())
    assert record["sha256"] == hashlib.sha256(written.read_bytes()).hexdigest()
    assert record["recipe"]["epochs"] == 1 and record["recipe"]["learning_rate"] == 1e-3
    run = tmp_path / "runs" / "small_cnn-fashion-mnist-source"
    config = json.loads((run / "config.json").read_text())
    # The source classes only, by their indices in Fashion-MNIST's list.
    assert config["classes"] == [FASHION_NAMES.index(name) for name in pretrain.SOURCE]
    assert config["weights"] == "none"
    predictions = (run / "predictions.csv").read_text().splitlines()[1:]
    _, test = load_fashion_mnist(fashion_dir)
    assert len(predictions) == np.isin(test.labels, config["classes"]).sum()
    # The file is the run's backbone, and loads with --weights.
    model = keras.models.load_model(run / "model.keras")
    loaded = build_classifier("small_cnn", 5, 32, str(written))
    for got, want in zip(backbone_weights(loaded), backbone_weights(model), strict=True):
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------ pretrain, then fine-tune


def common(fashion_dir, out_dir, epochs=1):
    return ["--dataset", "fashion-mnist", "--data-dir", str(fashion_dir), "--out-dir",
            str(out_dir), "--batch-size", "8", "--verbose", "0",
            *(["--epochs", str(epochs)] if epochs else [])]


def test_pretrain_then_fine_tune_through_run_folders(fashion_dir, tmp_path):
    source = ["Trouser", "Sandal", "Sneaker", "Bag", "Ankle boot"]
    target = ["T-shirt/top", "Pullover", "Dress", "Coat", "Shirt"]
    assert train_main([*common(fashion_dir, tmp_path), "--classes", *source,
                       "--weights", "none", "--occlusion", "none"]) == 0
    pretrained = tmp_path / "fashion-mnist-c1.5.7.8.9-none-small_cnn-seed0"
    file = pretrained / "backbone.weights.h5"
    # The classifier that fine-tuning starts from has the pretraining run's backbone.
    source_model = keras.models.load_model(pretrained / "model.keras")
    fine_start = build_classifier("small_cnn", 5, 32, str(file))
    for got, want in zip(backbone_weights(fine_start), backbone_weights(source_model),
                         strict=True):
        np.testing.assert_array_equal(got, want)
    assert train_main([*common(fashion_dir, tmp_path), "--classes", *target,
                       "--weights", str(file), "--occlusion", "zero"]) == 0
    tuned = tmp_path / "fashion-mnist-c0.2.3.4.6-zero-small_cnn-seed0"
    config = json.loads((tuned / "config.json").read_text())
    assert config["weights"] == str(file)
    assert config["weights_sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert config["class_names"] == target


# ------------------------------------------------------------------ resuming


def interrupt_after_first_epoch(monkeypatch):
    original = checkpoints.Checkpoint.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.Checkpoint, "on_epoch_end", on_epoch_end)


def test_a_resumed_run_keeps_the_values_it_started_with(fashion_dir, tmp_path, monkeypatch,
                                                        capsys):
    """A default that changed since a run started (say, in a new version) does not stop
    --resume: what the command line leaves out is taken from the run's config.json;
    what it gives must agree with it."""
    started = [*common(fashion_dir, tmp_path, epochs=2), "--weights", "none",
               "--learning-rate", "0.001"]
    with monkeypatch.context() as patch:
        interrupt_after_first_epoch(patch)
        assert train_main(started) == 130
    run = tmp_path / "fashion-mnist-zero-small_cnn-seed0"
    capsys.readouterr()
    # Given again with another value: refused, naming the flag.
    assert train_main([*common(fashion_dir, tmp_path, epochs=2), "--weights", "none",
                       "--learning-rate", "0.01", "--resume"]) == 1
    assert "--learning-rate" in capsys.readouterr().err
    # Left out: the run's own values (not the defaults: shipped weights, 5e-5).
    assert train_main([*common(fashion_dir, tmp_path, epochs=None), "--resume",
                       "--verbose", "2"]) == 0
    printed = capsys.readouterr().out
    assert "--weights none" in printed and "--learning-rate 0.001" in printed
    assert "--epochs 2" in printed
    config = json.loads((run / "config.json").read_text())
    assert config["weights"] == "none" and config["learning_rate"] == 0.001
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 2
