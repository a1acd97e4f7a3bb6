"""Methods with several training stages: each compiles with its own optimizer, trains
its own parts, keeps its own history and checkpoint, and resumes."""

import json

import keras
import numpy as np
import pytest
from test_methods import read_csv, train_args

from playing_distraction import checkpoints, methods
from playing_distraction.cli import train_main
from playing_distraction.config import parse_config
from playing_distraction.training import build_model


def freeze_all_but_logits(model):
    for layer in model.layers:
        layer.trainable = layer.name == "logits"


HEAD_THEN_ALL = [
    methods.Stage("head", epochs=1, optimizer={"optimizer": "sgd", "learning_rate": 0.05},
                  trainable=freeze_all_but_logits),
    methods.Stage("all"),
]
ARGS = ("--occlusion", "none", "--epochs", "2", "--patience", "5")


@pytest.fixture
def two_stages(monkeypatch):
    """The baseline, trained as a method with two stages would be: the head alone with
    SGD for one epoch, then everything with Adam."""
    monkeypatch.setattr(methods.Distraction, "stages", lambda self, config: HEAD_THEN_ALL)


def history(path):
    return [{key: value for key, value in row.items() if key != "seconds"}
            for row in read_csv(path)]


def test_two_stages_train_in_turn_and_report_each(two_stages, fashion_dir, tmp_path):
    assert train_main(train_args(fashion_dir, tmp_path, *ARGS)) == 0
    run = next(tmp_path.iterdir())
    assert len(read_csv(run / "history.csv")) == 1  # the first stage keeps the old name
    assert len(read_csv(run / "history-all.csv")) == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert [stage["stage"] for stage in metrics["stages"]] == ["head", "all"]
    assert [stage["epochs_run"] for stage in metrics["stages"]] == [1, 2]
    assert metrics["epochs_run"] == 2  # the stage whose model is tested
    assert not list(run.glob("checkpoint*"))


def test_a_stage_trains_only_what_it_leaves_trainable_with_its_own_optimizer(
        two_stages, fashion_dir, tmp_path, monkeypatch):
    """Stopped right after the first stage, whose finished checkpoint holds the weights
    it ended with: only the head moved from the seeded initial weights. Resumed from
    there, the run ends as an uninterrupted one."""
    original = checkpoints.Checkpoint.write

    def write(self, epochs_done, stopped=False, finished=False):
        original(self, epochs_done, stopped, finished)
        if finished:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(checkpoints.Checkpoint, "write", write)
        assert train_main(train_args(fashion_dir, tmp_path / "cut", *ARGS)) == 130
    run = next((tmp_path / "cut").iterdir())
    with np.load(run / checkpoints.CHECKPOINT) as stored:
        meta = json.loads(str(stored["meta"]))
        saved = [stored[f"model_{i}"] for i in range(sum(k.startswith("model_") for k in stored))]
        optimizer_variables = sum(key.startswith("optimizer_") for key in stored)
    assert meta["finished"] and meta["epochs_done"] == 1
    config = parse_config(train_args(fashion_dir, tmp_path / "cut", *ARGS)).for_classes(10)
    keras.utils.set_random_seed(config.seed)
    classifier, _ = build_model(config, 10)
    moved = {variable.path for variable, value in zip(classifier.variables, saved)
             if not np.array_equal(np.asarray(variable), value)}
    assert moved == {"logits/kernel", "logits/bias"}
    # SGD with momentum: iterations, learning rate and one momentum per head variable
    # (Adam over every variable would hold two per variable).
    assert optimizer_variables == 2 + 2

    assert train_main(train_args(fashion_dir, tmp_path / "cut", *ARGS, "--resume")) == 0
    assert train_main(train_args(fashion_dir, tmp_path / "whole", *ARGS)) == 0
    whole = tmp_path / "whole" / run.name
    assert (run / "predictions.csv").read_text() == (whole / "predictions.csv").read_text()


@pytest.mark.parametrize("stop", ["in the first stage", "in the second stage"])
def test_a_run_interrupted_in_either_stage_resumes_to_the_same_result(
        two_stages, fashion_dir, tmp_path, monkeypatch, stop):
    assert train_main(train_args(fashion_dir, tmp_path / "whole", *ARGS)) == 0
    whole = next((tmp_path / "whole").iterdir())
    calls = []
    original = checkpoints.Checkpoint.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        original(self, epoch, logs)
        calls.append(self.path.name)
        if len(calls) == (1 if stop == "in the first stage" else 2):
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(checkpoints.Checkpoint, "on_epoch_end", on_epoch_end)
        assert train_main(train_args(fashion_dir, tmp_path / "cut", *ARGS)) == 130
    run = tmp_path / "cut" / whole.name
    expected = ["checkpoint.npz"] if stop == "in the first stage" else [
        "checkpoint-all.npz", "checkpoint.npz"]
    assert sorted(path.name for path in run.glob("checkpoint*")) == expected
    assert train_main(train_args(fashion_dir, tmp_path / "cut", *ARGS, "--resume")) == 0
    for name in ("history.csv", "history-all.csv"):
        assert history(run / name) == history(whole / name)
    assert (run / "predictions.csv").read_text() == (whole / "predictions.csv").read_text()


def test_one_stage_runs_keep_their_files_and_metrics(fashion_dir, tmp_path):
    assert train_main(train_args(fashion_dir, tmp_path, "--occlusion", "none")) == 0
    run = next(tmp_path.iterdir())
    assert sorted(path.name for path in run.iterdir()) == [
        "backbone.weights.h5", "config.json", "history.csv", "metrics.json", "model.keras",
        "predictions.csv"]
    assert "stages" not in json.loads((run / "metrics.json").read_text())
