"""TensorBoard logs of a training run (``train.py --tensorboard``): Keras' epoch scalars,
and panels of a fixed batch of images - each image, its Grad-CAM for its true class
(Selvaraju et al., 2017; PAPERS.md §1, steps 2-3) over it in colour, and what the
method does to it (``TrainingScheme.illustrate``: the occlusion mask and the occluded
image of playing to distraction, the erased image of CAM erasing, the hallucinated
saliency map).

Logging must not change training: the panels are drawn in inference mode (no
BatchNormalization statistic moves, no weight changes), no scheme's seed generator
draws, and the batch is chosen once with a NumPy generator of its own. A run trains
bit for bit the same with and without ``--tensorboard`` (``tests/test_tensorboard.py``).

Files: ``<run>/tensorboard/train`` and ``.../validation`` (Keras' layout: one TensorBoard
run each); a later training stage logs to ``<run>/tensorboard/<stage>/``, so that the
epochs, the steps of the logs, of two stages do not collide. A resumed run appends new
event files to the same folders, its epochs continuing where they stopped.
"""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .heatmaps import GradCAM
from .schemes import TrainingScheme

FOLDER = "tensorboard"


def log_dir(run_dir, stage_index, stage_name):
    """A stage's log folder: ``<run>/tensorboard`` for the first stage,
    ``<run>/tensorboard/<stage name>`` for a later one."""
    folder = Path(run_dir) / FOLDER
    return folder if stage_index == 0 else folder / stage_name


def panel_batch(split, count, seed):
    """(float32 [0, 1] images, int32 labels): ``count`` images (all, if fewer) of a
    split ``(prepared, indices)``, drawn once with ``seed``, in the split's order."""
    prepared, indices = split
    positions = np.arange(len(prepared)) if indices is None else np.asarray(indices)
    rng = np.random.default_rng(seed)
    chosen = positions[np.sort(rng.choice(len(positions), min(count, len(positions)),
                                          replace=False))]
    images = np.asarray(prepared.images[chosen], np.float32) / 255.0
    return images, np.asarray(prepared.labels[chosen], np.int32)


def heat_colours(heat):
    """(B, H, W) heat in [0, 1] -> (B, H, W, 3) colours of the "jet" map: blue, cyan,
    yellow, red as the heat rises (its usual piecewise-linear form)."""
    heat = tf.cast(heat, tf.float32)[..., None]
    centres = tf.constant([3.0, 2.0, 1.0])  # red, green, blue peak at 3/4, 1/2, 1/4
    return tf.clip_by_value(1.5 - tf.abs(4.0 * heat - centres), 0.0, 1.0)


def overlay(images, heat, opacity=0.5):
    """The heat's colours laid over the images with ``opacity``."""
    return (1.0 - opacity) * tf.cast(images, tf.float32) + opacity * heat_colours(heat)


class TensorBoardLog(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback (epoch scalars only: no graph, no profiling, no
    histograms), which also writes image panels of a fixed batch every
    ``images_every`` epochs, at the first epoch and at the last (the stage's last, or
    the one early stopping ends with).

    images, labels: the batch, float32 in [0, 1] and int (``panel_batch``).
    cam_layer: the Grad-CAM layer of the classifier (None: its last 4-D layer).
    split: "validation" or "train": where the images come from; the panels go to that
        split's folder with tags "<split>/image", "<split>/gradcam" and one per picture
        the scheme's ``illustrate`` draws ("<split>/occluded", ...). A plain classifier
        (the baseline fits the classifier itself) gets the first two.
    """

    # Keras' callback calls tf.summary.scalar for every log of every step, to no writer
    # with update_freq "epoch" (work wasted on each step), and a callback with batch
    # hooks keeps Keras' other backends from dispatching steps asynchronously. Nothing
    # is written per batch here, so the hooks are Keras' no-op defaults. Nor per
    # validation pass (Keras' "evaluation_*_vs_iterations", at training steps among
    # the epochs).
    on_train_batch_begin = keras.callbacks.Callback.on_train_batch_begin
    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end
    on_test_batch_begin = keras.callbacks.Callback.on_test_batch_begin
    on_test_begin = keras.callbacks.Callback.on_test_begin
    on_test_end = keras.callbacks.Callback.on_test_end

    def __init__(self, log_dir, images, labels, cam_layer=None, images_every=5,
                 split="validation"):
        super().__init__(log_dir=str(log_dir), histogram_freq=0, write_graph=False,
                         update_freq="epoch", profile_batch=0)
        if int(images_every) < 1:
            raise ValueError(f"images_every must be positive, got {images_every}")
        if split not in ("validation", "train"):
            raise ValueError(f"split must be 'validation' or 'train', got {split!r}")
        self.images = np.asarray(images, np.float32)
        self.labels = np.asarray(labels, np.int32).reshape(-1)
        self.cam_layer = cam_layer
        self.images_every = int(images_every)
        self.split = split
        self._draw = None

    def set_model(self, model):
        super().set_model(model)
        scheme = isinstance(model, TrainingScheme)
        gradcam = GradCAM(model.classifier if scheme else model, self.cam_layer)

        def draw(images, labels):
            pictures = {"image": images, "gradcam": overlay(images, gradcam(images, labels))}
            if scheme:
                pictures.update(model.illustrate(images, labels))
            return {name: tf.clip_by_value(tf.cast(picture, tf.float32), 0.0, 1.0)
                    for name, picture in pictures.items()}

        # Eager: a handful of images every few epochs cost less than tracing, and a
        # function traced per run and stage would make TensorFlow warn of retracing.
        self._draw = draw

    def panels(self):
        """{name: (B, H, W, 3) float32 pictures in [0, 1]} with the current weights."""
        return {name: picture.numpy() for name, picture in
                self._draw(tf.constant(self.images), tf.constant(self.labels)).items()}

    def panels_due(self, epoch):
        """The panels are written after this epoch (0-based)."""
        return (epoch == 0 or (epoch + 1) % self.images_every == 0
                or epoch + 1 == self.params.get("epochs")
                or bool(getattr(self.model, "stop_training", False)))

    def write_panels(self, epoch):
        """Write the panels as image summaries at step ``epoch``."""
        writer = self._val_writer if self.split == "validation" else self._train_writer
        with writer.as_default():
            for name, picture in self.panels().items():
                tf.summary.image(f"{self.split}/{name}", picture, step=epoch,
                                 max_outputs=len(self.images))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.panels_due(epoch):
            self.write_panels(epoch)
        # Every epoch on disk, so that an interrupted run keeps the epochs it finished.
        for writer in self._writers.values():
            writer.flush()


def stage_log(config, splits, run_dir, stage_index, stage_name):
    """The ``TensorBoardLog`` of one stage of a run: in ``log_dir``, with
    ``config.tensorboard_images`` validation images (training images where the run has
    no validation split) drawn with the run's seed, at the config's Grad-CAM layer."""
    split = "validation" if splits["validation"] is not None else "train"
    images, labels = panel_batch(splits[split], config.tensorboard_images, config.seed)
    return TensorBoardLog(log_dir(run_dir, stage_index, stage_name), images, labels,
                          cam_layer=config.cam_layer,
                          images_every=config.tensorboard_images_every, split=split)
