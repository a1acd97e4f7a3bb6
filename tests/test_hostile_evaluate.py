"""evaluate.py in a hostile world (issue 13): damaged model.keras, predictions.csv,
metrics.json and config.json files, a run folder given twice and two runs of one
method with one seed each end in one line naming the file and what to do - never a
traceback, never a table with a wrong number.

Real run folders are trained once per module, and every test damages copies of them;
the t-test tests write run folders (``test_reports.write_run``) of chosen accuracies.
"""

import csv
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ttest_rel
from test_methods import train_args
from test_reports import LABELS, hits, write_run

from conftest import fashion_part

from playing_distraction import evaluation
from playing_distraction.cli import evaluate_main, train_main
from playing_distraction.errors import UserError
from playing_distraction.layouts import write_fashion_mnist
from playing_distraction.reports import metrics_table, t_test_cell
from playing_distraction.runs import load_methods, load_run

EVALUATE = str(Path(__file__).resolve().parent.parent / "evaluate.py")
RETRAIN = "run its train.py command again with --resume"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Finished run folders of one epoch: the baseline with seeds 0 and 1, 0-occlusion
    with seed 0 (the conftest ``fashion_dir`` data)."""
    root = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)

    data = root / "fmnist"
    write_fashion_mnist(data, fashion_part(rng, 12), fashion_part(rng, 4))
    out = root / "runs"
    assert train_main(train_args(data, out, "--occlusion", "none", "--repeats", "2")) == 0
    assert train_main(train_args(data, out, "--occlusion", "zero")) == 0
    return {name: out / f"fashion-mnist-{method}-small_cnn-seed{seed}"
            for name, method, seed in (("base0", "none", 0), ("base1", "none", 1),
                                       ("zero0", "zero", 0))}


@pytest.fixture
def runs(trained, tmp_path):
    """Copies of the trained runs in tmp_path: baseline seeds 0 and 1 (base0, base1),
    0-occlusion seed 0 (zero0)."""
    return {name: shutil.copytree(path, tmp_path / "runs" / path.name)
            for name, path in trained.items()}


def evaluate(capsys, tmp_path, baseline, methods=(), models=False):
    """evaluate.py in-process: (exit code, stdout, stderr)."""
    argv = ["--baseline", *map(str, baseline), "--out-dir", str(tmp_path / "reports")]
    for group in methods:
        argv += ["--method", *map(str, group)]
    code = evaluate_main(argv + ([] if models else ["--no-models"]))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(code, err, tmp_path):
    """The one error line of a refusal; nothing was written."""
    assert code == 1
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("evaluate.py: error: ")
    assert not (tmp_path / "reports").exists()
    return err[len("evaluate.py: error: "):-1]


# ------------------------------------------------------------------ model.keras


def _random_bytes(data):
    return np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes()


def _first_half(data):
    return data[:len(data) // 2]


def _empty(data):
    return b""


def _garbled_inside(data):
    # The zip structure survives; a stretch of the weights does not (its CRC fails).
    middle = len(data) // 2
    return data[:middle] + bytes(255 - byte for byte in data[middle:middle + 1000]) + \
        data[middle + 1000:]


@pytest.mark.parametrize("damage", [_random_bytes, _first_half, _empty, _garbled_inside])
def test_a_damaged_model_is_one_line_before_any_slow_work(runs, tmp_path, capsys, damage):
    model = runs["zero0"] / "model.keras"
    model.write_bytes(damage(model.read_bytes()))
    code, out, err = evaluate(capsys, tmp_path, [runs["base0"]], [[runs["zero0"]]], models=True)
    message = refused(code, err, tmp_path)
    assert message.startswith(f"cannot load {model}: the file is damaged (")
    assert f"delete {runs['zero0']} and {RETRAIN}" in message
    assert "File not found" not in message
    assert "robustness and inspection" not in out  # refused before the first model


def test_the_script_refuses_a_truncated_model_without_a_traceback(runs, tmp_path):
    """As a user runs it: the check needs no TensorFlow, so stderr is the one line."""
    model = runs["zero0"] / "model.keras"
    model.write_bytes(_first_half(model.read_bytes()))
    done = subprocess.run([sys.executable, EVALUATE, "--baseline", str(runs["base0"]),
                           "--method", str(runs["zero0"])],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith(f"evaluate.py: error: cannot load {model}: the file is "
                                  "damaged (")
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stdout == "" and not (tmp_path / "reports").exists()


def _weights_not_hdf5(members):
    return members | {"model.weights.h5": b"not an HDF5 file" * 100}


def _no_config(members):
    return {name: data for name, data in members.items() if name != "config.json"}


def _config_not_json(members):
    return members | {"config.json": b"{\"class_name\": "}


@pytest.mark.parametrize("damage", [_weights_not_hdf5, _no_config, _config_not_json])
def test_an_intact_zip_of_the_wrong_contents_is_a_damaged_model(runs, damage):
    """What passes the zip check but not Keras (h5py's OSError, a KeyError, a JSON
    error) is the same one line from ``load_model``."""
    model = runs["zero0"] / "model.keras"
    with zipfile.ZipFile(model) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    model.unlink()
    with zipfile.ZipFile(model, "w") as archive:
        for name, data in damage(members).items():
            archive.writestr(name, data)
    with pytest.raises(UserError) as error:
        evaluation.load_model(load_run(runs["zero0"]))
    message = str(error.value)
    assert message.startswith(f"cannot load {model}: the file is damaged (")
    assert RETRAIN in message and "\n" not in message


# ------------------------------------------------------------------ predictions.csv


def edit_predictions(run, line, change):
    """Apply ``change(row)`` to the row on ``line`` (1 is the header) of predictions.csv."""
    path = run / "predictions.csv"
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    change(rows[line - 1])
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def _set(column, value):
    def change(row):
        row[3 + column] = value
    return change


def _most_probable(row):
    return int(np.argmax([float(value) for value in row[3:]]))


def _bump_a_lesser_class(row):
    k = (_most_probable(row) + 1) % 10
    row[3 + k] = f"{float(row[3 + k]) + 0.01:.6g}"


def _predict_another_class(row):
    row[2] = str((_most_probable(row) + 1) % 10)


@pytest.mark.parametrize("change, expected", [
    (_set(4, "nan"), "p4 is nan, not a probability between 0 and 1"),
    (_set(4, "inf"), "p4 is inf, not a probability between 0 and 1"),
    (_set(4, "-0.01"), "p4 is -0.01, not a probability between 0 and 1"),
    (_set(4, "1.5"), "p4 is 1.5, not a probability between 0 and 1"),
    (_bump_a_lesser_class, "the probabilities sum to 1.01, not 1"),
    (_predict_another_class, "is not the most probable class"),
])
def test_impossible_probabilities_are_refused_by_line(runs, tmp_path, capsys, change, expected):
    path = edit_predictions(runs["zero0"], 3, change)
    code, _, err = evaluate(capsys, tmp_path, [runs["base0"]], [[runs["zero0"]]])
    message = refused(code, err, tmp_path)
    assert message.startswith(f"{path}:3: ")
    assert expected in message
    assert f"delete {runs['zero0']} and {RETRAIN}" in message


def test_predictions_cut_short_at_a_row_end_are_refused(runs, tmp_path, capsys):
    """Every row left reads well; metrics.json's count of test images gives it away."""
    path = runs["zero0"] / "predictions.csv"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:21]))
    code, _, err = evaluate(capsys, tmp_path, [runs["zero0"]])
    assert refused(code, err, tmp_path) == (
        f"{path} holds 20 predictions, but {runs['zero0'] / 'metrics.json'} records 40 test "
        f"images; the file is damaged: delete {runs['zero0']} and {RETRAIN}")


# ------------------------------------------------------------------ metrics.json, config.json


def _replace(text):
    return lambda old: text


def _set_key(key, value):
    def change(text):
        values = json.loads(text)
        values[key] = value
        return json.dumps(values, indent=2)
    return change


@pytest.mark.parametrize("name, change, expected", [
    ("metrics.json", _replace("[1, 2]"), "is damaged (it holds a list, not a JSON object)"),
    ("config.json", _replace("null"), "is damaged (it holds null, not a JSON object)"),
    ("metrics.json", _set_key("seconds_per_epoch", float("nan")),
     "is damaged (NaN is not a number JSON allows)"),
    ("config.json", _set_key("threshold", float("inf")),
     "is damaged (Infinity is not a number JSON allows)"),
    ("metrics.json", _replace("{\"epochs_run\": 1, "), "is damaged (Expecting property name"),
    ("config.json", _set_key("seed", "0"), "seed must be an integer, not '0'"),
    ("config.json", _set_key("class_names", "Trouser"),
     "class_names must be a list of class names, not 'Trouser'"),
    ("metrics.json", _set_key("epochs_run", -1), "epochs_run must be a whole number"),
])
def test_a_damaged_json_file_is_one_line(runs, tmp_path, capsys, name, change, expected):
    path = runs["zero0"] / name
    path.write_text(change(path.read_text()))
    code, _, err = evaluate(capsys, tmp_path, [runs["base0"]], [[runs["zero0"]]])
    message = refused(code, err, tmp_path)
    assert message.startswith(f"{path} ")
    assert expected in message
    assert RETRAIN in message


# ------------------------------------------------------------------ one run, one seed


def test_a_run_folder_given_twice_in_one_group_is_refused(runs, tmp_path, capsys):
    base = runs["base0"]
    code, _, err = evaluate(capsys, tmp_path, [base], [[runs["zero0"], runs["zero0"]]])
    assert refused(code, err, tmp_path) == \
        f"run folder {runs['zero0']} is given twice; give each run once"


def test_a_run_folder_given_as_baseline_and_method_is_refused_by_its_real_path(
        runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(runs["base0"].parent)
    other = Path("..") / "runs" / runs["base0"].name / "."
    code, _, err = evaluate(capsys, tmp_path, [runs["base0"]], [[other]])
    assert refused(code, err, tmp_path) == \
        f"run folder {other} is given twice (also as {runs['base0']}); give each run once"


def test_two_runs_of_one_method_with_one_seed_are_refused(runs, tmp_path, capsys):
    again = shutil.copytree(runs["zero0"], tmp_path / "runs" / "rerun-of-seed0")
    code, _, err = evaluate(capsys, tmp_path, [runs["base0"], runs["base1"]],
                            [[runs["zero0"], again]])
    assert refused(code, err, tmp_path) == (
        f"{runs['zero0']} and {again} are both 0-occlusion runs with seed 0; the paired "
        "t-test pairs runs by seed: give one run per seed")


def test_a_repeated_seed_no_longer_makes_a_significance_that_does_not_exist(tmp_path, capsys):
    """The baseline has seeds 0 and 1; 0-occlusion has seed 1 and seed 0 twice (a re-run
    kept beside the first). The old t-test paired the baseline's seed-0 run with both
    seed-0 runs: three pairs from two seeds, and p = 0.020*."""
    runs = tmp_path / "runs"
    baseline = [write_run(runs / f"none-seed{seed}", LABELS, hits(LABELS, correct), seed=seed)
                for seed, correct in ((0, 5), (1, 6))]
    zero = [write_run(runs / name, LABELS, hits(LABELS, correct), seed=seed, occlusion="zero")
            for name, seed, correct in (("zero-seed0", 0, 7), ("zero-seed0-rerun", 0, 8),
                                        ("zero-seed1", 1, 8))]
    code, out, err = evaluate(capsys, tmp_path, baseline, [zero])
    assert "0.020*" not in out
    assert refused(code, err, tmp_path).startswith(
        f"{zero[0]} and {zero[1]} are both 0-occlusion runs with seed 0")
    # The table functions refuse such a method too, whoever built it.
    methods = load_methods(baseline, [zero[::2]])
    methods[1].runs.insert(1, load_run(zero[1]))
    scores = {m.name: [run.scores() for run in m.runs] for m in methods}
    with pytest.raises(UserError, match="both 0-occlusion runs with seed 0"):
        t_test_cell(methods[0], methods[1], scores)


def test_the_table_says_how_many_pairs_each_p_value_rests_on(tmp_path, capsys):
    """A method with a seed the baseline lacks is shown; that run stays unpaired."""
    runs = tmp_path / "runs"
    baseline = [write_run(runs / f"none-seed{seed}", LABELS, hits(LABELS, correct), seed=seed)
                for seed, correct in ((0, 5), (1, 6), (2, 5))]
    zero = [write_run(runs / f"zero-seed{seed}", LABELS, hits(LABELS, correct), seed=seed,
                      occlusion="zero") for seed, correct in ((0, 7), (1, 9), (2, 8))]
    one = [write_run(runs / f"one-seed{seed}", LABELS, hits(LABELS, correct), seed=seed,
                     occlusion="one") for seed, correct in ((1, 7), (2, 6), (7, 9))]
    methods = load_methods(baseline, [zero, one])
    table = metrics_table(methods, {m.name: [run.scores() for run in m.runs] for m in methods})
    assert "paired t-test over the seeds both have: 0-occlusion 3 pairs; 1-occlusion 2 pairs, " \
           "1 run unpaired)" in table.note
    assert table.columns == ["baseline", "0-occlusion", "1-occlusion"]
    assert table.cells[0][2] == "0.733 ± 0.153"  # all three 1-occlusion runs
    p = ttest_rel([0.7, 0.9, 0.8], [0.5, 0.6, 0.5]).pvalue
    # 1-occlusion against the baseline on seeds 1 and 2 alone: differences 0.1 and 0.1,
    # no spread; seed 7 is not paired with any baseline run.
    assert table.cells[-1] == ["—", f"{p:.3f}" + ("*" if p < 0.05 else ""), "n/a"]


def test_genuine_runs_still_make_every_table(runs, tmp_path, capsys):
    """The checks refuse none of what train.py writes (6-digit probabilities included)."""
    code, out, err = evaluate(capsys, tmp_path, [runs["base0"], runs["base1"]],
                              [[runs["zero0"]]])
    assert (code, err) == (0, "")
    assert "0-occlusion 1 pair" in out
    assert (tmp_path / "reports" / "metrics.md").is_file()
