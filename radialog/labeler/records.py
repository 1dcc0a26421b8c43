"""Reading report records (CSV or JSONL) and writing label records, with clear errors for bad files."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from radialog.errors import InputError
from radialog.jsonl import iter_jsonl
from radialog.labeler.base import Labels
from radialog.labels import CHEXPERT_LABELS

FORMATS = ("jsonl", "csv")


def file_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise InputError(f"{path}: expected a .csv or .jsonl file")
    return suffix


def _csv_records(path: Path, fields: Sequence[str]) -> list[tuple[str, dict]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            return []
        missing = [f for f in fields if f not in reader.fieldnames]
        if missing:
            raise InputError(
                f"{path}: missing column(s) {', '.join(missing)} (columns: {', '.join(reader.fieldnames)})"
            )
        # Line numbers as an editor shows them: the header is line 1.
        return [(f"{path}:{reader.line_num}", row) for row in reader]


def read_records(path: str | Path, fields: Sequence[str]) -> list[dict]:
    """Records that each have an `id` and the text `fields`; ids must be unique.

    Raises InputError for a missing or empty file, a missing column/key, an invalid JSON line,
    a non-text value or a repeated id.
    """
    path = Path(path)
    kind = file_format(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    fields = ["id", *fields]
    rows = list(iter_jsonl(path)) if kind == "jsonl" else _csv_records(path, fields)
    if not rows:
        raise InputError(f"{path}: no records")
    seen: set[str] = set()
    records = []
    for where, row in rows:
        for name in fields:
            if name not in row:
                raise InputError(f"{where}: missing {name!r}")
        if row["id"] is None or str(row["id"]).strip() == "":
            raise InputError(f"{where}: empty id")
        for name in fields[1:]:
            if not isinstance(row[name], str):
                raise InputError(f"{where}: {name!r} must be text, not {type(row[name]).__name__}")
        key = str(row["id"])
        if key in seen:
            raise InputError(f"{where}: id {key!r} appears more than once")
        seen.add(key)
        records.append({name: row[name] for name in fields})
    return records


def write_labels(ids: Sequence, labels: Sequence[Labels], output: str | Path | None, kind: str = "jsonl") -> None:
    """One record per report: JSONL {"id", "labels": {all 14}} or CSV id + 14 columns (blank = None)."""
    if output is None:
        _write(ids, labels, sys.stdout, kind)
        return
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8", newline="") as handle:
        _write(ids, labels, handle, kind)


def _write(ids: Sequence, labels: Sequence[Labels], handle: TextIO, kind: str) -> None:
    if kind == "jsonl":
        for record_id, record_labels in zip(ids, labels, strict=True):
            handle.write(json.dumps({"id": record_id, "labels": record_labels}) + "\n")
        return
    writer = csv.writer(handle)
    writer.writerow(["id", *CHEXPERT_LABELS])
    for record_id, record_labels in zip(ids, labels, strict=True):
        writer.writerow([record_id, *("" if record_labels[n] is None else record_labels[n] for n in CHEXPERT_LABELS)])
