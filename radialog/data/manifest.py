"""The manifest: one JSON line per image with its report sections, CheXpert labels and split.

    {"id": "...", "image": "files/p10/.../x.jpg", "findings": "...", "impression": "...",
     "indication": "...", "labels": {"No Finding": 1, "Cardiomegaly": null, ...}, "split": "train"}

`image` is relative to the manifest's folder (or absolute). `labels` holds the 14 CheXpert names with
1 / 0 / -1 / null (null: not mentioned) and may be null when unknown.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from radialog.errors import InputError
from radialog.jsonl import iter_jsonl
from radialog.labels import CHEXPERT_LABELS

SPLITS = ("train", "validate", "test")
LABEL_VALUES = (1, 0, -1, None)

Labels = dict[str, int | None]


@dataclass
class ManifestRecord:
    id: str
    image: str
    findings: str
    impression: str = ""
    indication: str = ""
    labels: Labels | None = None
    split: str | None = None

    def positive_labels(self) -> list[str]:
        """Names labelled 1, in RaDialog's label order."""
        return [name for name in CHEXPERT_LABELS if (self.labels or {}).get(name) == 1]


def check_labels(labels: object, where: str) -> Labels | None:
    if labels is None:
        return None
    if not isinstance(labels, dict):
        raise InputError(f"{where}: 'labels' must be an object of label → 1/0/-1/null")
    unknown = [name for name in labels if name not in CHEXPERT_LABELS]
    if unknown:
        raise InputError(f"{where}: unknown label(s) {', '.join(map(repr, unknown))}")
    checked: Labels = dict.fromkeys(CHEXPERT_LABELS)
    for name, value in labels.items():
        # JSON writers (pandas among them) turn CheXpert's 1/0/-1 into floats; accept 1.0 but not 0.5.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or value not in LABEL_VALUES:
            raise InputError(f"{where}: label {name!r} is {value!r}, expected 1, 0, -1 or null")
        checked[name] = value
    return checked


def record_from_dict(data: dict, where: str = "record") -> ManifestRecord:
    """A validated record; raises InputError naming `where` (file:line) for anything malformed."""
    for key in ("id", "image", "findings"):
        if key not in data:
            raise InputError(f"{where}: missing {key!r}")
    for key in ("id", "image", "findings", "impression", "indication"):
        if key in data and data[key] is not None and not isinstance(data[key], str):
            raise InputError(f"{where}: {key!r} must be text, not {type(data[key]).__name__}")
    if not data["id"].strip():
        raise InputError(f"{where}: empty id")
    if not data["image"].strip():
        raise InputError(f"{where}: empty image path")
    split = data.get("split")
    if split is not None and split not in SPLITS:
        raise InputError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
    return ManifestRecord(
        id=data["id"],
        image=data["image"],
        findings=data["findings"] or "",
        impression=data.get("impression") or "",
        indication=data.get("indication") or "",
        labels=check_labels(data.get("labels"), where),
        split=split,
    )


def read_manifest(path: str | Path) -> list[ManifestRecord]:
    """All records of a manifest JSONL; ids must be unique. Raises InputError for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: manifest not found")
    records: list[ManifestRecord] = []
    seen: set[str] = set()
    for where, data in iter_jsonl(path):
        record = record_from_dict(data, where)
        if record.id in seen:
            raise InputError(f"{where}: id {record.id!r} appears more than once")
        seen.add(record.id)
        records.append(record)
    if not records:
        raise InputError(f"{path}: no records")
    return records


def write_manifest(records: Iterable[ManifestRecord], path: str | Path, image_root: str | Path | None = None) -> int:
    """Write records as JSONL; returns the count.

    With `image_root`, image paths are taken as relative to it and rewritten relative to the manifest's
    folder, which is where readers resolve them from.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            data = asdict(record)
            if image_root is not None:
                image = Path(image_root) / record.image
                data["image"] = Path(os.path.relpath(image.resolve(), path.parent.resolve())).as_posix()
            handle.write(json.dumps(data, ensure_ascii=False) + "\n")
            count += 1
    return count
