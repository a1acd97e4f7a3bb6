"""Tables 3-4 of the hallucinated-saliency paper (PAPERS.md §2), as figures: test images
that a saliency method classifies correctly and the baseline does not (and the
reverse), each beside the saliency map the method's classifier hallucinates for it.

Runs are paired by seed (and k in a k-shot grid), as for the t-test; the images come
from each pair's own test set, re-created from its split, and the right/wrong verdicts
from the runs' saved predictions. Pairs with more training images are visited first.
"""

import numpy as np

from .errors import UserError
from .evaluation import TestSets, load_model
from .reports import _slug, seed_pairs
from .splits import shot_label, shot_order


def is_saliency(method):
    return method.runs[0].config.get("method") == "saliency"


def _largest_k_first(method, pairs):
    return sorted(pairs, key=lambda pair: shot_order(method.runs[pair[0]].shots), reverse=True)


def chosen_examples(baseline, method, count):
    """{"better": [...], "worse": [...]}: up to ``count`` (method run index, baseline run
    index, test image index) where the method is right and the baseline wrong, and
    the reverse."""
    found = {"better": [], "worse": []}
    for ours, theirs in _largest_k_first(method, seed_pairs(baseline, method)):
        run, other = method.runs[ours], baseline.runs[theirs]
        right = run.probabilities.argmax(axis=1) == run.labels
        other_right = other.probabilities.argmax(axis=1) == other.labels
        for kind, mask in (("better", right & ~other_right), ("worse", ~right & other_right)):
            for index in np.flatnonzero(mask):
                if len(found[kind]) < count:
                    found[kind].append((ours, theirs, int(index)))
    return found


def saliency_maps(model, images):
    """The maps the model's saliency branch hallucinates, (B, h, w) at the fusion size."""
    import keras

    from .modulated import BRANCH

    probe = keras.Model(model.inputs, model.get_layer(BRANCH).output)
    return np.asarray(probe(images, training=False))[..., 0]


def write_saliency_figures(methods, out_dir, count=4, log=None):
    """One PNG per saliency method and kind (``saliency_<method>_better.png``,
    ``..._worse.png``); returns the paths written. A kind without an example gets no
    file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    baseline = methods[0]
    class_names = baseline.runs[0].config["class_names"]
    written = []
    test_sets, models = TestSets(), {}

    def model_of(run):
        if run.path not in models:
            models[run.path] = load_model(run)
        return models[run.path]

    for method in filter(is_saliency, methods[1:]):
        for kind, examples in chosen_examples(baseline, method, count).items():
            if not examples:
                continue
            if log:
                log(f"saliency figure: {method.name}, {kind} than {baseline.name}")
            figure, axes = plt.subplots(len(examples), 2, figsize=(4.6, 2.3 * len(examples)),
                                        squeeze=False)
            for row, (ours, theirs, index) in enumerate(examples):
                run, other = method.runs[ours], baseline.runs[theirs]
                image = np.asarray(test_sets.of(run).images[index:index + 1], np.float32) / 255
                saliency = saliency_maps(model_of(run), image)[0]
                label = int(run.labels[index])
                axes[row, 0].imshow(image[0])
                axes[row, 0].set_ylabel(
                    f"{class_names[label]}\n{method.name}: "
                    f"{class_names[int(run.probabilities[index].argmax())]}\n{baseline.name}: "
                    f"{class_names[int(other.probabilities[index].argmax())]}", fontsize=7)
                axes[row, 1].imshow(saliency, cmap="magma")
                axes[row, 1].set_xlabel(f"max {saliency.max():.2f}, seed {run.seed}"
                                        + ("" if not run.k_shot else
                                           f", k = {shot_label(run.shots)}"), fontsize=7)
            axes[0, 0].set_title("test image", fontsize=9)
            axes[0, 1].set_title("hallucinated saliency", fontsize=9)
            for axis in axes.flat:
                axis.set_xticks([])
                axis.set_yticks([])
            figure.tight_layout()
            path = out_dir / f"saliency_{_slug(method.name)}_{kind}.png"
            try:
                figure.savefig(path, dpi=120)
            except OSError as error:
                raise UserError(f"cannot write {path}: {error.strerror}") from None
            finally:
                plt.close(figure)
            written.append(path)
    return written
