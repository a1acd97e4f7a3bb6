"""Test-set corruptions of evaluate.py, as a registry: one entry per corruption, one
metrics table and one ``runs.csv`` accuracy column per (corruption, setting), unless
the entry has a ``summary`` that renders its own tables, columns and figures.

A corruption is a pure NumPy function ``corrupt(images, indices, seed, parameters)``
of a float batch (B, H, W, C) in [0, 1], the images' indices in the test set, a seed
and one setting's parameters; it returns a new batch of the same shape in [0, 1]. It
must depend on (seed, index) alone for each image, so that every model sees the same
corrupted test set whatever the batching (``corrupted_batches``).

Registered here: ``random_erasing`` (PAPERS.md §1, Table 7; ``robustness.py``), the
one default, with one setting, written as today's ``robustness`` table and
``erased_accuracy`` column; and ``occlusion`` (PAPERS.md §5; Cen et al., 2021,
Sec. 4.1 and Table 2; ``occluders.py``), one setting per occluder pattern (24 with
the shipped occluders), summarised in Table 2's layout (``occlusion_reports.py``).
evaluate.py builds its own ``occlusion`` entry from its flags with
``occlusion_corruption`` and passes the object on; the registered one, from the
shipped occluders and the paper's ratios, gives the name and the defaults. A new
corruption is one ``register(Corruption(...))``: evaluate.py's ``--corruptions``
choices, the tables, ``runs.csv`` and ``corruptions.csv`` follow from the entry.

This module does not import TensorFlow.
"""

import dataclasses
import re
import types
from typing import Callable, Mapping, NamedTuple

import numpy as np

from . import occluders, robustness
from .errors import UserError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# File stems evaluate.py writes for its other tables and rows: a corruption's table
# must not overwrite one of them.
RESERVED_STEMS = frozenset({"metrics", "per_class_tpr", "cost", "inspection", "runs",
                            "corruptions", "faithfulness", "faithfulness_p"})


@dataclasses.dataclass(frozen=True)
class Corruption:
    """One registered corruption.

    name: the ``--corruptions`` choice and the ``corruption`` field of result rows.
    title: the title of its metrics table; ``{setting}`` is replaced by the setting.
    settings: setting name -> the parameters passed to ``corrupt`` (in table order).
    corrupt: ``corrupt(images, indices, seed, parameters) -> images`` (see the module).
    stem: file stem of a setting's table, ``{name}`` and ``{setting}`` replaced;
        by default ``<name>_<setting>``.
    column: the ``runs.csv`` accuracy column of a setting, the same replacements;
        by default ``<name>_<setting>_accuracy``.
    summary: optional ``summary(corruption, methods, scores) -> Summary``, where
        ``scores`` is {setting: {method name: [metrics of each run]}} (runs in the
        methods' order); when given, its tables, runs.csv columns and figures
        replace the per-setting tables and columns (corruptions.csv keeps one row
        per setting and run).
    """

    name: str
    title: str
    settings: Mapping[str, object]
    corrupt: Callable
    stem: str = "{name}_{setting}"
    column: str = "{name}_{setting}_accuracy"
    summary: Callable | None = None

    def table_title(self, setting):
        return self.title.format(name=self.name, setting=setting)

    def table_stem(self, setting):
        return self.stem.format(name=self.name, setting=setting)

    def accuracy_column(self, setting):
        return self.column.format(name=self.name, setting=setting)

    def summarize(self, methods, scores):
        """The ``Summary`` of ``scores`` ({setting: {method: [metrics per run]}})."""
        return self.summary(self, methods, scores)

    def apply(self, images, indices, seed, setting):
        """``images`` corrupted with the named ``setting``; checks the shape kept."""
        corrupted = self.corrupt(images, indices, seed, self.settings[setting])
        if np.shape(corrupted) != np.shape(images):
            raise ValueError(f"corruption {self.name} ({setting}) changed the batch shape "
                             f"{np.shape(images)} to {np.shape(corrupted)}")
        return corrupted


class Summary(NamedTuple):
    """What a corruption's ``summary`` renders. tables: ``reports.Table`` by file stem;
    columns: runs.csv column -> {method: [value of each run]}; figures: file name ->
    ``draw(path)``, written beside the tables."""

    tables: dict
    columns: dict
    figures: Mapping = types.MappingProxyType({})


CORRUPTIONS = {}


def register(corruption):
    """Add ``corruption`` to ``CORRUPTIONS``; returns it. Refuses (ValueError) a name
    already taken, names that are not file-name safe, and table stems or runs.csv
    columns that clash with another setting, another corruption or evaluate.py's
    own files."""
    names = [corruption.name, *corruption.settings]
    bad = [name for name in names if not _NAME.fullmatch(str(name))]
    if bad:
        raise ValueError(f"corruption and setting names must be letters, digits, _ or -: {bad}")
    if not corruption.settings:
        raise ValueError(f"corruption {corruption.name} has no setting")
    if corruption.name in CORRUPTIONS:
        raise ValueError(f"a corruption named {corruption.name} is already registered")
    taken = {kind: {getattr(other, method)(setting) for other in CORRUPTIONS.values()
                    for setting in other.settings}
             for kind, method in (("table", "table_stem"), ("runs.csv column", "accuracy_column"))}
    taken["table"] |= RESERVED_STEMS
    for kind, method in (("table", "table_stem"), ("runs.csv column", "accuracy_column")):
        own = [getattr(corruption, method)(setting) for setting in corruption.settings]
        clashes = sorted({value for value in own if own.count(value) > 1 or value in taken[kind]})
        if clashes:
            raise ValueError(f"corruption {corruption.name}: {kind} {', '.join(clashes)} "
                             "is not unique")
    CORRUPTIONS[corruption.name] = corruption
    return corruption


def get(name):
    """The registered corruption ``name``; a UserError naming the choices if none."""
    try:
        return CORRUPTIONS[name]
    except KeyError:
        raise UserError(f"unknown corruption {name!r}; choose from "
                        f"{', '.join(CORRUPTIONS)}") from None


def corrupted_batches(corruption, setting, images, batch_size, seed):
    """Batches of the corrupted test set from prepared uint8 images, in order."""
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size], np.float32) / 255.0
        yield corruption.apply(batch, np.arange(start, start + len(batch)), seed, setting)


def _random_erasing(images, indices, seed, parameters):
    return robustness.erase(images, indices, seed, **parameters)


def _occlude(images, indices, seed, parameters):
    # The same pattern on every image: no dependence on seed or index at all.
    rgb, mask = occluders.render(parameters["pattern"], parameters["occluders"],
                                 *np.shape(images)[1:3])
    return occluders.occlude_numpy(np.asarray(images, np.float32), rgb, mask)


def _occlusion_summary(corruption, methods, scores):
    from .occlusion_reports import occlusion_summary

    return occlusion_summary(corruption, methods, scores)


def occlusion_corruption(occluder_list, ratios=occluders.RATIOS,
                         random_positions=occluders.RANDOM_POSITIONS, seed=0):
    """The ``occlusion`` corruption of ``occluders.make_patterns(occluder_list, ratios,
    random_positions, seed)``: a setting per pattern (named as the pattern; parameters
    {"pattern", "occluders"}), summarised in Table 2's layout. ValueError naming the
    evaluate.py flag on a bad ratio, count or seed."""
    occluder_list = tuple(occluder_list)
    patterns = occluders.make_patterns(occluder_list, ratios, random_positions, seed)
    return Corruption(
        name="occlusion",
        title="Test metrics with the occluder pattern {setting} pasted on every image",
        settings={pattern.name: {"pattern": pattern, "occluders": occluder_list}
                  for pattern in patterns},
        corrupt=_occlude,
        summary=_occlusion_summary,
    )


RANDOM_ERASING = register(Corruption(
    name="random_erasing",
    title="Test metrics with one random region erased per image (Random Erasing)",
    settings={"one_region": {"area": robustness.AREA, "aspect": robustness.ASPECT}},
    corrupt=_random_erasing,
    # The names of the robustness test before corruptions were a registry.
    stem="robustness",
    column="erased_accuracy",
))
OCCLUSION = register(occlusion_corruption(occluders.load_occluders()))
DEFAULT = (RANDOM_ERASING.name,)
