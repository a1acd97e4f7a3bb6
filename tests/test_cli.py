"""train.py end to end, and its answers to bad input: one line, non-zero exit."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from playing_distraction.cli import train_main
from playing_distraction.datasets import load_dataset

TRAIN = str(Path(__file__).resolve().parent.parent / "train.py")


def run(args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, TRAIN, *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env=env)


def error_line(done):
    """The error line, after TensorFlow's own start-up lines (if TF was imported)."""
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("args, message", [
    (["--occlusion", "blue"], "argument --occlusion: invalid choice: 'blue'"),
    (["--threshold", "1.5"], "--threshold must be in [0, 1], got 1.5"),
    (["--threshold", "high"], "argument --threshold: invalid float value: 'high'"),
    (["--probability", "-0.1"], "--probability must be in [0, 1], got -0.1"),
    (["--backbone", "vgg16"], "argument --backbone: invalid choice: 'vgg16'"),
    (["--dataset", "birds"], "argument --dataset: invalid choice: 'birds'"),
    (["--crop-to-box"], "--crop-to-box applies to --dataset cars only"),
    (["--aircraft-level", "family"], "--aircraft-level applies to --dataset aircraft only"),
    (["--dataset", "egofoodplaces", "--event-split", "0.5", "0.1", "0.1"],
     "--event-split needs three shares that sum to 1"),
    (["--event-split", "0.7"], "argument --event-split: expected 3 arguments"),
    (["--brightness", "1.5", "0.5"], "--brightness needs 0 <= LOW <= HIGH, got 1.5 0.5"),
    (["--rotation", "-5"], "--rotation must be in [0, 180] degrees, got -5.0"),
    (["--oversample", "-1"], "--oversample must be 0 or more, got -1"),
    (["--on-bad-image", "ignore"], "argument --on-bad-image: invalid choice: 'ignore'"),
    (["--weights", "missing.weights.h5"], "--weights: no such file: missing.weights.h5"),
    (["--epochs", "0"], "--epochs must be positive, got 0"),
    (["--image-size", "8"], "--image-size 8 is below the 16 pixels that small_cnn needs"),
    (["--backbone", "small_cnn", "--weights", "imagenet"], "has no ImageNet weights"),
    (["--run-name", "a/b"], "--run-name must be a plain folder name"),
    (["--steps-per-execution", "0"], "--steps-per-execution must be positive, got 0"),
    (["--strategy", "tpu"], "argument --strategy: invalid choice: 'tpu'"),
    (["--strategy", "mirrored", "--jit-compile", "on"],
     "--jit-compile on does not work with --strategy mirrored"),
    (["--method", "gain"], "argument --method: invalid choice: 'gain'"),
    (["--method", "pairwise", "--occlusion", "zero"],
     "--occlusion applies to --method distraction only"),
    (["--method", "pairwise", "--probability", "0.5"],
     "--probability applies to --method distraction only"),
    (["--gamma", "0.5"], "--gamma applies to --method pairwise only"),
    (["--pairwise-loss", "instance"], "--pairwise-loss applies to --method pairwise only"),
    (["--cam-module-layer", "block2b"], "--cam-module-layer applies to --method pairwise only"),
    (["--method", "pairwise", "--gamma", "1.5"], "--gamma must be in [0, 1], got 1.5"),
    (["--method", "pairwise", "--alpha", "-1"], "--alpha must be 0 or more, got -1.0"),
    (["--method", "pairwise", "--cam-module-filters", "0"],
     "--cam-module-filters must be positive, got 0"),
    (["--method", "pairwise", "--pairwise-loss", "am"],
     "argument --pairwise-loss: invalid choice: 'am'"),
    (["--hnc", "lasso"], "argument --hnc: invalid choice: 'lasso'"),
    (["--hnc-weight", "0.1"], "--hnc-weight needs --hnc mse or --hnc kd"),
    (["--hnc-top-k", "3"], "--hnc-top-k needs --hnc mse or --hnc kd"),
    (["--hnc", "mse", "--hnc-top-k", "0"], "--hnc-top-k must be positive, got 0"),
    (["--hnc", "kd", "--hnc-weight", "-0.1"], "--hnc-weight must be 0 or more, got -0.1"),
    (["--hnc", "kd", "--hnc-temperature", "0"], "--hnc-temperature must be positive, got 0.0"),
])
def test_bad_flags_give_one_line_and_exit_2(tmp_path, args, message):
    done = run(args, tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train.py: error: "), done.stderr
    assert message in lines[0]
    assert not (tmp_path / "models").exists()


def test_unreadable_weights_file_is_one_line_and_leaves_no_run(tmp_path):
    # Not HDF5 at all: refused with the flags, before TensorFlow loads.
    (tmp_path / "broken.weights.h5").write_bytes(b"not an HDF5 file")
    done = run(["--weights", "broken.weights.h5", "--out-dir", "out"], tmp_path)
    assert done.returncode == 2
    assert error_line(done).startswith(
        "train.py: error: --weights broken.weights.h5: not a Keras weights file")
    assert not (tmp_path / "out").exists()
    # HDF5, but not weights of this backbone: refused when loaded, before the run folder.
    import h5py

    with h5py.File(tmp_path / "other.weights.h5", "w") as handle:
        handle["something"] = [1.0, 2.0]
    done = run(["--weights", "other.weights.h5", "--out-dir", "out"], tmp_path)
    assert done.returncode == 1
    assert error_line(done).startswith("train.py: error: cannot load weights file "
                                       "other.weights.h5 into backbone small_cnn")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dataset, layout", [
    ("fashion-mnist", "train-images-idx3-ubyte.gz"),
    ("cars", "devkit/cars_meta.mat"),
    ("aircraft", "fgvc-aircraft-2013b/data/"),
    ("flowers", "jpg/image_00001.jpg"),
    ("cub", "CUB_200_2011/"),
    ("egofoodplaces", "path,label,event"),
    ("folder", "train/<class>/"),
])
def test_missing_dataset_folder_names_the_path_and_layout(tmp_path, dataset, layout):
    done = run(["--dataset", dataset, "--data-dir", "nowhere"], tmp_path)
    assert done.returncode == 1
    line = error_line(done)
    assert "nowhere" in line and layout in line, line


def write_folder_dataset(root, per_class=6, size=40):
    """train/<class>/ and test/<class>/ JPEGs of three colours, plus one corrupt file."""

    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", 2)):
        for label, colour in (("blue", (255, 0, 0)), ("green", (0, 255, 0)), ("red", (0, 0, 255))):
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                image = np.clip(np.array(colour) * 0.8 + rng.normal(0, 20, (size, size, 3)), 0, 255)
                cv2.imwrite(str(folder / f"{index}.jpg"), image.astype(np.uint8))
    corrupt = root / "train" / "red" / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    return corrupt


def test_folder_dataset_trains_and_counts_a_corrupt_image(tmp_path):
    corrupt = write_folder_dataset(tmp_path / "shapes")
    args = ["--dataset", "folder", "--data-dir", "shapes", "--backbone", "small_cnn",
            "--weights", "none", "--epochs", "1", "--batch-size", "4", "--out-dir", "out",
            "--run-name", "r", "--cache-dir", "cache"]
    done = run(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "skipped 1 unreadable image(s) of 19" in done.stdout and str(corrupt) in done.stdout
    metrics = json.loads((tmp_path / "out" / "r" / "metrics.json").read_text())
    assert [entry["path"] for entry in metrics["skipped_images"]] == [str(corrupt)]
    # 18 readable training images: 14 train / 4 validation (stratified 25 %), 6 test.
    assert (metrics["train_images"], metrics["validation_images"], metrics["test_images"]) == (13, 5, 6)
    config = json.loads((tmp_path / "out" / "r" / "config.json").read_text())
    assert config["class_names"] == ["blue", "green", "red"] and config["image_size"] == 32
    assert list((tmp_path / "cache").glob("*.npy"))

    stopped = run([*args[:-4], "--run-name", "s", "--on-bad-image", "error"], tmp_path)
    assert stopped.returncode == 1
    assert error_line(stopped).startswith(f"train.py: error: cannot decode image {corrupt}")
    assert not (tmp_path / "out" / "s").exists()


def test_train_writes_a_complete_run_and_never_overwrites(tmp_path, fashion_dir):
    args = ["--dataset", "fashion-mnist", "--data-dir", str(fashion_dir), "--epochs", "2",
            "--out-dir", "out", "--run-name", "r1", "--probability", "0.5"]
    done = run(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "out" / "r1"
    assert "test accuracy" in done.stdout and str(Path("out") / "r1") in done.stdout
    config = json.loads((run_dir / "config.json").read_text())
    assert config["backbone"] == "small_cnn" and config["threshold"] == 0.85
    assert config["occlusion"] == "zero" and config["probability"] == 0.5
    assert config["learning_rate"] == 5e-5 and config["batch_size"] == 16
    assert config["epsilon"] == 7e-7 and config["patience"] == 30
    assert len(config["class_names"]) == 10
    with open(run_dir / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    assert {"accuracy", "val_accuracy", "occluded_steps", "occluded_area", "seconds"} <= set(rows[0])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_images"] == 40 and metrics["epochs_run"] == 2
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["train_images"] + metrics["validation_images"] == 120
    assert metrics["validation_images"] == 30  # 25 %
    assert (run_dir / "model.keras").is_file()

    before = (run_dir / "metrics.json").read_text()
    again = run(args, tmp_path)
    assert again.returncode == 1
    assert "run folder out/r1 exists" in error_line(again)
    assert (run_dir / "metrics.json").read_text() == before

    overwritten = run([*args, "--overwrite", "--occlusion", "none"], tmp_path)
    assert overwritten.returncode == 0, overwritten.stderr[-3000:]
    assert json.loads((run_dir / "config.json").read_text())["occlusion"] == "none"
    with open(run_dir / "history.csv") as handle:
        assert "occluded_steps" not in next(csv.reader(handle))


def test_default_run_names_are_numbered_not_reused(tmp_path, fashion_dir):
    args = ["--dataset", "fashion-mnist", "--data-dir", str(fashion_dir), "--epochs", "1",
            "--out-dir", str(tmp_path), "--occlusion", "one", "--verbose", "0"]
    assert train_main(args) == 0
    assert train_main(args) == 0
    names = sorted(p.name for p in tmp_path.iterdir() if (p / "metrics.json").exists())
    assert names == ["fashion-mnist-one-small_cnn-seed0", "fashion-mnist-one-small_cnn-seed0-2"]


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, fashion_dir):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    code = train_main(["--dataset", "fashion-mnist", "--data-dir", str(fashion_dir),
                       "--out-dir", str(tmp_path), "--run-name", "precious", "--overwrite",
                       "--epochs", "1", "--verbose", "0"])
    assert code == 1
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def write_egofoodplaces(root, events_per_class=(4, 4, 2), images_per_event=3):
    """A manifest.csv path,label,event over tiny JPEGs; class sizes 12, 12 and 6."""
    root.mkdir(parents=True)
    lines = ["path,label,event"]
    for label, events in zip(("bakery", "bar", "pub"), events_per_class):
        for event in range(events):
            for image in range(images_per_event):
                path = f"{label}/{event}-{image}.jpg"
                (root / label).mkdir(exist_ok=True)
                cv2.imwrite(str(root / path), np.full((12, 16, 3), 40 * len(label), np.uint8))
                lines.append(f"{path},{label},{label}-{event}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")


def test_egofoodplaces_trains_with_event_split_and_oversampling(tmp_path):
    write_egofoodplaces(tmp_path / "ego")
    code = train_main(["--dataset", "egofoodplaces", "--data-dir", str(tmp_path / "ego"),
                       "--backbone", "small_cnn", "--weights", "none", "--image-size", "32",
                       "--epochs", "1", "--batch-size", "4", "--oversample", "2",
                       "--event-split", "0.5", "0.25", "0.25", "--verbose", "0",
                       "--out-dir", str(tmp_path / "out"), "--run-name", "r"])
    assert code == 0
    metrics = json.loads((tmp_path / "out" / "r" / "metrics.json").read_text())
    data = load_dataset("egofoodplaces", tmp_path / "ego", event_split=(0.5, 0.25, 0.25))
    counts = np.bincount(data.train.labels, minlength=3)
    second_largest = np.sort(counts)[-2]
    assert metrics["train_images"] == np.maximum(counts, second_largest).sum() > len(data.train)
    assert metrics["validation_images"] == len(data.validation) > 0
    assert metrics["test_images"] == len(data.test) > 0
    assert len(data.train) + len(data.validation) + len(data.test) == 30
    config = json.loads((tmp_path / "out" / "r" / "config.json").read_text())
    assert config["oversample"] == 2 and config["event_split"] == [0.5, 0.25, 0.25]


def test_egofoodplaces_refuses_an_image_level_validation_split(tmp_path, capsys):
    write_egofoodplaces(tmp_path / "ego")
    code = train_main(["--dataset", "egofoodplaces", "--data-dir", str(tmp_path / "ego"),
                       "--backbone", "small_cnn", "--weights", "none", "--event-split", "0.8",
                       "0", "0.2", "--out-dir", str(tmp_path / "out")])
    assert code == 1
    assert "no validation split by events" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_steps_per_execution_trains_the_same_steps_or_refuses_in_one_line(tmp_path, fashion_dir):
    # 90 training images: 5 steps of 16 per epoch.
    common = ["--dataset", "fashion-mnist", "--data-dir", str(fashion_dir), "--epochs", "2",
              "--out-dir", str(tmp_path), "--verbose", "0"]
    assert train_main(common + ["--run-name", "one"]) == 0
    assert train_main(common + ["--run-name", "five", "--steps-per-execution", "5"]) == 0
    one, five = ((tmp_path / name / "predictions.csv").read_text() for name in ("one", "five"))
    assert one == five

    done = run(common + ["--run-name", "two", "--steps-per-execution", "2"], tmp_path)
    assert done.returncode == 1
    assert error_line(done) == (
        "train.py: error: --steps-per-execution 2 does not divide the 5 training steps per "
        "epoch (Keras would run the last call into the next epoch's batches); divisors of 5: "
        "1, 5")
    assert not (tmp_path / "two").exists()
