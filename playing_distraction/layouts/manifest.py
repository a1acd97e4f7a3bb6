"""The CSV manifest (``manifest.csv``: ``path,label[,event][,split]``, paths relative to
the manifest's folder) that this toolkit defines for datasets without an on-disk layout
of their own; read by the EgoFoodPlaces and generic folder readers."""

import csv
import dataclasses
from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import Part, _check_files_exist, _require_file

MANIFEST = "manifest.csv"
SPLIT_NAMES = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}


@dataclasses.dataclass
class ManifestRow:
    line: int
    path: str
    label: str
    event: str | None
    split: str | None


def read_manifest(path, required=("path", "label")):
    """Rows of a CSV manifest with a header naming at least ``required`` (and optionally
    ``event`` and ``split``); paths are relative to the manifest's folder."""
    path = Path(path)
    _require_file(path, f"a CSV manifest with the header {','.join(required)}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in reader.fieldnames or ()]
            missing = [name for name in required if name not in header]
            if missing:
                raise UserError(
                    f"{path}:1: the header {','.join(header) or '(empty)'} lacks the "
                    f"column(s) {', '.join(missing)}")
            rows = []
            for record in reader:
                line = reader.line_num
                if None in record:  # DictReader's key for fields beyond the header
                    raise UserError(
                        f"{path}:{line}: {len(header) + len(record[None])} fields but the header "
                        f"has {len(header)} (quote a field that holds a comma)")
                record = {key.strip(): (value or "").strip() for key, value in record.items()}
                for name in required:
                    if not record.get(name):
                        raise UserError(f"{path}:{line}: empty '{name}'")
                split = record.get("split") or None
                if split is not None and split not in SPLIT_NAMES:
                    raise UserError(
                        f"{path}:{line}: split {split!r} is not one of {', '.join(SPLIT_NAMES)}")
                rows.append(ManifestRow(line, str(path.parent / record["path"]), record["label"],
                                        record.get("event") or None,
                                        SPLIT_NAMES[split] if split else None))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"cannot read {path}: {error}") from None
    if not rows:
        raise UserError(f"{path} lists no images")
    return rows


def _parts_from_rows(rows, source, class_names=None):
    """Group manifest rows by their split; labels must be classes of the training split."""
    if class_names is None:
        class_names = sorted({row.label for row in rows if row.split in (None, "train")})
    index = {label: i for i, label in enumerate(class_names)}
    grouped = {}
    for row in rows:
        if row.label not in index:
            raise UserError(f"{source}:{row.line}: label {row.label!r} has no training images")
        grouped.setdefault(row.split, []).append(row)
    _check_files_exist([row.path for row in rows], source)
    has_events = any(row.event is not None for row in rows)
    parts = {
        split: Part(None, np.array([index[row.label] for row in group], np.int64),
                    np.array([row.path for row in group]),
                    events=np.array([row.event or "" for row in group]) if has_events else None)
        for split, group in grouped.items()
    }
    return class_names, parts
