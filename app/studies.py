"""Studies of the REST API and the UI: in memory only, capped in number and expired after a time without use."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from radialog.chat import Session

logger = logging.getLogger(__name__)


class StudyNotFound(Exception):
    pass


@dataclass(frozen=True)
class StoreSettings:
    max_studies: int = 64
    ttl_s: float = 3600.0  # since last use


class StudyStore:
    """Least recently used studies are evicted first when the cap is reached; nothing goes to disk."""

    def __init__(self, settings: StoreSettings = StoreSettings()) -> None:
        self.settings = settings
        self._studies: OrderedDict[str, tuple[Session, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._studies)

    def add(self, session: Session) -> None:
        with self._lock:
            self._expire()
            while len(self._studies) >= self.settings.max_studies:
                evicted, _ = self._studies.popitem(last=False)
                logger.info("study %s evicted: the store holds %d studies", evicted, self.settings.max_studies)
            self._studies[session.id] = (session, time.monotonic())

    def get(self, study_id: str) -> Session:
        with self._lock:
            self._expire()
            if study_id not in self._studies:
                raise StudyNotFound(f"no study {study_id!r} (it may have expired)")
            session, _ = self._studies.pop(study_id)
            self._studies[study_id] = (session, time.monotonic())
            return session

    def delete(self, study_id: str) -> None:
        with self._lock:
            if self._studies.pop(study_id, None) is None:
                raise StudyNotFound(f"no study {study_id!r}")

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.settings.ttl_s
        # Ordered by last use: expired studies are all at the front.
        while self._studies and next(iter(self._studies.values()))[1] < cutoff:
            expired, _ = self._studies.popitem(last=False)
            logger.info("study %s expired", expired)
