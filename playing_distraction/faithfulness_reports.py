"""The settings, tables and figure of evaluate.py's ``faithfulness`` measures: how
faithful each method's Grad-CAM heat maps are to its classifier (``faithfulness.py``,
which computes them: deletion and insertion AUC, Petsiuk et al., 2018; ROAD with noisy
linear imputation, Rong et al., 2022). The settings live here, apart from TensorFlow,
so that evaluate.py checks its flags before TensorFlow is imported.

Per run, each measure is its mean over the test images (ROAD: the accuracy over the
test images, averaged over the percentiles); a cell is the mean ± sample std of those
per-run values over the method's runs, the best mean of a row in bold - the lowest
where lower is better (deletion AUC, ROAD MoRF accuracy), else the highest. A second
table gives the paired t-test of each method against the baseline per measure, over
the seeds both have. This answers what the papers leave open: does explanation-guided
training make Grad-CAM more faithful, or only wider (the inspection table)?

This module does not import TensorFlow.
"""

import dataclasses
import math

import numpy as np

from .reports import ALPHA, Table, _best_columns, mean_std, p_value_text, seed_pairs

SUBSTRATES = ("zero", "mean")
DEFAULT_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


@dataclasses.dataclass
class FaithfulnessSettings:
    """evaluate.py's faithfulness flags, with the papers' defaults.

    step: deletion/insertion pixels per step (None: the image width); substrate:
    "zero" or "mean"; sigma: insertion blur in pixels (None: 5 H / 224); percentiles:
    ROAD's removed percentages; noise: ROAD's imputation noise std; seed: its seed.
    """

    step: int | None = None
    substrate: str = "zero"
    sigma: float | None = None
    percentiles: tuple = DEFAULT_PERCENTILES
    noise: float = 0.01
    seed: int = 0

    def check(self):
        """ValueError naming the evaluate.py flag of a bad value."""
        if self.step is not None and not (self.step >= 1 and int(self.step) == self.step):
            raise ValueError(f"--deletion-step must be a whole number of pixels >= 1, got "
                             f"{self.step}")
        if self.substrate not in SUBSTRATES:
            raise ValueError(f"--deletion-substrate {self.substrate}: choose from "
                             f"{', '.join(SUBSTRATES)}")
        if self.sigma is not None and not (self.sigma > 0 and math.isfinite(self.sigma)):
            raise ValueError(f"--insertion-sigma must be a positive number, got {self.sigma}")
        percentiles = tuple(self.percentiles)
        if not percentiles or not all(0 < p < 100 for p in percentiles):
            raise ValueError("--road-percentiles must be one or more numbers in (0, 100), "
                             f"got {' '.join(map(str, percentiles))}")
        if any(b <= a for a, b in zip(percentiles, percentiles[1:])):
            raise ValueError("--road-percentiles must be strictly increasing, got "
                             f"{' '.join(map(str, percentiles))}")
        if not (self.noise >= 0 and math.isfinite(self.noise)):
            raise ValueError(f"--road-noise must be 0 or more, got {self.noise}")


# (key, row label, higher is better)
MEASURES = (
    ("deletion_auc", "Deletion AUC (lower is better)", False),
    ("insertion_auc", "Insertion AUC (higher is better)", True),
    ("road_morf", "ROAD MoRF accuracy (lower is better)", False),
    ("road_lerf", "ROAD LeRF accuracy (higher is better)", True),
    ("road_gap", "ROAD LeRF - MoRF (higher is better)", True),
)


def run_values(per_image):
    """{measure: value} of one run from ``faithfulness.faithfulness_of_model``'s per-image
    arrays: the means over the test images (and over the ROAD percentiles)."""
    morf = float(np.mean(per_image["road_morf"]))
    lerf = float(np.mean(per_image["road_lerf"]))
    return {"deletion_auc": float(np.mean(per_image["deletion_auc"])),
            "insertion_auc": float(np.mean(per_image["insertion_auc"])),
            "road_morf": morf, "road_lerf": lerf, "road_gap": lerf - morf}


def road_curves(per_image):
    """(MoRF, LeRF) accuracy of one run at each ROAD percentile."""
    return (np.mean(per_image["road_morf"], axis=0), np.mean(per_image["road_lerf"], axis=0))


def p_value_cell(baseline, method, ours, theirs):
    """Two-tailed paired t-test of the method's per-run values against the baseline's
    over the seeds both have; "n/a" with fewer than two pairs or no spread."""
    return p_value_text([(ours[index], theirs[paired])
                         for index, paired in seed_pairs(baseline, method)])


def faithfulness_tables(methods, faithfulness, settings, digits=3):
    """{"faithfulness": measures x methods, "faithfulness_p": methods x measures};
    ``faithfulness``: {method name: [per-image arrays of each run]} in run order;
    ``settings``: the ``faithfulness.FaithfulnessSettings`` used (for the note)."""
    values = {m.name: [run_values(run) for run in faithfulness[m.name]] for m in methods}
    rows, cells, bold = [], [], set()
    for r, (key, label, higher) in enumerate(MEASURES):
        per_method = [[run[key] for run in values[m.name]] for m in methods]
        rows.append(label)
        cells.append([mean_std(column, digits) for column in per_method])
        means = [np.mean(column) for column in per_method]
        best = _best_columns(means if higher else [-mean for mean in means])
        bold |= {(r, c) for c in best}
    counts = ", ".join(f"{m.name}: {len(m.runs)}" for m in methods)
    percentiles = ", ".join(f"{p:g}" for p in settings.percentiles)
    note = (f"Mean ± sample std over runs ({counts}) of each run's mean over its test "
            "images; best mean in bold. Grad-CAM at the run's Grad-CAM layer. Deletion / "
            "insertion (Petsiuk et al., 2018): the probability of the class the model "
            "predicts on the clean image as its most relevant pixels are "
            f"{'zeroed' if settings.substrate == 'zero' else 'set to the image mean'} / "
            "put back into a blurred copy, "
            f"{'one image row' if settings.step is None else f'{settings.step} pixels'} "
            "per step, area under the curve. ROAD (Rong et al., 2022): accuracy on the "
            "true class after the most (MoRF) or least (LeRF) relevant pixels for the true "
            f"class are removed by noisy linear imputation (noise {settings.noise:g}), "
            f"averaged over the percentiles {percentiles}; no retraining.")
    table = Table("Faithfulness of the Grad-CAM heat maps", "Measure", rows,
                  [m.name for m in methods], cells, bold, note)
    baseline = methods[0]
    p_cells = [[p_value_cell(baseline, method, [run[key] for run in values[method.name]],
                             [run[key] for run in values[baseline.name]])
                for key, _, _ in MEASURES] for method in methods[1:]]
    p_table = Table(
        f"p-value of the paired t-test against {baseline.name} (faithfulness)", "Method",
        [m.name for m in methods[1:]], [label.split(" (")[0] for _, label, _ in MEASURES],
        p_cells, note=f"Two-tailed, over the seeds both have; * marks p < {ALPHA}; n/a "
                      "with fewer than two pairs or no spread.")
    return {"faithfulness": table, "faithfulness_p": p_table}


def faithfulness_columns(methods, faithfulness):
    """runs.csv columns ({column: {method: [value of each run]}}): every measure."""
    return {f"faithfulness_{key}": {m.name: [run_values(run)[key]
                                             for run in faithfulness[m.name]]
                                    for m in methods}
            for key, _, _ in MEASURES}


def road_figure(methods, faithfulness, settings, path):
    """ROAD accuracy (%) against the share of pixels removed, per method: MoRF solid,
    LeRF dashed, the mean over runs with a ± sample std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .reports import save_accuracy_plot

    figure, axes = plt.subplots(figsize=(5.2, 3.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    xs = np.asarray(settings.percentiles, np.float64)
    for number, method in enumerate(methods):
        colour = colours[number % len(colours)]
        curves = [road_curves(run) for run in faithfulness[method.name]]
        for index, (order, style) in enumerate((("MoRF", "-"), ("LeRF", "--"))):
            runs = 100 * np.asarray([curve[index] for curve in curves], np.float64)
            mean = runs.mean(axis=0)
            axes.plot(xs, mean, color=colour, linestyle=style, marker="o", markersize=3,
                      label=f"{method.name}, {order}")
            if len(runs) > 1:
                spread = runs.std(axis=0, ddof=1)
                axes.fill_between(xs, mean - spread, mean + spread, color=colour, alpha=0.15)
    save_accuracy_plot(figure, axes, "pixels removed by ROAD (%)", path)
