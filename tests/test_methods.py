"""train.py and evaluate.py with --method pairwise and --hnc: the resolved config, run
folders, resuming, errors found with the data, and the paper-style tables."""

import csv
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from test_resume import history_rows, interrupt_after
from test_saving import LOAD_WITHOUT_PACKAGE

from playing_distraction import checkpoints
from playing_distraction.backbones import BACKBONES
from playing_distraction.cli import evaluate_main, train_main
from playing_distraction.config import TrainConfig, parse_config
from playing_distraction.errors import UserError
from playing_distraction.runs import method_name


def train_args(fashion_dir, out_dir, *extra):
    return ["--dataset", "fashion-mnist", "--data-dir", str(fashion_dir), "--epochs", "1",
            "--batch-size", "16", "--learning-rate", "0.0003", "--verbose", "0",
            "--out-dir", str(out_dir), *extra]


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_pairwise_defaults_come_from_the_backbone_registry(backbone):
    config = parse_config(["--method", "pairwise", "--backbone", backbone, "--weights", "none"])
    assert config.cam_module_layer == BACKBONES[backbone].cam_module_layer
    assert config.cam_layer == BACKBONES[backbone].last_conv
    assert (config.occlusion, config.gamma, config.alpha, config.beta, config.pairwise_loss) == (
        "none", 0.7, 1.0, 2.0, "full")


def test_resnet50_cam_module_sits_on_the_input_of_its_last_stage():
    assert BACKBONES["resnet50"].cam_module_layer == "conv4_block6_out"


def test_distraction_defaults_are_unchanged_and_leave_pairwise_fields_empty():
    config = parse_config([])
    assert (config.method, config.occlusion, config.probability, config.threshold) == (
        "distraction", "zero", 0.25, 0.85)
    assert config.cam_module_layer is None and config.hnc == "none" and config.hnc_weight is None


@pytest.mark.parametrize("args, weight", [
    (["--hnc", "mse"], 0.07),
    (["--hnc", "kd"], 0.005),
    (["--hnc", "kd", "--hnc-weight", "0.02"], 0.02),
])
def test_hnc_weight_defaults_to_the_authors_value_of_its_form(args, weight):
    assert parse_config(args).hnc_weight == weight


@pytest.mark.parametrize("classes, given, expected", [
    (10, None, 1), (11, None, 2), (200, None, 20), (1000, None, 100), (2, None, 1), (10, 4, 4),
])
def test_hnc_top_k_resolves_with_the_number_of_classes(classes, given, expected):
    config = TrainConfig(hnc="mse", hnc_top_k=given).resolved()
    assert config.hnc_top_k == given
    assert config.for_classes(classes).hnc_top_k == expected


def test_hnc_top_k_must_leave_the_true_class_out():
    with pytest.raises(ValueError, match="--hnc-top-k 10 exceeds the 9 negative classes"):
        TrainConfig(hnc="mse", hnc_top_k=10).resolved().for_classes(10)
    assert TrainConfig().resolved().for_classes(10).hnc_top_k is None  # HNC off


@pytest.mark.parametrize("args, tag, name", [
    ([], "zero", "0-occlusion"),
    (["--occlusion", "none"], "none", "baseline"),
    (["--method", "pairwise"], "pairwise", "pairwise"),
    (["--method", "pairwise", "--pairwise-loss", "category"], "pairwise-category",
     "pairwise (category only)"),
    (["--method", "pairwise", "--pairwise-loss", "attention_mining", "--hnc", "kd"],
     "pairwise-attention_mining-hnc_kd", "pairwise (attention mining) + HNC-kd"),
    (["--occlusion", "none", "--hnc", "kd"], "none-hnc_kd", "HNC-kd"),
    (["--hnc", "mse"], "zero-hnc_mse", "0-occlusion + HNC-mse"),
])
def test_run_folders_and_table_columns_name_the_method(args, tag, name):
    config = parse_config(args)
    assert config.default_run_name == f"fashion-mnist-mini-{tag}-small_cnn-seed0"
    assert method_name(json.loads(json.dumps(config.to_dict()))) == name


def test_configs_written_before_method_and_hnc_existed_name_distraction_runs():
    assert method_name({"occlusion": "one"}) == "1-occlusion"
    assert method_name({"occlusion": "none"}) == "baseline"


def test_a_run_of_a_method_this_version_does_not_know_is_one_clear_error():
    with pytest.raises(UserError, match="--method gain, which this version does not know"):
        method_name({"method": "gain"})


def test_pairwise_run_with_hnc_end_to_end(tmp_path, fashion_dir):
    """A finished run: resolved config, the scheme's terms per epoch, and a saved model
    that is the plain classifier (loads without this package, predicts the saved
    probabilities)."""
    assert train_main(train_args(fashion_dir, tmp_path, "--method", "pairwise", "--hnc", "mse",
                                 "--epochs", "2")) == 0
    run = tmp_path / "fashion-mnist-pairwise-hnc_mse-small_cnn-seed0"
    config = json.loads((run / "config.json").read_text())
    assert (config["method"], config["occlusion"], config["cam_module_layer"]) == (
        "pairwise", "none", "block2b")
    assert (config["hnc"], config["hnc_weight"], config["hnc_top_k"]) == ("mse", 0.07, 1)
    rows = read_csv(run / "history.csv")
    assert len(rows) == 2
    columns = set(rows[0])
    assert {"side_loss", "erased_loss", "kl_loss", "erased_area", "hnc_loss"} <= columns
    assert not any(name.startswith("val_") and name != "val_accuracy" and name != "val_loss"
                   for name in columns)
    assert all(0.0 < float(row["erased_area"]) < 1.0 for row in rows)
    assert not (run / checkpoints.CHECKPOINT).exists()

    loaded = keras.models.load_model(run / "model.keras")
    assert not any(type(layer).__module__.startswith("playing_distraction")
                   for layer in loaded.layers)
    assert [layer.name for layer in loaded.layers][-2:] == ["head_pool", "logits"]
    images = np.random.default_rng(0).random((4, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    done = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_PACKAGE, str(tmp_path / "images.npy"),
                           str(run / "model.keras")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    outside = np.array(json.loads(done.stdout.strip().splitlines()[-1])[str(run / "model.keras")])
    np.testing.assert_allclose(outside, loaded.predict(images, verbose=0), rtol=1e-5, atol=1e-5)


def test_interrupted_pairwise_hnc_run_resumes_to_the_same_result(fashion_dir, tmp_path,
                                                                 monkeypatch):
    """The checkpoint holds the scheme's own variables too (CAM module, erased head)."""
    args = ("--epochs", "3", "--patience", "5", "--method", "pairwise", "--hnc", "kd")
    assert train_main(train_args(fashion_dir, tmp_path / "whole", *args)) == 0
    whole = next((tmp_path / "whole").iterdir())
    with monkeypatch.context() as patch:
        interrupt_after(0, patch)
        assert train_main(train_args(fashion_dir, tmp_path / "cut", *args)) == 130
    run = tmp_path / "cut" / whole.name
    assert (run / checkpoints.CHECKPOINT).exists()
    assert train_main(train_args(fashion_dir, tmp_path / "cut", *args, "--resume")) == 0
    assert history_rows(run) == history_rows(whole)
    assert (run / "predictions.csv").read_text() == (whole / "predictions.csv").read_text()


def test_runs_started_before_the_new_flags_resume_and_other_methods_are_refused(
        fashion_dir, tmp_path, monkeypatch, capsys):
    args = ("--epochs", "2")
    with monkeypatch.context() as patch:
        interrupt_after(0, patch)
        assert train_main(train_args(fashion_dir, tmp_path, *args)) == 130
    run = tmp_path / "fashion-mnist-zero-small_cnn-seed0"
    # A config.json as the previous version wrote it: none of the new fields.
    saved = json.loads((run / "config.json").read_text())
    new_fields = ("method", "gamma", "alpha", "beta", "pairwise_loss", "cam_module_layer",
                  "cam_module_filters", "hnc", "hnc_weight", "hnc_top_k", "hnc_temperature")
    old = {key: value for key, value in saved.items() if key not in new_fields}
    (run / "config.json").write_text(json.dumps(old, indent=2))
    capsys.readouterr()
    assert train_main(train_args(fashion_dir, tmp_path, *args, "--resume", "--hnc", "mse",
                                 "--run-name", run.name)) == 1
    assert "it was started with other --hnc" in capsys.readouterr().err
    assert train_main(train_args(fashion_dir, tmp_path, *args, "--resume")) == 0
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 2


@pytest.mark.parametrize("extra, message", [
    (("--hnc", "mse", "--hnc-top-k", "10"),
     "train.py: error: --hnc-top-k 10 exceeds the 9 negative classes of fashion-mnist"),
    (("--method", "pairwise", "--cam-module-layer", "conv4_block6_out"),
     "train.py: error: --cam-module-layer conv4_block6_out: small_cnn_classifier has no layer "
     "of that name"),
    (("--method", "pairwise", "--cam-module-layer", "head_pool"),
     "train.py: error: layer head_pool has output shape (None, 128); the CAM module needs a "
     "(batch, h, w, channels) feature map"),
    (("--cam-layer", "nope"),
     "train.py: error: --cam-layer nope: small_cnn_classifier has no layer of that name"),
])
def test_errors_found_with_the_data_and_model_are_one_line_and_leave_no_run(
        fashion_dir, tmp_path, capsys, extra, message):
    assert train_main(train_args(fashion_dir, tmp_path / "out", *extra)) == 1
    assert capsys.readouterr().err.strip() == message
    assert not (tmp_path / "out").exists()


def test_evaluate_compares_pairwise_and_hnc_with_the_baseline(fashion_dir, tmp_path, capsys):
    """Top-1 and top-5 accuracy, robustness and the focus area, one column per method."""
    groups = {"baseline": ("--occlusion", "none"), "pairwise": ("--method", "pairwise"),
              "HNC-mse": ("--occlusion", "none", "--hnc", "mse")}
    runs = {}
    for name, extra in groups.items():
        assert train_main(train_args(fashion_dir, tmp_path / name, *extra)) == 0
        runs[name] = str(next((tmp_path / name).iterdir()))
    out = tmp_path / "reports"
    assert evaluate_main(["--baseline", runs["baseline"], "--method", runs["pairwise"],
                          "--method", runs["HNC-mse"], "--out-dir", str(out),
                          "--figure-images", "2"]) == 0
    metrics = {row["Metric"]: row for row in read_csv(out / "metrics.csv")}
    for name, path in runs.items():
        predictions = read_csv(f"{path}/predictions.csv")
        labels = np.array([int(row["label"]) for row in predictions])
        probabilities = np.array([[float(row[f"p{k}"]) for k in range(10)] for row in predictions])
        top5 = np.mean([label in np.argsort(-p)[:5] for label, p in zip(labels, probabilities)])
        assert metrics["Top-5 accuracy"][name].startswith(f"{top5:.3f}")
        assert metrics["Accuracy"][name].startswith(
            f"{np.mean(probabilities.argmax(axis=1) == labels):.3f}")
    inspection = read_csv(out / "inspection.csv")
    assert inspection[1][""].startswith("Focus area")
    assert all(" ± " in inspection[1][name] for name in groups)
    assert set(read_csv(out / "robustness.csv")[0]) == {"Metric", *groups}
    assert "| Metric | baseline | pairwise | HNC-mse |" in capsys.readouterr().out
