"""Repetitions, saved predictions, and resuming an interrupted run."""

import csv
import json

import keras
import numpy as np
import pytest

from playing_distraction import checkpoints
from playing_distraction.cli import train_main


def args_for(fashion_dir, out_dir, *extra):
    # Patience 1 makes early stopping end the run after 4 of the 8 epochs.
    return ["--dataset", "fashion-mnist", "--data-dir", str(fashion_dir), "--epochs", "8",
            "--patience", "1", "--learning-rate", "0.0003", "--batch-size", "16", "--verbose", "0",
            "--probability", "0.5", "--weights", "none", "--out-dir", str(out_dir), *extra]


def history_rows(run_dir):
    with open(run_dir / "history.csv", newline="") as handle:
        return [{key: value for key, value in row.items() if key != "seconds"}
                for row in csv.DictReader(handle)]


def interrupt_after(epoch_to_stop, monkeypatch):
    """Make the run stop like Ctrl-C right after the checkpoint of one epoch."""
    original = checkpoints.Checkpoint.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == epoch_to_stop:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.Checkpoint, "on_epoch_end", on_epoch_end)


def test_resumed_runs_end_exactly_as_the_uninterrupted_run(fashion_dir, tmp_path, monkeypatch,
                                                           capsys):
    assert train_main(args_for(fashion_dir, tmp_path / "whole")) == 0
    whole = tmp_path / "whole" / "fashion-mnist-zero-small_cnn-seed0"
    metrics = json.loads((whole / "metrics.json").read_text())
    epochs = metrics["epochs_run"]
    assert 2 < epochs < 8, "the fixture should stop early for this test to mean something"
    assert not (whole / checkpoints.CHECKPOINT).exists()

    # Interrupted in the middle, and at the epoch where early stopping ended the run.
    for stop in (1, epochs - 1):
        out = tmp_path / f"stopped-at-{stop}"
        with monkeypatch.context() as patch:
            interrupt_after(stop, patch)
            assert train_main(args_for(fashion_dir, out)) == 130
        assert "--resume" in capsys.readouterr().err
        run = out / whole.name
        assert (run / checkpoints.CHECKPOINT).exists() and not (run / "metrics.json").exists()
        assert train_main(args_for(fashion_dir, out, "--resume", "--verbose", "2")) == 0
        printed = capsys.readouterr().out
        assert f"resuming after epoch {stop + 1}" in printed
        # Only the remaining epochs were trained (none if early stopping had ended it).
        trained = [line for line in printed.splitlines() if line.startswith("Epoch ")]
        assert trained == [f"Epoch {k}/8" for k in range(stop + 2, epochs + 1)]
        again = json.loads((run / "metrics.json").read_text())
        assert again["epochs_run"] == epochs and again["best_epoch"] == metrics["best_epoch"]
        assert again["test_accuracy"] == metrics["test_accuracy"]
        assert history_rows(run) == history_rows(whole)
        assert (run / "predictions.csv").read_text() == (whole / "predictions.csv").read_text()


def test_resume_skips_finished_runs_and_refuses_other_flags(fashion_dir, tmp_path, capsys):
    out = tmp_path / "runs"
    assert train_main(args_for(fashion_dir, out, "--epochs", "1")) == 0
    run = out / "fashion-mnist-zero-small_cnn-seed0"
    finished = (run / "metrics.json").read_text()
    assert train_main(args_for(fashion_dir, out, "--epochs", "1", "--resume", "--verbose", "2")) == 0
    printed = capsys.readouterr().out
    assert f"{run}: finished before, skipped" in printed and "Epoch 1/1" not in printed
    assert (run / "metrics.json").read_text() == finished
    assert not (out / f"{run.name}-2").exists()

    assert train_main(args_for(fashion_dir, out, "--epochs", "1", "--resume",
                               "--learning-rate", "0.001")) == 1
    error = capsys.readouterr().err.strip()
    assert error == (f"train.py: error: cannot resume {run}: it was started with other "
                     "--learning-rate")


def test_repeats_train_one_seeded_run_each_and_print_mean_and_std(fashion_dir, tmp_path,
                                                                  capsys):
    out = tmp_path / "runs"
    assert train_main(args_for(fashion_dir, out, "--epochs", "1", "--repeats", "2",
                               "--occlusion", "none", "--seed", "3")) == 0
    printed = capsys.readouterr().out
    accuracies = []
    for seed in (3, 4):
        run = out / f"fashion-mnist-none-small_cnn-seed{seed}"
        config = json.loads((run / "config.json").read_text())
        assert config["seed"] == seed and config["repeats"] == 2
        accuracies.append(json.loads((run / "metrics.json").read_text())["test_accuracy"])
    assert (f"test accuracy over 2 runs: {np.mean(accuracies):.4f} ± "
            f"{np.std(accuracies, ddof=1):.4f} (mean ± std)") in printed


def test_predictions_file_has_a_row_per_test_image(fashion_dir, tmp_path):
    out = tmp_path / "runs"
    assert train_main(args_for(fashion_dir, out, "--epochs", "1")) == 0
    run = out / "fashion-mnist-zero-small_cnn-seed0"
    with open(run / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 40  # the fixture's test set
    assert list(rows[0]) == ["item", "label", "prediction", *(f"p{k}" for k in range(10))]
    probabilities = np.array([[float(row[f"p{k}"]) for k in range(10)] for row in rows])
    labels = np.array([int(row["label"]) for row in rows])
    predictions = np.array([int(row["prediction"]) for row in rows])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(predictions, probabilities.argmax(axis=1))
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 4))
    assert [row["item"] for row in rows] == [str(k) for k in range(40)]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_accuracy"] == pytest.approx(np.mean(predictions == labels))
    # The test loss is Keras' sparse cross-entropy of these predictions.
    expected = keras.losses.SparseCategoricalCrossentropy()(labels, probabilities)
    assert metrics["test_loss"] == pytest.approx(float(expected), rel=1e-4)


def test_a_run_without_validation_finishes(fashion_dir, tmp_path):
    """Keras' CSVLogger adds val_ columns of "NA" to a run without validation; the
    history is still read (it ended in a traceback once)."""
    assert train_main(args_for(fashion_dir, tmp_path, "--epochs", "2",
                               "--validation-fraction", "0")) == 0
    run = tmp_path / "fashion-mnist-zero-small_cnn-seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["validation_images"] == 0 and metrics["best_val_accuracy"] is None
    assert metrics["epochs_run"] == 2
