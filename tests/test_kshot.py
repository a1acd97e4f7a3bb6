"""The k-shot protocol (PAPERS.md §2, seed 001 Sec. 4.1): the split, its flags, the
grid of runs and their run folders."""

import json

import numpy as np
import pytest

from playing_distraction.cli import train_main
from playing_distraction.config import parse_config
from playing_distraction.pipeline import Prepared
from playing_distraction.splits import KShotSplit, split_of_run

CLASSES = 4


def parts(train_per_class=12, test_per_class=4, validation_per_class=0):
    """Decoded parts as ``prepare`` makes them; every image holds its own number."""
    made, number = {}, 0
    for name, per_class in (("train", train_per_class), ("validation", validation_per_class),
                            ("test", test_per_class)):
        if not per_class:
            continue
        labels = np.repeat(np.arange(CLASSES), per_class)
        images = (number + np.arange(len(labels)))[:, None, None, None] * np.ones(
            (1, 2, 2, 3), np.int64)
        number += len(labels)
        made[name] = Prepared(images, labels, [], np.arange(len(labels)))
    return made


def ids(prepared):
    return set(prepared.images[:, 0, 0, 0].tolist())


def test_a_draw_has_k_training_and_5_validation_and_5_test_images_per_class_disjoint():
    split = KShotSplit(3, seed=0).assign(parts())
    (train, _), (validation, _), (test, _) = (split[name] for name in
                                              ("train", "validation", "test"))
    for prepared, count in ((train, 3), (validation, 5), (test, 5)):
        assert np.array_equal(np.bincount(prepared.labels), [count] * CLASSES)
    assert not ids(train) & ids(validation) and not ids(train) & ids(test)
    assert not ids(validation) & ids(test)


def test_the_pool_is_every_part_and_items_name_their_part():
    pooled = KShotSplit(None, seed=0).assign(parts(12, 4, 2))
    everything = set().union(*(ids(prepared) for prepared, _ in pooled.values()))
    assert everything == set(range(CLASSES * 18))
    items = [str(item) for prepared, _ in pooled.values() for item in prepared.items]
    assert {item.split(":")[0] for item in items} == {"train", "validation", "test"}
    assert len(set(items)) == len(items)


def test_all_trains_on_the_rest():
    split = KShotSplit(None, seed=1).assign(parts())
    assert np.array_equal(np.bincount(split["train"][0].labels), [16 - 10] * CLASSES)


def test_draws_are_seeded_and_nested_over_k():
    first = KShotSplit(5, seed=2).assign(parts())
    again = KShotSplit(5, seed=2).assign(parts())
    other = KShotSplit(5, seed=3).assign(parts())
    for name in ("train", "validation", "test"):
        assert ids(first[name][0]) == ids(again[name][0])
    assert ids(first["test"][0]) != ids(other["test"][0])
    one = KShotSplit(1, seed=2).assign(parts())
    every = KShotSplit(None, seed=2).assign(parts())
    assert ids(one["train"][0]) < ids(first["train"][0]) < ids(every["train"][0])
    for name in ("validation", "test"):  # the same held-out images at every k
        assert ids(one[name][0]) == ids(first[name][0]) == ids(every[name][0])


def test_the_test_set_is_recreated_from_the_recorded_split():
    split = KShotSplit(2, seed=4)
    recorded = {"split": json.loads(json.dumps(split.to_dict()))}
    again = split_of_run(recorded)
    assert again == split
    test, indices = again.test(parts())
    assert indices is None
    expected = split.assign(parts())["test"][0]
    assert np.array_equal(test.images, expected.images)
    assert list(test.items) == list(expected.items)


def test_a_class_too_small_for_k_is_refused():
    with pytest.raises(Exception, match=r"--shots 7: class 0 has 16 images, and 7-shot needs "
                                        r"7 \+ 5 \+ 5"):
        KShotSplit(7, seed=0).assign(parts())


# ------------------------------------------------------------------ flags


def test_shots_flags_and_run_names():
    config = parse_config(["--shots", "1", "5", "all"])
    assert config.shots == ("1", "5", "all")
    single = parse_config(["--shots", "all", "--occlusion", "none"])
    assert single.default_run_name == "fashion-mnist-mini-kall-none-small_cnn-seed0"


@pytest.mark.parametrize(("argv", "message"), [
    (["--shots", "0"], "--shots takes positive whole numbers or 'all', got 0"),
    (["--shots", "two"], "--shots takes positive whole numbers or 'all', got two"),
    (["--shots", "5", "5"], "--shots: 5 is given twice"),
    (["--shots", "5", "--train-per-class", "10"], "--train-per-class does not apply to --shots"),
    (["--shots", "5", "--validation-fraction", "0.1"],
     "--validation-fraction does not apply to --shots"),
])
def test_bad_shots_are_one_line(tmp_path, capsys, argv, message):
    assert train_main([*argv, "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ the grid


def train(fashion_dir, out, *argv):
    return train_main(["--dataset", "fashion-mnist", "--data-dir", str(fashion_dir),
                       "--epochs", "1", "--batch-size", "2", "--verbose", "0",
                       "--out-dir", str(out), "--jit-compile", "off", "--classes", "0", "1",
                       "2", "--occlusion", "none", *argv])


def test_the_grid_trains_every_k_with_every_seed(fashion_dir, tmp_path, capsys):
    out = tmp_path / "models"
    assert train(fashion_dir, out, "--shots", "1", "all", "--repeats", "2",
                 "--verbose", "2") == 0
    # Which run of how many: k outer, seeds inner.
    progress = [line for line in capsys.readouterr().out.splitlines()
                if line.startswith("run ")]
    assert progress == ["run 1 of 4 (seed 0, k = 1)", "run 2 of 4 (seed 1, k = 1)",
                        "run 3 of 4 (seed 0, k = all)", "run 4 of 4 (seed 1, k = all)"]
    names = sorted(path.name for path in out.iterdir())
    assert names == [f"fashion-mnist-c0.1.2-{k}-none-small_cnn-seed{seed}"
                     for k in ("k1", "kall") for seed in (0, 1)]
    tests = {}
    for name in names:
        config = json.loads((out / name / "config.json").read_text())
        metrics = json.loads((out / name / "metrics.json").read_text())
        split = config["split"]
        assert split["kind"] == "k-shot" and config["shots"] == [name.split("-")[3][1:]]
        assert metrics["test_images"] == 15 and metrics["validation_images"] == 15
        assert metrics["train_images"] == (3 if "k1" in name else 3 * (16 - 10))
        tests[name] = (out / name / "predictions.csv").read_text().splitlines()[1:]
    # One seed tests on the same images at every k; seeds differ.
    first = [line.split(",")[0] for line in tests[names[0]]]
    assert first == [line.split(",")[0] for line in tests[names[2]]]
    assert first != [line.split(",")[0] for line in tests[names[1]]]


def test_a_k_larger_than_a_class_allows_is_one_line_before_any_run(fashion_dir, tmp_path,
                                                                  capsys):
    out = tmp_path / "models"
    assert train(fashion_dir, out, "--shots", "1", "7") == 1
    err = capsys.readouterr().err.strip()
    assert err == ("train.py: error: --shots 7: the smallest class has 16 images, and 7 "
                   "training + 5 validation + 5 test images per class are needed (largest "
                   "k it allows: 6)")
    assert not out.exists()


def test_a_named_grid_run_gets_its_k(fashion_dir, tmp_path):
    out = tmp_path / "models"
    assert train(fashion_dir, out, "--shots", "2", "--run-name", "mine") == 0
    assert [path.name for path in out.iterdir()] == ["mine-k2"]


# ------------------------------------------------------------------ evaluate.py


def test_evaluate_renders_the_k_shot_table_from_each_runs_own_test_set(fashion_dir, tmp_path,
                                                                      capsys):
    import csv

    from sklearn.metrics import accuracy_score

    from playing_distraction.cli import evaluate_main

    out = tmp_path / "models"
    grid = ("--shots", "1", "all", "--repeats", "2")
    assert train(fashion_dir, out, *grid) == 0
    assert train_main(["--dataset", "fashion-mnist", "--data-dir", str(fashion_dir),
                       "--epochs", "1", "--batch-size", "2", "--verbose", "0",
                       "--out-dir", str(out), "--jit-compile", "off", "--classes", "0", "1",
                       "2", "--method", "saliency", "--learning-rate", "0.05", *grid]) == 0
    capsys.readouterr()
    reports = tmp_path / "reports"
    assert evaluate_main(["--baseline", *map(str, sorted(out.glob("*-none-*"))),
                          "--method", *map(str, sorted(out.glob("*-saliency-scratch-*"))),
                          "--out-dir", str(reports)]) == 0
    printed = capsys.readouterr().out
    assert "| Method | 1 | all | AVG |" in printed
    assert (reports / "kshot.png").stat().st_size > 1000

    def accuracy(run):
        with open(run / "predictions.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        labels = [int(row["label"]) for row in rows]
        predicted = [int(row["prediction"]) for row in rows]
        return 100 * accuracy_score(labels, predicted)

    with open(reports / "kshot.csv", newline="") as handle:
        table = {row["Method"]: row for row in csv.DictReader(handle)}
    for name, tag in (("baseline", "none"), ("RGB + scratch SAL", "saliency-scratch")):
        per_k = {k: [accuracy(out / f"fashion-mnist-c0.1.2-{k}-{tag}-small_cnn-seed{seed}")
                     for seed in (0, 1)] for k in ("k1", "kall")}
        for k, column in (("k1", "1"), ("kall", "all")):
            values = per_k[k]
            assert table[name][column].strip("*") == (
                f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}")
        averages = [np.mean([per_k["k1"][i], per_k["kall"][i]]) for i in (0, 1)]
        assert table[name]["AVG"] == f"{np.mean(averages):.1f} ± {np.std(averages, ddof=1):.1f}"
    with open(reports / "runs.csv", newline="") as handle:
        assert sorted(row["shots"] for row in csv.DictReader(handle)) == ["1"] * 4 + ["all"] * 4

    # The saliency figures: a file for each kind that has an example in some pair of runs.
    def verdicts(run):
        with open(run / "predictions.csv", newline="") as handle:
            return np.array([row["label"] == row["prediction"] for row in csv.DictReader(handle)])

    better = worse = False
    for k in ("k1", "kall"):
        for seed in (0, 1):
            ours = verdicts(out / f"fashion-mnist-c0.1.2-{k}-saliency-scratch-small_cnn-seed{seed}")
            theirs = verdicts(out / f"fashion-mnist-c0.1.2-{k}-none-small_cnn-seed{seed}")
            better |= bool(np.any(ours & ~theirs))
            worse |= bool(np.any(~ours & theirs))
    assert better or worse  # else the check below would prove nothing
    for kind, expected in (("better", better), ("worse", worse)):
        path = reports / f"saliency_RGB___scratch_SAL_{kind}.png"
        assert path.is_file() == expected, kind
        assert not expected or f", {path.name}" in printed


def test_evaluate_refuses_to_mix_a_k_shot_grid_with_official_runs(fashion_dir, tmp_path,
                                                                  capsys):
    from playing_distraction.cli import evaluate_main

    out = tmp_path / "models"
    assert train(fashion_dir, out, "--shots", "1") == 0
    assert train(fashion_dir, out) == 0
    capsys.readouterr()
    assert evaluate_main(["--baseline", str(out / "fashion-mnist-c0.1.2-k1-none-small_cnn-seed0"),
                          "--method", str(out / "fashion-mnist-c0.1.2-none-small_cnn-seed0"),
                          "--out-dir", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert "is a k-shot run (--shots)" in err and len(err.splitlines()) == 1


def test_a_batch_larger_than_a_small_k_is_cut_to_the_training_images(fashion_dir, tmp_path,
                                                                    capsys):
    out = tmp_path / "models"
    argv = ["--dataset", "fashion-mnist", "--data-dir", str(fashion_dir), "--epochs", "1",
            "--verbose", "0", "--out-dir", str(out), "--jit-compile", "off", "--classes", "0",
            "1", "2", "--occlusion", "none", "--shots", "2", "--batch-size", "16"]
    assert train_main([*argv, "--verbose", "2", "--epochs", "1"]) == 0
    assert "--shots 2: --batch-size cut to the 6 training images" in capsys.readouterr().out
    run = out / "fashion-mnist-c0.1.2-k2-none-small_cnn-seed0"
    assert json.loads((run / "config.json").read_text())["batch_size"] == 6
    # Finished, skipped: the cut is no conflict.
    assert train_main([*argv, "--resume", "--verbose", "2"]) == 0
    assert "finished before" in capsys.readouterr().out


def test_a_pool_too_small_for_any_k_says_so(fashion_dir, tmp_path, capsys):
    from playing_distraction.protocols import check_shots

    class Data:
        parts = {"train": Prepared(None, np.repeat(np.arange(3), 6), [], None),
                 "test": Prepared(None, np.repeat(np.arange(3), 4), [], None)}

    with pytest.raises(Exception, match=r"\(no k fits\)"):  # 10: none left to train on
        check_shots(("all",), Data)
    Data.parts["test"] = Prepared(None, np.repeat(np.arange(3), 3), [], None)
    with pytest.raises(Exception, match=r"--shots 1: the smallest class has 9 images, and 1 "
                                        r"training \+ 5 validation \+ 5 test images per class "
                                        r"are needed \(no k fits\)"):
        check_shots(("1", "all"), Data)


def test_a_k_shot_run_whose_recorded_k_is_damaged_is_one_line(fashion_dir, tmp_path, capsys):
    from playing_distraction.cli import evaluate_main

    out = tmp_path / "models"
    assert train(fashion_dir, out, "--shots", "1") == 0
    run = out / "fashion-mnist-c0.1.2-k1-none-small_cnn-seed0"
    config = json.loads((run / "config.json").read_text())
    config["split"]["shots"] = "one"
    (run / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert evaluate_main(["--baseline", str(run), "--out-dir", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "its k-shot split's shots must be a positive integer or null, not 'one'" in err
