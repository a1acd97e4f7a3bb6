"""The faithfulness tables of evaluate.py (faithfulness_reports.py): cells, bold and
p-values against hand computations and SciPy, on made-up per-image results."""

import types

import numpy as np
import pytest
from scipy.stats import ttest_rel

from playing_distraction.faithfulness_reports import (MEASURES, faithfulness_columns,
                                                      faithfulness_tables, road_figure)
from playing_distraction.runs import Method

PERCENTILES = (10, 50, 90)


def settings():
    return types.SimpleNamespace(percentiles=PERCENTILES, noise=0.01, step=None,
                                 substrate="zero")


def per_image(rng, deletion, insertion, morf, lerf, images=20):
    """Per-image arrays whose means are the given values (ROAD: exactly, from counts)."""
    def around(mean):
        noise = rng.normal(0, 0.05, images)
        return mean + noise - noise.mean()

    def correct(share):
        flags = np.zeros((images, len(PERCENTILES)))
        flags.flat[:round(share * flags.size)] = 1.0
        return rng.permuted(flags.ravel()).reshape(flags.shape)

    return {"deletion_auc": around(deletion), "insertion_auc": around(insertion),
            "road_morf": correct(morf), "road_lerf": correct(lerf)}


def method(name, seeds):
    runs = [types.SimpleNamespace(seed=seed, key=seed, describe_key=lambda: "") for seed in seeds]
    return Method(name, runs)


@pytest.fixture
def two_methods():
    rng = np.random.default_rng(0)
    baseline, other = method("baseline", (0, 1, 2)), method("0-occlusion", (0, 1, 2))
    results = {
        "baseline": [per_image(rng, *values) for values in
                     ((0.30, 0.60, 0.50, 0.80), (0.32, 0.62, 0.40, 0.75),
                      (0.28, 0.58, 0.45, 0.85))],
        "0-occlusion": [per_image(rng, *values) for values in
                        ((0.20, 0.70, 0.30, 0.95), (0.25, 0.66, 0.35, 0.85),
                         (0.21, 0.69, 0.25, 0.90))],
    }
    return [baseline, other], results


def test_cells_are_mean_and_sample_std_of_the_run_means(two_methods):
    methods, results = two_methods
    table = faithfulness_tables(methods, results, settings())["faithfulness"]
    assert table.columns == ["baseline", "0-occlusion"]
    assert [row.split(" (")[0] for row in table.rows] == [
        "Deletion AUC", "Insertion AUC", "ROAD MoRF accuracy", "ROAD LeRF accuracy",
        "ROAD LeRF - MoRF"]
    for r, (key, _, _) in enumerate(MEASURES):
        for c, m in enumerate(methods):
            runs = results[m.name]
            if key == "road_gap":
                values = [run["road_lerf"].mean() - run["road_morf"].mean() for run in runs]
            else:
                values = [run[key].mean() for run in runs]
            assert table.cells[r][c] == f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def test_bold_is_the_lowest_where_lower_is_better(two_methods):
    methods, results = two_methods
    table = faithfulness_tables(methods, results, settings())["faithfulness"]
    # The second method has the lower deletion AUC and MoRF accuracy (better) and the
    # higher insertion AUC and LeRF accuracy (better): bold everywhere.
    assert table.bold == {(r, 1) for r in range(len(MEASURES))}
    flipped = {"baseline": results["0-occlusion"], "0-occlusion": results["baseline"]}
    table = faithfulness_tables(methods, flipped, settings())["faithfulness"]
    assert table.bold == {(r, 0) for r in range(len(MEASURES))}


def test_p_values_are_scipys_paired_t_test_over_the_seeds(two_methods):
    methods, results = two_methods
    p_table = faithfulness_tables(methods, results, settings())["faithfulness_p"]
    assert p_table.rows == ["0-occlusion"]
    for c, (key, _, _) in enumerate(MEASURES):
        def run_means(name):
            if key == "road_gap":
                return [run["road_lerf"].mean() - run["road_morf"].mean()
                        for run in results[name]]
            return [run[key].mean() for run in results[name]]

        p = ttest_rel(run_means("0-occlusion"), run_means("baseline")).pvalue
        assert p_table.cells[0][c] == f"{p:.3f}{'*' if p < 0.05 else ''}"


def test_runs_are_paired_by_seed_not_by_order(two_methods):
    methods, results = two_methods
    reordered = method("0-occlusion", (2, 0, 1))
    shuffled = {"baseline": results["baseline"],
                "0-occlusion": [results["0-occlusion"][i] for i in (2, 0, 1)]}
    same = faithfulness_tables(methods, results, settings())["faithfulness_p"]
    other = faithfulness_tables([methods[0], reordered], shuffled, settings())["faithfulness_p"]
    assert same.cells == other.cells


def test_one_pair_gives_no_p_value(two_methods):
    methods, results = two_methods
    single = [method("baseline", (0,)), method("0-occlusion", (0,))]
    first = {name: runs[:1] for name, runs in results.items()}
    p_table = faithfulness_tables(single, first, settings())["faithfulness_p"]
    assert p_table.cells == [["n/a"] * len(MEASURES)]


def test_runs_csv_columns_hold_each_runs_means(two_methods):
    methods, results = two_methods
    columns = faithfulness_columns(methods, results)
    assert set(columns) == {f"faithfulness_{key}" for key, _, _ in MEASURES}
    np.testing.assert_allclose(columns["faithfulness_insertion_auc"]["0-occlusion"],
                               [run["insertion_auc"].mean() for run in results["0-occlusion"]])


def test_road_figure_is_a_png(two_methods, tmp_path):
    methods, results = two_methods
    road_figure(methods, results, settings(), tmp_path / "faithfulness.png")
    assert (tmp_path / "faithfulness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_flags_set_the_settings_they_name():
    import argparse

    from playing_distraction.cli import _faithfulness
    from playing_distraction.faithfulness_reports import FaithfulnessSettings

    args = argparse.Namespace(no_faithfulness=False, no_models=False, erase_seed=3,
                              deletion_step=4, deletion_substrate="mean", insertion_sigma=1.5,
                              road_percentiles=[20.0, 60.0], road_noise=0.0)
    assert _faithfulness(args) == FaithfulnessSettings(
        step=4, substrate="mean", sigma=1.5, percentiles=(20.0, 60.0), noise=0.0, seed=3)
    defaults = argparse.Namespace(no_faithfulness=False, no_models=False, erase_seed=0)
    assert _faithfulness(defaults) == FaithfulnessSettings()
    assert _faithfulness(argparse.Namespace(no_faithfulness=True, no_models=False,
                                            erase_seed=0)) is None
