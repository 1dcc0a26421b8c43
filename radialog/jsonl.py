"""Reading JSON Lines input files with error messages that point at the offending line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from radialog.errors import InputError


def iter_jsonl(path: str | Path) -> Iterator[tuple[str, dict]]:
    """(where, object) for each non-blank line; `where` is "file:line", for the caller's own messages."""
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{where}: invalid JSON ({err.msg})") from err
            if not isinstance(data, dict):
                raise InputError(f"{where}: expected a JSON object per line")
            yield where, data
