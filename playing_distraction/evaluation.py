"""The model-based parts of evaluate.py: robustness and inspection of saved models.

- Robustness (Table 7 and its kin): each saved classifier predicts the test set
  corrupted by every chosen corruption × setting of the registry
  (``corruptions.py``; by default Random Erasing, one random region erased per
  image, ``robustness.py``; on request the synthetic occluders of Cen et al. 2021,
  PAPERS.md §5, ``occluders.py``); a corrupted set is the same for every model.
- Inspection (Sec. 5.2.2, Figures 2-3; PAPERS.md §1 and §3): per model, mean ± std
  over test images of the share of the image whose Grad-CAM heat for the true class
  exceeds th, and of the "focus area" coverage - the share of positions where the
  channel-mean of the Grad-CAM layer's feature map exceeds its own mean; and a
  figure of input images beside each method's Grad-CAM, drawn with tf-keras-vis.

Models are the plain classifiers each run saved (``model.keras``); test images are
decoded again from the dataset named in the run's config, and must be the images
its predictions were made on.
"""

import dataclasses
import zipfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .config import TrainConfig
from .corruptions import DEFAULT as DEFAULT_CORRUPTIONS
from .corruptions import RANDOM_ERASING, Corruption, corrupted_batches
from .corruptions import get as get_corruption
from .datasets import load_dataset
from .errors import UserError
from .heatmaps import GradCAM
from . import layers
from .pipeline import prepare, to_unit_range
from .runs import check_saved_models, damaged_model, saved_model_problem
from .splits import split_of_run


def load_model(run):
    """The run's saved classifier; a damaged file is one ``UserError`` line. What the
    zip check (``runs.saved_model_problem``) lets through fails inside Keras as
    h5py's OSError (weights that are not HDF5), a KeyError (a member missing) or a
    ValueError (a config that is not JSON) or a TypeError (a layer class this version
    does not have)."""
    path = run.path / "model.keras"
    problem = saved_model_problem(path)
    if problem:
        raise damaged_model(path, problem)
    try:
        # The package's own layers (a saliency run's classifier holds two).
        return keras.models.load_model(
            path, custom_objects={name: getattr(layers, name) for name in layers.__all__})
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as error:
        # str() of a KeyError is its key in quotes; Keras's messages can run to lines.
        text = str(error.args[0] if isinstance(error, KeyError) and error.args else error)
        raise damaged_model(path, text.splitlines()[0] if text else type(error).__name__) \
            from None


def load_test_images(run, log=None):
    """The run's test images as ``pipeline.Prepared``, checked against its predictions:
    the dataset parts its split (``splits.split_of_run``) draws the test set from are
    decoded again (log: receives the decoding's progress lines), and the split re-creates
    the test set from them."""
    config = TrainConfig.from_dict(run.config)
    split = split_of_run(run.config)
    data_dir = run.config.get("data_path") or config.data_dir
    parts = load_dataset(config.dataset, data_dir, config.classes,
                         **config.dataset_options()).parts()
    decoded = {name: prepare(parts[name], config.image_size, config.cache_dir,
                             config.on_bad_image, f"{config.dataset} {name}", log)
               for name in split.test_parts if name in parts}
    prepared, indices = split.test(decoded)
    if indices is not None:
        prepared = prepared.take(indices)
    recorded = run.metrics.get("test_images_sha256")
    if ([str(item) for item in prepared.items] != run.items
            or not np.array_equal(prepared.labels, run.labels)
            or (recorded is not None and prepared.digest() != recorded)):
        raise UserError(
            f"the test images of {config.dataset} are no longer those {run.path} was tested on")
    return prepared


class TestSets:
    """The runs' test images (``load_test_images``), decoded once for all runs of one
    image size, class list and split, which share them. log: receives the decoding's
    progress lines."""

    def __init__(self, log=None):
        self._decoded = {}
        self.log = log

    def of(self, run):
        key = (run.config["image_size"], tuple(run.config.get("classes") or ()),
               split_of_run(run.config))
        if key not in self._decoded:
            self._decoded[key] = load_test_images(run, self.log)
        return self._decoded[key]


def corrupted_probabilities(model, prepared, corruption, setting, seed, batch_size=32):
    """Class probabilities of ``model`` on the test set corrupted by ``corruption``
    (a ``corruptions.Corruption``) with ``setting``."""
    outputs = [keras.ops.convert_to_numpy(keras.ops.softmax(
        keras.ops.cast(model(batch, training=False), "float32")))
        for batch in corrupted_batches(corruption, setting, prepared.images, batch_size, seed)]
    return np.concatenate(outputs).astype(np.float64)


def erased_probabilities(model, prepared, seed, batch_size=32):
    """Class probabilities of ``model`` on the Random Erasing test set (Table 7)."""
    return corrupted_probabilities(model, prepared, RANDOM_ERASING, "one_region", seed,
                                   batch_size)


def heat_and_focus(model, prepared, layer, threshold, batch_size=32):
    """Per test image: the share of pixels with Grad-CAM heat > threshold (true class)
    and the focus-area coverage of the ``layer`` feature map."""
    explainer = GradCAM(model, layer)
    shares, coverages = [], []
    for start in range(0, len(prepared), batch_size):
        images = to_unit_range(prepared.images[start:start + batch_size])
        labels = prepared.labels[start:start + batch_size]
        heat, features = explainer.heat_and_features(images, labels)
        shares.append(tf.reduce_mean(tf.cast(heat > threshold, tf.float32), axis=(1, 2)))
        channel_mean = tf.reduce_mean(features, -1)
        above = channel_mean > tf.reduce_mean(channel_mean, axis=(1, 2), keepdims=True)
        coverages.append(tf.reduce_mean(tf.cast(above, tf.float32), axis=(1, 2)))
    return np.concatenate(shares), np.concatenate(coverages)


def figure_indices(labels, count, seed):
    """``count`` test images of different classes (as far as there are classes), seeded."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))[:count]
    chosen = [int(rng.choice(np.flatnonzero(labels == label))) for label in classes]
    while len(chosen) < min(count, len(labels)):
        chosen.append(int(rng.choice(np.setdiff1d(np.arange(len(labels)), chosen))))
    return chosen


def gradcam_figure(columns, prepared, indices, class_names, path):
    """Figures 2-3: one row per image - the input, then the tf-keras-vis Grad-CAM of
    each (name, model, layer) in ``columns`` for the true class, over the image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.scores import CategoricalScore

    images = np.asarray(prepared.images[indices], np.float32) / 255.0
    labels = prepared.labels[indices]
    maps = []
    for _, model, layer in columns:
        explainer = Gradcam(model, clone=True)
        maps.append(explainer(CategoricalScore(list(labels)), images, penultimate_layer=layer,
                              seek_penultimate_conv_layer=False))
    rows, cols = len(indices), len(columns) + 1
    figure, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.2 * rows), squeeze=False)
    for r in range(rows):
        axes[r, 0].imshow(images[r])
        axes[r, 0].set_ylabel(class_names[labels[r]], fontsize=8)
        for c, heat in enumerate(maps, start=1):
            axes[r, c].imshow(images[r])
            axes[r, c].imshow(heat[r], cmap="jet", alpha=0.5, vmin=0, vmax=1)
    for c, title in enumerate(["input", *(name for name, _, _ in columns)]):
        axes[0, c].set_title(title, fontsize=9)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


@dataclasses.dataclass
class ModelResults:
    """The result rows of the corrupted test sets, and per method the per-image heat
    shares and focus-area coverages pooled over its runs.

    ``corrupted`` holds one row per corruption × setting × run, in that order (the
    methods' runs in the order given): dicts with ``corruption``, ``setting``,
    ``method``, ``run`` (a ``runs.Run``), ``scores``
    (``metrics.classification_metrics``) and ``correct`` (per test image: the run's
    prediction on the corrupted image is its label); ``corruptions`` the ``Corruption``
    objects they were made with, by name (the tables are rendered from these, not from
    the registry: evaluate.py builds ``occlusion`` from its flags); ``erase_seed`` the
    seed of every corrupted test set."""

    corrupted: list
    heat_share: dict
    focus_area: dict
    figure: object = None
    corruptions: dict = dataclasses.field(default_factory=dict)
    # {method name: [per-image faithfulness arrays of each run]} (empty: not measured),
    # measured with ``faithfulness_settings`` (``faithfulness.faithfulness_of_model``).
    faithfulness: dict = dataclasses.field(default_factory=dict)
    faithfulness_settings: object = None
    erase_seed: int | None = None

    @property
    def corrupted_scores(self):
        """{(corruption, setting): {method: [scores of each run]}}, in row order."""
        grouped = {}
        for row in self.corrupted:
            by_method = grouped.setdefault((row["corruption"], row["setting"]), {})
            by_method.setdefault(row["method"], []).append(row["scores"])
        return grouped


def evaluate_models(methods, erase_seed, figure_path=None, figure_images=4, log=None,
                    corruptions=DEFAULT_CORRUPTIONS, checked=False, faithfulness=None):
    """Robustness and inspection of every run's saved classifier (see the module):
    every setting of each corruption, all corrupted with ``erase_seed``.
    corruptions: ``corruptions.Corruption`` objects or registered names (the first of
    a name counts). checked: ``runs.check_saved_models`` passed already (it reads
    every model file). faithfulness: a ``faithfulness.FaithfulnessSettings`` to
    measure the faithfulness of every run's Grad-CAM with, or None."""
    from .metrics import classification_metrics

    chosen = {}
    for item in corruptions:
        corruption = item if isinstance(item, Corruption) else get_corruption(item)
        chosen.setdefault(corruption.name, corruption)
    chosen = list(chosen.values())
    if not checked:
        check_saved_models(methods)  # fail before any slow work
    if figure_path is not None:
        Path(figure_path).parent.mkdir(parents=True, exist_ok=True)
    test_sets = TestSets(log)
    results = ModelResults([], {}, {}, corruptions={c.name: c for c in chosen},
                           erase_seed=erase_seed,
                           faithfulness_settings=faithfulness)
    rows = {(corruption.name, setting): [] for corruption in chosen
            for setting in corruption.settings}
    columns = []
    total, position = sum(len(method.runs) for method in methods), 0
    for method in methods:
        shares, coverages = [], []
        for number, run in enumerate(method.runs):
            position += 1
            if log:
                log(f"robustness and inspection: run {position} of {total}: {run.path}")
            test = test_sets.of(run)
            model = load_model(run)
            for corruption in chosen:
                for setting in corruption.settings:
                    probabilities = corrupted_probabilities(model, test, corruption, setting,
                                                            erase_seed)
                    rows[corruption.name, setting].append(
                        {"corruption": corruption.name, "setting": setting,
                         "method": method.name, "run": run,
                         "scores": classification_metrics(test.labels, probabilities),
                         "correct": probabilities.argmax(axis=1) == test.labels})
            share, coverage = heat_and_focus(model, test, run.config["cam_layer"],
                                             run.config["threshold"])
            shares.append(share)
            coverages.append(coverage)
            if faithfulness is not None:
                from .faithfulness import faithfulness_of_model

                results.faithfulness.setdefault(method.name, []).append(faithfulness_of_model(
                    model, test.images, test.labels, run.config["cam_layer"], faithfulness,
                    log=log))
            if number == 0:
                columns.append((method.name, model, run.config["cam_layer"], test))
        results.heat_share[method.name] = np.concatenate(shares)
        results.focus_area[method.name] = np.concatenate(coverages)
    results.corrupted = [row for group in rows.values() for row in group]
    if figure_path is not None and figure_images > 0:
        test = columns[0][3]
        indices = figure_indices(test.labels, figure_images, erase_seed)
        gradcam_figure([column[:3] for column in columns], test, indices,
                       methods[0].runs[0].config["class_names"], figure_path)
        results.figure = figure_path
    return results
