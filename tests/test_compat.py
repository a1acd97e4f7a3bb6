"""Backward compatibility with what version 0.1 (commit c114db6) wrote and accepted.

``tests/fixtures/v0_1`` holds a tiny Fashion-MNIST dataset, two run folders (one
finished, one interrupted after its first epoch) and snapshots of ``train.py``'s
flags and run names, all made by that commit (see its README.md). These tests use
public entry points and the files on disk only, so that they keep holding whatever
the modules inside the package become.
"""

import csv
import gzip
import hashlib
import json
import re
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from playing_distraction.cli import evaluate_main, train_main
from playing_distraction.config import TrainConfig, build_parser, parse_config
from playing_distraction.runs import method_name

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v0_1"
DATA = FIXTURES / "fmnist"
FINISHED = FIXTURES / "runs" / "fashion-mnist-pairwise-hnc_mse-small_cnn-seed0"
INTERRUPTED = FIXTURES / "runs" / "fashion-mnist-zero-small_cnn-seed0"
# The commands that made the two runs (fixtures/v0_1/README.md), without --data-dir
# and --out-dir, which the tests give.
COMMON = ["--dataset", "fashion-mnist", "--epochs", "2", "--batch-size", "16",
          "--learning-rate", "0.001", "--verbose", "0"]
FINISHED_FLAGS = [*COMMON, "--method", "pairwise", "--hnc", "mse"]
INTERRUPTED_FLAGS = COMMON


def relocated(run, parent, data=DATA):
    """A copy of a fixture run in ``parent`` whose config points at the dataset
    folder ``data`` (what a user does after moving a dataset)."""
    copy = Path(shutil.copytree(run, Path(parent) / run.name))
    config = json.loads((copy / "config.json").read_text())
    config["data_path"] = str(data)
    (copy / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return copy


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def without_seconds(rows):
    return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]


def read_idx(path):
    """The official Fashion-MNIST format: gzipped IDX, big-endian dimensions."""
    raw = gzip.decompress(path.read_bytes())
    rank = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * k:8 + 4 * k], "big") for k in range(rank))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * rank).reshape(shape)


def fixture_test_set(size):
    """The fixture's test images as the run saw them: grey to RGB, resized
    bilinearly to ``size``, rounded to uint8; and their labels."""
    import tensorflow as tf

    images = read_idx(DATA / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(DATA / "t10k-labels-idx1-ubyte.gz")
    rgb = np.repeat(images[..., None], 3, axis=-1).astype("float32")
    resized = tf.image.resize(rgb, (size, size), method="bilinear", antialias=True)
    return np.round(np.clip(resized.numpy(), 0, 255)).astype(np.uint8), labels


# ------------------------------------------------------------------ the fixtures


def test_fixtures_are_as_version_0_1_wrote_them():
    finished = {path.name for path in FINISHED.iterdir()}
    assert finished == {"config.json", "history.csv", "metrics.json", "model.keras",
                        "predictions.csv"}
    interrupted = {path.name for path in INTERRUPTED.iterdir()}
    assert interrupted == {"config.json", "history.csv", "checkpoint.npz"}
    assert len(read_csv(INTERRUPTED / "history.csv")) == 1
    assert sorted(path.name for path in DATA.iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


def test_saved_configs_still_load():
    for run in (FINISHED, INTERRUPTED):
        saved = json.loads((run / "config.json").read_text())
        config = TrainConfig.from_dict(saved)
        assert config.default_run_name == saved["run_name"] == run.name
        assert method_name(config.to_dict()) == method_name(saved)


# --------------------------------------------------------- a finished run evaluates


@pytest.mark.parametrize("models", [False, True], ids=["no-models", "models"])
def test_finished_run_evaluates(tmp_path, models):
    data = shutil.copytree(DATA, tmp_path / "moved" / "fmnist")
    run = relocated(FINISHED, tmp_path / "runs", data)
    # A copy of it is the baseline, the run itself a method: its column is named from
    # its config (evaluate.py refuses one folder given twice).
    baseline = relocated(FINISHED, tmp_path / "copy", data)
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    out = tmp_path / "reports"
    argv = ["--baseline", str(baseline), "--method", str(run), "--out-dir", str(out)]
    assert evaluate_main(argv + ([] if models else ["--no-models"])) == 0

    accuracy = json.loads((run / "metrics.json").read_text())["test_accuracy"]
    assert 0.1 < accuracy < 1.0, "the fixture should have learnt something"
    rows = read_csv(out / "runs.csv")
    assert [row["method"] for row in rows] == ["baseline", "pairwise + HNC-mse"]
    with open(out / "metrics.csv", newline="") as handle:
        table = list(csv.reader(handle))
    # The main table: a row per metric, a column per method (one run each: no ± std).
    accuracy_row = next(row for row in table if row[0].startswith("Accuracy"))
    for row in rows:
        assert float(row["accuracy"]) == pytest.approx(accuracy, abs=1e-12)
        cell = accuracy_row[table[0].index(row["method"])]
        assert float(re.search(r"\d+\.\d+", cell).group()) == pytest.approx(accuracy,
                                                                           abs=5e-4)
        assert ("erased_accuracy" in row) == models
        if models:
            assert 0.0 <= float(row["erased_accuracy"]) <= 1.0
    assert (out / "robustness.csv").exists() == models
    assert (out / "inspection.csv").exists() == models
    assert (out / "gradcam.png").exists() == models
    # The run folder is read, never written.
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before


def test_finished_model_loads_and_predicts_its_saved_predictions():
    config = json.loads((FINISHED / "config.json").read_text())
    metrics = json.loads((FINISHED / "metrics.json").read_text())
    images, labels = fixture_test_set(config["image_size"])
    digest = hashlib.sha256(images.tobytes())
    digest.update(labels.astype(np.int64).tobytes())
    assert digest.hexdigest() == metrics["test_images_sha256"], \
        "these are not the images the run was tested on"

    model = keras.models.load_model(FINISHED / "model.keras")
    logits = model.predict(images.astype("float32") / 255.0, verbose=0)
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    rows = read_csv(FINISHED / "predictions.csv")
    assert [int(row["label"]) for row in rows] == labels.tolist()
    saved = np.array([[float(row[f"p{k}"]) for k in range(10)] for row in rows])
    np.testing.assert_allclose(probabilities, saved, atol=1e-5)
    assert [int(row["prediction"]) for row in rows] == probabilities.argmax(axis=1).tolist()


def test_current_code_retrains_the_finished_run_as_version_0_1_did(tmp_path):
    """Same command, same numbers: the training itself has not changed (equal to
    float round-off, which may differ on other CPUs). One default has changed since:
    small_cnn starts from its shipped weights, so 0.1's random start is asked for."""
    assert train_main([*FINISHED_FLAGS, "--weights", "none", "--data-dir", str(DATA),
                       "--out-dir", str(tmp_path)]) == 0
    run = tmp_path / FINISHED.name
    history, saved = (read_csv(path / "history.csv") for path in (run, FINISHED))
    assert [sorted(row) for row in history] == [sorted(row) for row in saved]
    for row, old in zip(without_seconds(history), without_seconds(saved)):
        for key in row:
            assert float(row[key]) == pytest.approx(float(old[key]), rel=1e-4, abs=1e-5), key
    metrics, old = (json.loads((path / "metrics.json").read_text()) for path in (run, FINISHED))
    for key in ("test_accuracy", "epochs_run", "best_epoch", "test_images_sha256"):
        assert metrics[key] == old[key], key
    probabilities, old = ([[float(row[f"p{k}"]) for k in range(10)]
                           for row in read_csv(path / "predictions.csv")]
                          for path in (run, FINISHED))
    np.testing.assert_allclose(probabilities, old, atol=1e-4)


# ---------------------------------------------------------- an interrupted run resumes


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """The interrupted fixture run, resumed by the current code, and the output."""
    out = tmp_path_factory.mktemp("resumed")
    run = relocated(INTERRUPTED, out)
    code = train_main([*INTERRUPTED_FLAGS, "--data-dir", str(DATA), "--out-dir", str(out),
                       "--resume"])
    return code, run


def test_interrupted_run_resumes_and_finishes(resumed):
    code, run = resumed
    assert code == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2
    assert (run / "model.keras").exists() and (run / "predictions.csv").exists()
    assert not (run / "checkpoint.npz").exists()
    history = read_csv(run / "history.csv")
    assert len(history) == 2
    # The first epoch is the interrupted run's, kept as it was written.
    assert history[0] == read_csv(INTERRUPTED / "history.csv")[0]
    assert [row["epoch"] for row in history] == ["0", "1"]


def test_resumed_run_ends_as_an_uninterrupted_run(resumed, tmp_path):
    _, run = resumed
    assert train_main([*INTERRUPTED_FLAGS, "--weights", "none", "--data-dir", str(DATA),
                       "--out-dir", str(tmp_path)]) == 0
    whole = tmp_path / run.name
    assert (run / "predictions.csv").read_bytes() == (whole / "predictions.csv").read_bytes()
    assert without_seconds(read_csv(run / "history.csv")) == \
        without_seconds(read_csv(whole / "history.csv"))
    again, metrics = (json.loads((path / "metrics.json").read_text()) for path in (run, whole))
    for key in ("test_accuracy", "test_loss", "epochs_run", "best_epoch", "best_val_accuracy",
                "test_images_sha256"):
        assert again[key] == metrics[key], key


# ------------------------------------------------------------------ the command line


def current_flags():
    return {option: action for action in build_parser()._actions
            for option in action.option_strings
            if option.startswith("--") and option != "--help"}


def test_flags_of_version_0_1_keep_their_defaults_and_choices():
    """Every flag of 0.1 is still there with the same default and its choices (a flag
    or a choice added since is compatible: run configs without it resume at its
    default)."""
    snapshot = json.loads((FIXTURES / "flags.json").read_text())
    flags = current_flags()
    assert sorted(set(snapshot) - set(flags)) == []
    # Flags whose default a method may change (--optimizer, say) default to None on the
    # command line; a run of 0.1's methods resolves them to 0.1's value.
    resolved = parse_config(["--weights", "none"]).to_dict()
    for flag in snapshot:
        action = flags[flag]
        default = json.loads(json.dumps(action.default))
        if default is None and snapshot[flag]["default"] is not None:
            default = resolved[action.dest]
        assert default == snapshot[flag]["default"], flag
        # Every choice 0.1 took is still taken (a new dataset, say, may be added).
        old = snapshot[flag]["choices"]
        assert (action.choices is None) == (old is None), flag
        assert old is None or set(old) <= set(action.choices), flag


RUN_NAMES = json.loads((FIXTURES / "run_names.json").read_text())


@pytest.mark.parametrize("case", RUN_NAMES, ids=[" ".join(case["args"]) or "defaults"
                                                 for case in RUN_NAMES])
def test_run_names_and_columns_are_those_of_version_0_1(case):
    config = parse_config(case["args"])
    assert config.default_run_name == case["run_name"]
    assert method_name(config.to_dict()) == case["column"]


# ----------------------------------------------------------------------- the README

IMPORT = re.compile(r"^[ \t]*from playing_distraction import (\([^)]*\)|[^\n]*)", re.M)


def readme_imports():
    """(statement, names) of every ``from playing_distraction import ...`` in the
    README's Python blocks, parenthesised multi-line imports included."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    found = []
    for block in blocks:
        for match in IMPORT.finditer(block):
            text = re.sub(r"#[^\n]*", "", match.group(1)).strip("() \n")
            names = [part.split(" as ")[0].strip() for part in text.split(",")]
            found.append((match.group(0).strip(), [name for name in names if name]))
    return found


def test_every_name_the_readme_imports_from_the_package_is_there():
    statements = readme_imports()
    names = {name for _, found in statements for name in found}
    assert len(statements) >= 2 and {"DistractionModel", "PairwiseModel"} <= names, statements
    for statement, found in statements:
        namespace = {}
        exec(statement, namespace)  # noqa: S102 - the README's own import lines
        assert all(namespace.get(name) is not None for name in found), statement
