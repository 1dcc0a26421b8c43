"""The audit log: one line per access to a study on the `radialog.audit` logger, from the API and the UI alike.

A line names who (the client's host, and the API token's hash prefix or `ui`), the study and the action; never
the image, a message or a report.
"""

from __future__ import annotations

import logging

AUDIT = logging.getLogger("radialog.audit")


def log_access(who: str, study_id: str | None, action: str) -> None:
    AUDIT.info("who=%s study=%s action=%s", who, study_id or "-", action)
