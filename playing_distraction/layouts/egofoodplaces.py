"""EgoFoodPlaces (Sarker et al., IEEE Access 2019), one of the paper's datasets. It has
no public on-disk layout, so this toolkit reads a ``manifest.csv`` with
``path,label,event[,split]`` (``manifest.py``) and, without a split column, splits the
images by event."""

from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import _dataset
from .manifest import MANIFEST, _parts_from_rows, read_manifest

def read_egofoodplaces(directory, event_split=(0.7, 0.1, 0.2), split_seed=0, name="egofoodplaces"):
    """EgoFoodPlaces (Sarker et al.): egocentric photo-streams of 15 food-related places.

    No public layout exists; ours is ``manifest.csv`` with ``path,label,event[,split]``
    (see data/README.md). Without a split column the images are split by event,
    70/10/20 by default, so that no event is in two splits (``splits.split_by_events``).
    """
    from ..splits import split_by_events

    manifest = Path(directory) / MANIFEST
    rows = read_manifest(manifest, required=("path", "label", "event"))
    has_split = [row.split is not None for row in rows]
    if any(has_split) and not all(has_split):
        line = rows[has_split.index(False)].line
        raise UserError(f"{manifest}:{line}: empty 'split' (give it on every line or on none)")
    if all(has_split):
        class_names, parts = _parts_from_rows(rows, manifest)
        _check_events_disjoint(parts, manifest)
    else:
        class_names = sorted({row.label for row in rows})
        _, grouped = _parts_from_rows(rows, manifest, class_names)
        parts = split_by_events(grouped[None], event_split, split_seed, source=manifest)
    for split in ("train", "test"):
        if split not in parts:
            raise UserError(f"{manifest}: no image is in the {split} split")
    return _dataset(name, class_names, parts, manifest)


def _check_events_disjoint(parts, source):
    seen = {}
    for split, part in parts.items():
        for event in np.unique(part.events):
            if event in seen and seen[event] != split:
                raise UserError(
                    f"{source}: event {event!r} is in both the {seen[event]} and {split} splits")
            seen[event] = split
