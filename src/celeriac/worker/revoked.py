"""Revoked task ids: a worker's in-memory set, backed by the broker so restarts keep it.

Celery keeps revokes in each worker's memory (and in `--statedb` if asked), so a worker
started after `revoke()` runs the task anyway (celery#4886). Here every revoke is also
stored in the broker with a time to live (SQLite table, Redis sorted set ``celeriac.revoked``
scored by expiry): a worker loads them when it starts and learns new ones by broadcast.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from ..control import REVOKE_EXPIRES

logger = logging.getLogger("celeriac.worker")

#: At most this many ids are kept in memory; the oldest go first (Celery: 50,000).
REVOKES_MAX = 50_000


class RevokedTasks:
    """Task ids not to run, each until its expiry. Read by the consumer, written by the
    control thread: every update replaces whole dict entries, which is safe across threads
    under the GIL."""

    def __init__(self, broker: Any, expires: float = REVOKE_EXPIRES, maxlen: int = REVOKES_MAX) -> None:
        self.broker = broker
        self.expires = expires
        self.maxlen = maxlen
        self._until: dict[str, float] = {}

    def __contains__(self, task_id: object) -> bool:
        until = self._until.get(task_id)  # type: ignore[call-overload]
        return until is not None and until > time.time()

    def __len__(self) -> int:
        return len(self._until)

    def __bool__(self) -> bool:
        return bool(self._until)

    def add(self, task_ids: Iterable[str], persist: bool = True) -> None:
        """Revoke ids here and (with `persist`) for every worker that starts later."""
        ids = [str(task_id) for task_id in task_ids]
        until = time.time() + self.expires
        for task_id in ids:
            self._until.pop(task_id, None)  # re-inserted last: the newest are kept longest
            self._until[task_id] = until
        if len(self._until) > self.maxlen:
            self.purge()
        if persist and ids:
            try:
                self.broker.store_revoked(ids, until)
            except Exception as exc:  # the in-memory revoke still holds on this worker
                logger.warning("Could not store revoked ids in the broker: %r", exc)

    def load(self) -> int:
        """Add the ids stored in the broker; return how many."""
        try:
            ids = self.broker.load_revoked()
        except Exception as exc:
            logger.warning("Could not read revoked ids from the broker: %r", exc)
            return 0
        self.add(ids, persist=False)
        return len(ids)

    def purge(self) -> None:
        """Forget expired ids, and the oldest beyond `maxlen`."""
        now = time.time()
        kept = [(task_id, until) for task_id, until in list(self._until.items()) if until > now]
        self._until = dict(kept[-self.maxlen:])

    def ids(self) -> list[str]:
        """The ids in force, oldest first."""
        now = time.time()
        return [task_id for task_id, until in list(self._until.items()) if until > now]
