"""evaluate.py's figures and one-page report (plots.py, report_index.py): the numbers a
figure draws against NumPy on hand-written histories and known correctness, the erased
shares against the pixels Random Erasing changes, index.html parsed, and evaluate.py
end to end on tiny trained runs."""

import csv
import dataclasses
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import keras
import matplotlib.image
import numpy as np
import pytest
from test_reports import LABELS, hits, write_run

from conftest import fashion_part

from playing_distraction import plots
from playing_distraction.cli import evaluate_main, train_main
from playing_distraction.corruptions import RANDOM_ERASING
from playing_distraction.errors import UserError
from playing_distraction.evaluation import ModelResults
from playing_distraction.layouts import write_fashion_mnist
from playing_distraction.report_index import write_index
from playing_distraction.reports import Table, mean_std
from playing_distraction.robustness import erase, erased_shares
from playing_distraction.runs import Method, Run, load_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLUMNS = ("accuracy", "val_accuracy", "loss", "val_loss")


def test_the_figures_and_the_page_do_not_import_tensorflow():
    from test_structure import imported_after

    loaded = imported_after("playing_distraction.plots, playing_distraction.report_index")
    assert "playing_distraction.plots" in loaded and "tensorflow" not in loaded


# ------------------------------------------------------------------ training curves


def write_history(path, rows, columns=COLUMNS):
    """A history CSV as Keras' CSVLogger writes it: epoch, the columns, seconds."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *columns, "seconds"])
        for epoch, row in enumerate(rows):
            writer.writerow([epoch, *row, 1.5])


def history_run(path, rows, columns=COLUMNS, metrics=None):
    """A run (``runs.Run``) whose folder holds just the history ``rows``."""
    path.mkdir(parents=True)
    write_history(path / "history.csv", rows, columns)
    return Run(path, {}, metrics or {}, [], np.array([]), np.zeros((0, 2)))


def expected_curve(series):
    """Per epoch over the runs that reached it: mean, sample std (NaN below two), count."""
    length = max(map(len, series))
    means, stds, counts = [], [], []
    for epoch in range(length):
        values = np.array([run[epoch] for run in series if len(run) > epoch])
        means.append(np.mean(values))
        stds.append(np.std(values, ddof=1) if len(values) > 1 else np.nan)
        counts.append(len(values))
    return np.array(means), np.array(stds), np.array(counts)


def test_curves_average_over_the_runs_that_reached_each_epoch(tmp_path):
    rng = np.random.default_rng(0)
    lengths = (4, 2, 3)  # early stopping at different epochs
    tables = [rng.random((length, 4)).round(4) for length in lengths]
    three = [history_run(tmp_path / f"a{k}", table) for k, table in enumerate(tables)]
    # A run without validation: no val_ columns.
    alone = history_run(tmp_path / "b", [[0.3, 1.2], [0.4, 1.1]], ("accuracy", "loss"))
    curves = plots.training_curves([Method("a", three), Method("b", [alone])])
    assert list(curves) == ["a", "b"]
    assert list(curves["a"]) == list(COLUMNS)
    for c, column in enumerate(COLUMNS):
        line = curves["a"][column]
        mean, std, counts = expected_curve([table[:, c] for table in tables])
        np.testing.assert_array_equal(line.epochs, [1, 2, 3, 4])
        np.testing.assert_allclose(line.mean, mean, rtol=1e-12)
        np.testing.assert_allclose(line.std, std, rtol=1e-12, equal_nan=True)
        np.testing.assert_array_equal(line.runs, [3, 3, 2, 1])
        assert np.isnan(line.std[3]) and np.isfinite(line.std[:3]).all()
        # Epoch 4 is the first run's alone; epoch 3 the mean of two.
        assert line.mean[3] == tables[0][3, c]
        assert line.mean[2] == pytest.approx((tables[0][2, c] + tables[2][2, c]) / 2)
    assert list(curves["b"]) == ["accuracy", "loss"]
    np.testing.assert_allclose(curves["b"]["loss"].mean, [1.2, 1.1])
    assert np.isnan(curves["b"]["loss"].std).all()

    path = tmp_path / "curves.png"
    plots.curves_figure(curves, path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    width, height = plots.CURVES_SIZE
    assert pixels.shape[:2] == (round(height * plots.DPI), round(width * plots.DPI))
    assert pixels[..., :3].std() > 0.05  # not blank


def test_a_run_of_several_stages_is_drawn_from_its_last_stage(tmp_path):
    from playing_distraction.stages import history_name

    stages = [{"stage": "train"}, {"stage": "finetune"}]
    run = history_run(tmp_path / "r", [[0.1, 0.1, 9.0, 9.0]] * 5,
                      metrics={"epochs_run": 2, "stages": stages})
    write_history(tmp_path / "r" / "history-finetune.csv", [[0.5, 0.6, 1.0, 0.9],
                                                            [0.7, 0.8, 0.5, 0.4]])
    assert plots.tested_history(run) == run.path / history_name(1, "finetune")
    curves = plots.training_curves([Method("m", [run])])["m"]
    np.testing.assert_allclose(curves["val_accuracy"].mean, [0.6, 0.8])
    np.testing.assert_array_equal(curves["loss"].epochs, [1, 2])
    one = dataclasses.replace(run, metrics={"stages": stages[:1]})
    assert plots.tested_history(one) == run.path / history_name(0, "train")


@pytest.mark.parametrize("damage, message", [
    (lambda path: path.unlink(), "missing {path}: curves.png needs the training history"),
    (lambda path: path.write_text("epoch,accuracy,loss\n0,high,1.0\n"),
     "cannot read {path} (could not convert string to float: 'high')"),
    (lambda path: path.write_text("epoch,accuracy\n0,0.5\n"), "{path} has no loss column"),
    (lambda path: path.write_text(""), "{path} has no accuracy or loss column"),
])
def test_a_run_without_a_readable_history_is_one_line_naming_the_file(tmp_path, damage,
                                                                      message):
    run = history_run(tmp_path / "r", [[0.5, 0.5, 1.0, 1.0]])
    path = run.path / "history.csv"
    damage(path)
    with pytest.raises(UserError) as error:
        plots.training_curves([Method("m", [run])])
    assert str(error.value).startswith(message.format(path=path))
    assert "\n" not in str(error.value)


# ------------------------------------------------------------------ erased shares


@pytest.mark.parametrize("height, width", [(32, 32), (24, 40)])
def test_erased_shares_are_the_shares_of_pixels_erase_changes(height, width):
    indices = np.arange(100, 180)
    images = np.full((len(indices), height, width, 3), 0.123, np.float32)
    changed = np.any(erase(images, indices, seed=7) != images, axis=-1).mean(axis=(1, 2))
    shares = erased_shares(height, width, indices, seed=7)
    np.testing.assert_allclose(shares, changed, rtol=0, atol=1e-12)
    assert shares.min() > 0.015 and shares.max() < 0.42  # S_e ~ U(0.02, 0.4), rounded
    assert len(np.unique(shares)) > 20
    # Another seed, another region per image.
    assert np.mean(erased_shares(height, width, indices, seed=8) != shares) > 0.9
    # As evaluate.py corrupts: the registered setting's parameters.
    parameters = RANDOM_ERASING.settings["one_region"]
    corrupted = RANDOM_ERASING.apply(images, indices, 3, "one_region")
    np.testing.assert_allclose(erased_shares(height, width, indices, 3, **parameters),
                               np.any(corrupted != images, axis=-1).mean(axis=(1, 2)),
                               rtol=0, atol=1e-12)


def test_an_image_no_box_fits_in_has_share_zero():
    # An area of at least 90 % in boxes strictly smaller than the image never fits.
    images = np.full((5, 8, 8, 3), 0.5, np.float32)
    shares = erased_shares(8, 8, np.arange(5), 0, area=(0.9, 0.95))
    np.testing.assert_array_equal(shares, np.zeros(5))
    np.testing.assert_array_equal(erase(images, np.arange(5), 0, area=(0.9, 0.95)), images)


# ------------------------------------------------------------------ accuracy by area


def test_binned_accuracy_is_the_hand_computed_one():
    edges = plots.area_edges()
    np.testing.assert_allclose(edges, [0.02, 0.096, 0.172, 0.248, 0.324, 0.4])
    assert [plots.bin_label(low, high) for low, high in zip(edges, edges[1:])] == [
        "2-9.6 %", "9.6-17.2 %", "17.2-24.8 %", "24.8-32.4 %", "32.4-40 %"]
    # Share 0: no box (left out); 0.019 and 0.41: rounding just outside the range.
    shares = [0.0, 0.019, 0.02, 0.05, 0.0961, 0.1, 0.2, 0.35, 0.39, 0.41]
    correct = [1, 1, 0, 1, 0, 0, 1, 1, 1, 0]
    # Bins by hand: 0: images 1, 2, 3; 1: 4, 5; 2: 6; 3: none; 4: 7, 8, 9.
    np.testing.assert_array_equal(plots.area_bins(shares, edges),
                                  [-1, 0, 0, 0, 1, 1, 2, 4, 4, 4])
    accuracy, counts = plots.accuracy_by_area(correct, shares, edges)
    np.testing.assert_array_equal(counts, [3, 2, 1, 0, 3])
    np.testing.assert_allclose(accuracy, [2 / 3, 0, 1, np.nan, 2 / 3], equal_nan=True)

    mean, std, runs = plots.over_runs([[50, 10, np.nan, 20], [70, 10, np.nan, np.nan],
                                       [90, 40, np.nan, np.nan]])
    np.testing.assert_allclose(mean, [70, 20, np.nan, 20], equal_nan=True)
    np.testing.assert_allclose(std, [20, np.std([10, 10, 40], ddof=1), np.nan, np.nan],
                               equal_nan=True)
    np.testing.assert_array_equal(runs, [3, 3, 0, 1])


def fake_results(methods, correct, seed):
    """Random Erasing rows as evaluate_models makes them, with ``correct[m][r]``."""
    rows = [{"corruption": "random_erasing", "setting": "one_region", "method": method.name,
             "run": run, "scores": {}, "correct": np.asarray(correct[m][r], bool)}
            for m, method in enumerate(methods) for r, run in enumerate(method.runs)]
    return ModelResults(rows, {}, {}, corruptions={"random_erasing": RANDOM_ERASING},
                        erase_seed=seed)


def test_the_area_table_is_mean_and_std_over_runs_of_the_binned_accuracies(tmp_path):
    size, images, seed = 32, 60, 3
    run = Run(tmp_path, {"image_size": size}, {}, [], np.array([]), np.zeros((0, 2)))
    methods = [Method("base <b>&", [run, run, run]), Method("other", [run, run])]
    rng = np.random.default_rng(1)
    correct = [[rng.random(images) < p for p in (0.5, 0.6, 0.7)],
               [rng.random(images) < p for p in (0.8, 0.9)]]
    tables, figures = plots.area_outputs(methods, fake_results(methods, correct, seed))
    table = tables["robustness_by_area"]

    shares = erased_shares(size, size, np.arange(images), seed)
    bounds = [0.02, 0.096, 0.172, 0.248, 0.324, 0.4]
    expected, counts = [], []
    for b in range(5):  # by hand: the outer bins take what rounding puts outside
        low = -np.inf if b == 0 else bounds[b]
        high = np.inf if b == 4 else bounds[b + 1]
        chosen = (shares > 0) & (shares >= low) & (shares < high)
        counts.append(int(chosen.sum()))
        expected.append([[100 * np.mean(hits[chosen]) for hits in runs] for runs in correct])
    assert sum(counts) == images and min(counts) > 0
    assert table.rows == [f"{label} ({count} images)" for label, count in zip(
        ["2-9.6 %", "9.6-17.2 %", "17.2-24.8 %", "24.8-32.4 %", "32.4-40 %"], counts)]
    assert table.columns == ["base <b>&", "other"]
    assert table.cells == [[mean_std(values, 1) for values in row] for row in expected]
    assert table.bold == {(b, int(np.argmax([np.mean(values) for values in row])))
                          for b, row in enumerate(expected)}
    assert "--erase-seed 3" in table.note and "5 equal-width bins" in table.note

    path = tmp_path / "by_area.png"
    figures["robustness_by_area.png"](path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert matplotlib.image.imread(path)[..., :3].std() > 0.05

    # Without per-image correctness (or without Random Erasing) there is no such table.
    plain = fake_results(methods, correct, seed)
    for row in plain.corrupted:
        del row["correct"]
    assert plots.area_outputs(methods, plain) == ({}, {})


# ------------------------------------------------------------------ index.html


class Page(HTMLParser):
    """The links, image sources, tags, text and bold text of a page; checks that every
    element but the void ones is closed in order."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.links, self.images, self.tags, self.text, self.strong = [], [], [], [], []
        self.stack = []
        self.feed(text)
        self.close()
        assert self.stack == [], self.stack

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if "href" in attrs:
            self.links.append(attrs["href"])
        if "src" in attrs:
            self.images.append(attrs["src"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack.pop() == tag, (tag, self.stack)

    def handle_data(self, data):
        self.text.append(data)
        if "strong" in self.stack:
            self.strong.append(data)


def checked_page(out):
    """index.html of ``out``, parsed, with every link and source checked: relative,
    inside the folder, to a file there; no script or fetched resource."""
    page = Page((out / "index.html").read_text(encoding="utf-8"))
    for target in page.links + page.images:
        parts = urlsplit(target)
        assert not parts.scheme and not parts.netloc and not target.startswith("/"), target
        assert ".." not in target and not parts.query and not parts.fragment, target
        assert (out / unquote(parts.path)).is_file(), target
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert page.tags.count("style") == 1
    return page


def test_index_shows_tables_escaped_figures_and_files_with_relative_links(tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    table = Table("Rates of <b>&</b> \"quoted\"", "Class", ["<b>&", "dog"], ["baseline", "m & n"],
                  [["0.5 ± 0.1", "0.7"], ["<i>", "0.2"]], {(0, 1), (1, 0)}, note="a < b & c")
    other = Table("Cost", "", ["Epochs"], ["baseline"], [["3.0"]])
    for stem in ("per_class", "cost"):
        for suffix in ("md", "tex", "csv"):
            (out / f"{stem}.{suffix}").write_text("x")
    for name in ("curves.png", "by area.png", "stale.png", "runs.csv"):
        (out / name).write_bytes(PNG_SIGNATURE)
    assert write_index(out, {"per_class": table, "cost": other},
                       ["curves.png", "by area.png", "missing.png"],
                       ["runs.csv", "gone.csv"]) == "index.html"
    raw = (out / "index.html").read_text(encoding="utf-8")
    page = checked_page(out)

    # Text is escaped in the markup and reads back as it was.
    assert "&lt;b&gt;&amp;" in raw and "<b>&" not in raw and "<i>" not in raw
    text = "".join(page.text)
    for shown in ("Rates of <b>&</b> \"quoted\"", "<b>&", "m & n", "a < b & c", "<i>"):
        assert shown in text, shown
    assert page.strong == ["0.7", "<i>"]  # the bold cells, and only they
    assert page.tags.count("table") == 2 and page.tags.count("caption") == 2
    # Every table's files, the figures given that exist, the other files that exist.
    assert set(page.links) == {f"{stem}.{suffix}" for stem in ("per_class", "cost")
                               for suffix in ("md", "tex", "csv")} | {
        "curves.png", "by%20area.png", "runs.csv"}
    assert page.images == ["curves.png", "by%20area.png"]  # not stale.png, not missing.png


# ------------------------------------------------------------------ evaluate.py


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Baseline and 0-occlusion runs, seeds 0 and 1, one epoch each, on a small
    Fashion-MNIST IDX folder (10 train and 3 test images per class); returns the run
    folders by method."""
    root = tmp_path_factory.mktemp("plots")
    rng = np.random.default_rng(0)

    data = root / "fmnist"
    write_fashion_mnist(data, fashion_part(rng, 10), fashion_part(rng, 3))
    out = root / "runs"
    for occlusion in ("none", "zero"):
        assert train_main(["--dataset", "fashion-mnist", "--data-dir", str(data), "--epochs", "1",
                           "--batch-size", "16", "--verbose", "0", "--occlusion", occlusion,
                           "--repeats", "2", "--out-dir", str(out)]) == 0
    return {occlusion: [out / f"fashion-mnist-{occlusion}-small_cnn-seed{seed}"
                        for seed in (0, 1)] for occlusion in ("none", "zero")}


def written_line(printed):
    """(table stems, other names) of evaluate.py's final "tables written to" line."""
    line = printed.splitlines()[-1]
    stems, rest = line.split(": ", 1)[1].split(" (.md, .tex, .csv), ")
    return stems.split(", "), rest.split(", ")


def erased_correct(path, seed=0):
    """The run's saved model right or wrong on each image of the erased test set, and
    the share of each image's pixels the erasing changed."""
    from playing_distraction.evaluation import load_test_images

    run = load_run(path)
    prepared = load_test_images(run)
    images = np.asarray(prepared.images, np.float32) / 255.0
    erased = erase(images, np.arange(len(images)), seed)
    model = keras.models.load_model(path / "model.keras")
    predictions = model.predict(erased, verbose=0).argmax(axis=1)
    return predictions == prepared.labels, np.any(erased != images, axis=-1).mean(axis=(1, 2))


def test_evaluate_writes_curves_the_area_table_and_index(trained, tmp_path, capsys):
    out = tmp_path / "reports"
    argv = ["--baseline", *map(str, trained["none"]), "--method", *map(str, trained["zero"]),
            "--out-dir", str(out)]
    assert evaluate_main([*argv, "--figure-images", "1", "--no-faithfulness"]) == 0
    printed = capsys.readouterr().out
    stems, others = written_line(printed)
    assert stems[:5] == ["metrics", "per_class_tpr", "cost", "robustness", "robustness_by_area"]
    assert {"curves.png", "robustness_by_area.png", "gradcam.png"} <= set(others)
    assert others[-1] == "index.html"
    for suffix in ("md", "tex", "csv"):
        assert (out / f"robustness_by_area.{suffix}").stat().st_size > 0
    assert (out / "robustness_by_area.md").read_text() in printed
    for name in ("curves.png", "robustness_by_area.png"):
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE

    page = checked_page(out)
    pngs = sorted(path.name for path in out.glob("*.png"))
    assert sorted(page.images) == pngs and len(pngs) >= 3
    for stem in stems:
        assert {f"{stem}.md", f"{stem}.tex", f"{stem}.csv"} <= set(page.links), stem
        title = (out / f"{stem}.md").read_text().splitlines()[0].strip("*")
        assert title in "".join(page.text), stem
    assert {"runs.csv", "corruptions.csv", "confusion_baseline.csv",
            "confusion_0-occlusion.csv"} <= set(page.links)

    # The area table: each run's model on the erased images, binned by changed pixels.
    with open(out / "robustness_by_area.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    bounds = np.linspace(0.02, 0.4, 6)
    for method, paths in (("baseline", trained["none"]), ("0-occlusion", trained["zero"])):
        per_run = [erased_correct(path) for path in paths]
        for b, row in enumerate(table):
            values = []
            for correct, shares in per_run:
                low = -np.inf if b == 0 else bounds[b]
                high = np.inf if b == 4 else bounds[b + 1]
                chosen = (shares > 0) & (shares >= low) & (shares < high)
                assert row["Erased share"].endswith(f"({chosen.sum()} images)")
                if chosen.any():
                    values.append(100 * correct[chosen].mean())
            assert row[method] == (mean_std(values, 1) if values else "—")

    # --no-models into the same folder: fewer tables, the curves, nothing left from before.
    assert evaluate_main([*argv, "--no-models"]) == 0
    stems, others = written_line(capsys.readouterr().out)
    assert stems == ["metrics", "per_class_tpr", "cost"]
    assert others[-2:] == ["curves.png", "index.html"]
    page = checked_page(out)
    assert page.images == ["curves.png"]
    assert not {link for link in page.links if link.startswith(("robustness", "corruptions",
                                                                "inspection", "gradcam"))}
    assert {f"{stem}.{suffix}" for stem in stems for suffix in ("md", "tex", "csv")} <= \
        set(page.links)


def test_evaluate_refuses_a_run_without_its_history_in_one_line(trained, tmp_path, capsys):
    copy = Path(shutil.copytree(trained["none"][0], tmp_path / "run"))
    (copy / "history.csv").unlink()
    out = tmp_path / "reports"
    assert evaluate_main(["--baseline", str(copy), "--out-dir", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"evaluate.py: error: missing {copy / 'history.csv'}: ")
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert not out.exists()  # found before any model is loaded or file written
    # The history of a finished run is what train.py wrote: the run's epochs, in order.
    metrics = json.loads((trained["none"][0] / "metrics.json").read_text())
    history = plots.read_tested_history(load_run(trained["none"][0]))
    assert len(history["accuracy"]) == metrics["epochs_run"] == 1


def test_the_k_shot_page_shows_its_tables_and_figure(tmp_path, capsys):
    """Hand-written runs of a k-shot grid (k = 1, 2; seeds 0, 1), --no-models."""
    groups = {}
    for occlusion, accuracies in (("none", [0.5, 0.6]), ("zero", [0.7, 0.9])):
        for shots in (1, 2):
            for seed, accuracy in zip((0, 1), accuracies):
                run = write_run(tmp_path / f"{occlusion}-k{shots}-seed{seed}", LABELS,
                                hits(LABELS, round(accuracy * len(LABELS))), seed=seed,
                                occlusion=occlusion)
                config = json.loads((run / "config.json").read_text())
                config["split"] = {"kind": "k-shot", "shots": shots}
                (run / "config.json").write_text(json.dumps(config))
                groups.setdefault(occlusion, []).append(run)
    out = tmp_path / "reports"
    assert evaluate_main(["--baseline", *map(str, groups["none"]), "--method",
                          *map(str, groups["zero"]), "--no-models", "--out-dir", str(out)]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith(f"tables written to {out}/: kshot, kshot_p (.md, .tex, .csv), "
                           "runs.csv, kshot.png, index.html; ")
    page = checked_page(out)
    assert page.images == ["kshot.png"]
    assert {f"{stem}.{suffix}" for stem in ("kshot", "kshot_p") for suffix in ("md", "tex", "csv")
            } | {"runs.csv", "kshot.png"} == set(page.links)
    text = "".join(page.text)
    assert "Accuracy (%) by training images per class (k-shot)" in text
    assert not (out / "curves.png").exists()  # no curves: they would mix the k
