"""The benchmark command: its arithmetic, its report and its answers to bad flags.

No test here asserts a speed: timings on a shared machine are not a test. The goals
are checked by running the benchmark (README, "Speed").
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import make_classifier, structured_images
from playing_distraction import bench
from playing_distraction.heatmaps import grad_cam


def _row(step_times, draws, memory=None):
    passes = {"forward": [0.1], "gradcam": [0.11], "gradcam_tape": [0.2],
              "tf_keras_vis": [1.1]}
    return bench._row("small_cnn", "float32", False, 16, 32, step_times, draws, passes,
                      memory or {"plain": (100, 300), "p=1": (120, 330)})


def test_row_builds_the_p025_epoch_from_its_clean_and_occluded_steps():
    # One lucky draw in four: the mean of the steps as drawn would flatter the scheme.
    step_times = {"plain": [1.0] * 8, "p=0.25": [1.02, 2.0, 1.02, 1.02, 1.02, 1.02, 1.02, 1.02],
                  "p=1": [2.0] * 8}
    draws = [False, True] + [False] * 6
    row = _row(step_times, draws)
    assert row["p025_clean_step"] == pytest.approx(1.02)
    assert row["p025_occluded_step"] == pytest.approx(2.0)
    assert row["epoch_p025"] == pytest.approx(0.75 * 1.02 + 0.25 * 2.0)
    assert row["epoch_p025_as_drawn"] == pytest.approx(np.mean(step_times["p=0.25"]))
    assert row["p025_occluded_share"] == pytest.approx(1 / 8)
    assert row["step_p1"] == pytest.approx(2.0)
    assert row["gradcam_forward"] == pytest.approx(1.1)
    assert row["tfkv_speedup"] == pytest.approx(10.0)
    assert row["images_per_second"]["plain"] == pytest.approx(16.0)
    # Memory: what a step allocates above what was resident before it.
    assert row["memory_step"] == pytest.approx(210 / 200)
    assert row["memory_peak"] == pytest.approx(330 / 300)


def test_row_without_occluded_draws_uses_the_p1_step():
    step_times = {"plain": [1.0] * 3, "p=0.25": [1.1] * 3, "p=1": [1.5] * 3}
    row = _row(step_times, [False] * 3, memory={"plain": None, "p=1": None})
    assert row["epoch_p025"] == pytest.approx(0.75 * 1.1 + 0.25 * 1.5)
    assert row["memory_step"] is None


def test_goals_judge_the_worst_row():
    rows = [{"epoch_p025": 1.05, "step_p1": 1.2, "gradcam_forward": 1.0, "tfkv_speedup": 9.0,
             "memory_step": 1.0},
            {"epoch_p025": 1.10, "step_p1": 1.3, "gradcam_forward": 1.1, "tfkv_speedup": 4.0,
             "memory_step": None}]
    results = {key: (worst, met) for key, _, _, worst, met in bench.goals(rows)}
    assert results["epoch_p025"] == (1.10, False)
    assert results["step_p1"] == (1.3, True)
    assert results["tfkv_speedup"] == (4.0, False)
    assert results["memory_step"] == (1.0, True)


def test_the_saliency_goal_is_judged_on_full_size_backbones_only():
    rows = [{"backbone": "small_cnn", "step_saliency": 1.6},
            {"backbone": "resnet50", "step_saliency": 1.18}]
    results = {key: (worst, met) for key, _, _, worst, met in bench.goals(rows)}
    assert results["step_saliency"] == (1.18, True)
    alone = {key: (worst, met) for key, _, _, worst, met in bench.goals(rows[:1])}
    assert alone["step_saliency"] == (None, None)  # small_cnn alone: no figure


def test_the_feature_augmentation_epoch_adds_the_bank_refresh_to_its_steps():
    # 2730 / 16 steps of 0.11 s against 0.10 s, and 1250 pair images at 0.016 s per 16.
    median = {"plain": 0.10, "feataug": 0.11, "dv_features": 0.016}
    steps = bench.EPOCH_IMAGES / 16
    expected = (steps * 0.11 + 0.016 / 16 * bench.PAIR_IMAGES) / (steps * 0.10)
    assert bench._epoch_feataug(median, 16) == pytest.approx(expected)
    assert (bench.EPOCH_IMAGES, bench.PAIR_IMAGES) == (2730, 1250)
    assert bench._epoch_feataug({"plain": 0.1}, 16) is None  # reports of earlier versions


def test_interleave_rotates_the_order_and_times_every_call():
    order = []
    functions = {name: (lambda name=name: order.append(name)) for name in "abc"}
    times = bench.interleave(functions, rounds=3, calls=2)
    assert order == list("aabbcc" "bbccaa" "ccaabb")
    assert all(len(values) == 6 and min(values) >= 0 for values in times.values())


def test_the_timed_tf_keras_vis_call_computes_the_same_maps():
    model = make_classifier()
    images, classes = structured_images(4), np.array([0, 1, 2, 1])
    reference = bench._tf_keras_vis(model, "features")(images, classes)
    np.testing.assert_allclose(grad_cam(model, images, classes), reference, atol=1e-3)


def test_bench_runs_and_writes_its_report(tmp_path, capsys):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CPU_ALLOCATOR_USE_BFC", None)
    done = subprocess.run(
        [sys.executable, "-m", "playing_distraction.bench", "--rounds", "1", "--calls", "2",
         "--precision", "float32", "--jit-compile", "off", "--batch-size", "4",
         "--json", str(tmp_path / "bench.json")],
        capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| small_cnn | 32 | float32 | off |" in done.stdout
    assert done.stdout.count("\n- ") == len(bench.GOALS)
    report = json.loads((tmp_path / "bench.json").read_text())
    (row,) = report["rows"]
    assert (row["backbone"], row["batch_size"], row["jit_compile"]) == ("small_cnn", 4, False)
    assert len(row["seconds"]) == 10 and min(row["seconds"].values()) > 0
    assert row["step_feataug"] == pytest.approx(row["seconds"]["feataug"]
                                                / row["seconds"]["plain"])
    assert row["epoch_feataug"] > row["step_feataug"] * 0.99  # the refresh costs something
    assert row["step_saliency"] == pytest.approx(row["seconds"]["saliency"]
                                                 / row["seconds"]["plain"])
    # The BFC allocator was turned on, so memory was measured on this CPU.
    (plain_before, plain_peak), (occluded_before, occluded_peak) = row["memory_bytes"].values()
    assert plain_peak > plain_before >= 0 and occluded_peak > occluded_before >= 0
    assert [goal["goal"] for goal in report["goals"]] == list(bench.GOALS)
    # The report is rendered again from the rows alone.
    assert bench.main(["--from-json", str(tmp_path / "bench.json")]) == 0
    assert capsys.readouterr().out == done.stdout


@pytest.mark.parametrize("args, message", [
    (["--rounds", "0"], "--rounds must be positive"),
    (["--calls", "-1"], "--calls must be positive"),
    (["--backbones", "vgg16"], "unknown backbone 'vgg16'"),
    (["--image-size", "8"], "--image-size 8 is below the 16 pixels that small_cnn needs"),
    (["--precision", "float64"], "argument --precision: invalid choice: 'float64'"),
])
def test_bad_flags_give_one_line_and_exit_2(args, message, capsys):
    try:
        code = bench.main(args)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error: ") and message in lines[0]


@pytest.mark.parametrize("args, message", [
    (["--json", "missing/bench.json"], "cannot write missing/bench.json: no writable folder"),
    (["--from-json", "nothing.json"], "cannot read a report from nothing.json"),
    (["--from-json", "bad.json"], "cannot read a report from bad.json"),
])
def test_unusable_report_files_give_one_line_and_exit_1(args, message, tmp_path, monkeypatch,
                                                         capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text('{"rows": [')
    assert bench.main(args) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bench: error: {message}")
