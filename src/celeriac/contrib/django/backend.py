"""The ``django-db`` result backend: results through the Django ORM, in django-celery-results' tables.

``CELERY_RESULT_BACKEND = "django-db"`` with ``"celeriac.contrib.django"`` in INSTALLED_APPS.
Rows are written as django-celery-results writes them, so its admin, its backend and
Celery clients using it read celeriac's results, and the reverse:

- ``result``: the value alone, serialized with `result_serializer`; ``content_type`` and
  ``content_encoding`` say how (binary serializers are base64-encoded, as there).
- ``meta``: ``{"children": [...]}`` (plus ``group_id`` / ``parent_id`` when known), serialized
  the same way.
- with `result_extended`: ``task_name``, ``task_args`` / ``task_kwargs`` (the message's
  ``argsrepr`` / ``kwargsrepr``), ``worker``, ``periodic_task_name``, and ``date_started``
  for STARTED. The traceback is stored whether or not results are extended.

Every query goes through `Backend._retrying`: a lost connection (Django's InterfaceError or
OperationalError) is closed and, with `result_backend_always_retry`, the operation runs again
on a new one.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ... import states
from ...backends.base import Backend, exception_to_dict, pending_meta
from ...exceptions import BackendGetMetaError
from ...serialization import dumps, loads

if TYPE_CHECKING:
    from ...app import Celery

__all__ = ["DatabaseBackend"]


def _models() -> Any:
    from .fixup import ensure_setup

    ensure_setup()  # for a process whose app did not run the Django fixup
    from . import models

    return models


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


class DatabaseBackend(Backend):
    """Results in ``django_celery_results_taskresult`` / ``..._groupresult`` via the ORM.

    Args:
        app: The app (its `result_serializer`, `result_extended`, `result_expires` apply).
        url: ``"django-db"``; ignored otherwise (the database is Django's, chosen by its
            database routers for the result models).
    """

    def __init__(self, app: Celery, url: str | None = "django-db") -> None:
        super().__init__(app, url or "django-db")
        self.models = _models()

    def __repr__(self) -> str:
        return "<DatabaseBackend django-db>"

    def exception_safe_to_retry(self, exc: Exception) -> bool:
        """Django's InterfaceError and OperationalError (a lost or refused connection, a lock
        timeout), as django-celery-results retries its InterfaceError: a connection the error
        left unusable is closed first, so the next try (or the next call) opens a new one."""
        from django.db import InterfaceError, OperationalError, connections

        if not isinstance(exc, InterfaceError | OperationalError):
            return False
        for conn in connections.all(initialized_only=True):
            if conn.connection is not None and not conn.is_usable():
                conn.close()
        return True

    # Key/value primitives: this backend overrides every method that would use them.
    def _get(self, key: str) -> bytes | None:
        raise NotImplementedError("the django-db backend stores rows, not keys")

    def _set(self, key: str, value: bytes, ttl: int | None) -> None:
        raise NotImplementedError("the django-db backend stores rows, not keys")

    def _delete(self, key: str) -> None:
        raise NotImplementedError("the django-db backend stores rows, not keys")

    # -- encoding ------------------------------------------------------------------------

    def encode_content(self, value: Any) -> tuple[str, str, str]:
        """``(content_type, content_encoding, text)`` as django-celery-results stores values."""
        data, content_type, encoding = dumps(value, self.serializer)
        if encoding == "binary":
            return content_type, encoding, base64.b64encode(data).decode("ascii")
        return content_type, encoding, data.decode(encoding)

    def decode_content(self, content_type: str, encoding: str, text: str | None) -> Any:
        if not text:
            return None
        if encoding == "binary":
            return loads(base64.b64decode(text), content_type, encoding, self.accept)
        return loads(text.encode(encoding or "utf-8"), content_type, encoding or "utf-8", self.accept)

    # -- task results ----------------------------------------------------------------------

    def _extended_fields(self, request: Any) -> dict[str, Any]:
        if not (self.extended and request is not None):
            return {}
        headers = getattr(request, "headers", None) or {}
        args = getattr(request, "argsrepr", None) or headers.get("argsrepr")
        kwargs = getattr(request, "kwargsrepr", None) or headers.get("kwargsrepr")
        if args is None:
            args = getattr(request, "args", None)
        if kwargs is None:
            kwargs = getattr(request, "kwargs", None)
        return {
            "periodic_task_name": getattr(request, "periodic_task_name", None)
            or headers.get("periodic_task_name"),
            "task_name": getattr(request, "task", None),
            "task_args": None if args is None else self.encode_content(args)[2],
            "task_kwargs": None if kwargs is None else self.encode_content(kwargs)[2],
            "worker": getattr(request, "hostname", None),
        }

    def _write_meta(self, meta: dict[str, Any], request: Any) -> None:
        """Write the task's row (created on first write); a stored SUCCESS is kept."""
        from django.db import IntegrityError, router, transaction
        from django.db.models.functions import Now

        task_id, state, traceback = meta["task_id"], meta["status"], meta["traceback"]
        content_type, encoding, text = self.encode_content(meta["result"])
        extra = {"children": meta["children"]}
        for key in ("group_id", "parent_id"):
            if key in meta:
                extra[key] = meta[key]
        fields: dict[str, Any] = {
            "status": state,
            "result": text,
            "content_type": content_type,
            "content_encoding": encoding,
            "traceback": traceback,
            "meta": self.encode_content(extra)[2],
            **self._extended_fields(request),
        }
        if state == states.STARTED:
            fields["date_started"] = Now()
        model = self.models.TaskResult
        rows = model.objects.using(router.db_for_write(model))
        # One UPDATE, no read first: it keeps a stored SUCCESS (as Celery: a task run twice
        # keeps its first success) without locking, so SQLite never has to upgrade a read
        # lock and MySQL takes no gap lock.
        if self._update(rows, task_id, fields):
            return
        if not rows.filter(task_id=task_id).exists():
            try:
                with transaction.atomic(using=rows.db):
                    rows.create(task_id=task_id, **fields)
            except IntegrityError:  # created by another process a moment ago
                self._update(rows, task_id, fields)

    @staticmethod
    def _update(rows: Any, task_id: str, fields: dict[str, Any]) -> int:
        from django.utils import timezone

        # QuerySet.update() skips auto_now: date_done is set here.
        return rows.filter(task_id=task_id).exclude(status=states.SUCCESS).update(
            date_done=timezone.now(), **fields)

    def _meta_from_row(self, row: Any) -> dict[str, Any]:
        extra = self.decode_content(row.content_type, row.content_encoding, row.meta) or {}
        meta: dict[str, Any] = {
            "status": row.status,
            "result": self.decode_content(row.content_type, row.content_encoding, row.result),
            "traceback": row.traceback,
            "children": extra.get("children") or [],
            "date_done": _iso(row.date_done) if row.status in states.READY_STATES else None,
        }
        for key in ("group_id", "parent_id"):
            if extra.get(key):
                meta[key] = extra[key]
        if self.extended:
            meta.update(
                name=row.task_name,
                args=self._decode_args(row, row.task_args),
                kwargs=self._decode_args(row, row.task_kwargs),
                worker=row.worker,
                periodic_task_name=row.periodic_task_name,
                date_started=_iso(row.date_started),
            )
        meta["task_id"] = row.task_id
        return meta

    def _decode_args(self, row: Any, text: str | None) -> Any:
        try:
            return self.decode_content(row.content_type, row.content_encoding, text)
        except Exception:  # written by hand or by an old version: show it as it is
            return text

    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        rows = self._retrying(self._rows, [task_id], error=BackendGetMetaError, task_id=task_id)
        return self._meta_from_row(rows[task_id]) if task_id in rows else pending_meta(task_id)

    def get_many_metas(self, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        rows = self._retrying(self._rows, list(task_ids), error=BackendGetMetaError)
        return [self._meta_from_row(rows[tid]) if tid in rows else pending_meta(tid) for tid in task_ids]

    def _rows(self, task_ids: list[str]) -> dict[str, Any]:
        return {row.task_id: row for row in self.models.TaskResult.objects.filter(task_id__in=task_ids)}

    def forget(self, task_id: str) -> None:
        self._retrying(self.models.TaskResult.objects.filter(task_id=task_id).delete)

    def close(self) -> None:
        """Django owns the connections; the fixup closes them between tasks."""

    # -- groups ----------------------------------------------------------------------------

    def save_group(self, group_id: str, result: Any) -> None:
        content_type, encoding, text = self.encode_content(result)
        self._retrying(functools.partial(
            self.models.GroupResult.objects.update_or_create, group_id=group_id,
            defaults={"result": text, "content_type": content_type, "content_encoding": encoding}))

    def get_group(self, group_id: str) -> Any:
        row = self._retrying(self.models.GroupResult.objects.filter(group_id=group_id).first)
        if row is None:
            return None
        return self.decode_content(row.content_type, row.content_encoding, row.result)

    def delete_group(self, group_id: str) -> None:
        self._retrying(self.models.GroupResult.objects.filter(group_id=group_id).delete)

    # -- expiry ----------------------------------------------------------------------------

    def cleanup(self) -> int:
        """Delete task and group results older than `result_expires`; return how many."""
        from django.utils import timezone

        if not self.expires:
            return 0
        cutoff = timezone.now() - timedelta(seconds=self.expires)
        deleted, _ = self.models.TaskResult.objects.filter(date_done__lt=cutoff).delete()
        groups, _ = self.models.GroupResult.objects.filter(date_done__lt=cutoff).delete()
        return deleted + groups

    # -- chords ----------------------------------------------------------------------------

    def chord_init(self, group_id: str, size: int) -> None:
        """Start counting a chord's header of `size` tasks in ``..._chordcounter``."""
        self._retrying(functools.partial(
            self.models.ChordCounter.objects.update_or_create,
            group_id=group_id, defaults={"sub_tasks": json.dumps([None] * size), "count": size}))

    def chord_add(self, group_id: str, count: int = 1) -> None:
        """Tell a running chord that `count` more header tasks were added."""
        self._retrying(self._chord_add, group_id, count)

    def _chord_add(self, group_id: str, count: int) -> None:
        from django.db import router, transaction
        from django.db.models import F

        model = self.models.ChordCounter
        db = router.db_for_write(model)
        with transaction.atomic(using=db):
            model.objects.using(db).filter(group_id=group_id).update(count=F("count"))
            row = model.objects.using(db).select_for_update().filter(group_id=group_id).first()
            if row is not None:
                row.sub_tasks = json.dumps(json.loads(row.sub_tasks) + [None] * count)
                row.count += count
                row.save(update_fields=["sub_tasks", "count"])

    def chord_part_done(
        self, group_id: str, task_id: str, group_index: int | None, state: str, result: Any
    ) -> list[tuple[str, str, Any]] | None:
        """Count one header task in a transaction; the caller that completes the chord gets all.

        The counter row is locked (an UPDATE, then SELECT ... FOR UPDATE), the task's slot in ``sub_tasks``
        filled (so a redelivered task is counted once) and ``count`` decremented; at zero the
        row is deleted and this caller returns the header results in group order. The results
        of the other header tasks are read from their task result rows.

        A counter made by django-celery-results (all ``sub_tasks`` known from the start) is
        decremented as django-celery-results does.

        Returns:
            None, or for exactly one caller: ``(task_id, state, result)`` per header task.
        """
        if isinstance(result, BaseException):
            result = exception_to_dict(result)
        ids = self._retrying(self._count_part, group_id, task_id, group_index)
        if ids is None:
            return None
        metas = {meta["task_id"]: meta for meta in self.get_many_metas([i for i in ids if i])}
        out = []
        for tid in ids:
            if tid == task_id:
                out.append((tid, state, result))
            elif tid is not None:
                out.append((tid, metas[tid]["status"], metas[tid]["result"]))
        return out

    def _count_part(self, group_id: str, task_id: str, group_index: int | None) -> list[str | None] | None:
        """`chord_part_done`'s transaction: the header's task ids when this part completed
        the chord, else None."""
        from django.db import router, transaction
        from django.db.models import F

        model = self.models.ChordCounter
        db = router.db_for_write(model)
        with transaction.atomic(using=db):
            # Write first: this takes the row lock (and SQLite's write lock) before reading,
            # so concurrent parts queue here instead of failing on a lock upgrade.
            model.objects.using(db).filter(group_id=group_id).update(count=F("count"))
            row = model.objects.using(db).select_for_update().filter(group_id=group_id).first()
            if row is None:
                return None  # unknown, or already completed
            slots = json.loads(row.sub_tasks)
            ids = [slot[0][0] if slot else None for slot in slots]
            if task_id in ids:
                if None in ids:
                    return None  # counted already: a redelivery
            else:
                free = [i for i, known in enumerate(ids) if known is None]
                index = group_index if group_index is not None and group_index in free else None
                if index is None:
                    index = free[0] if free else len(slots)
                if index == len(slots):
                    slots.append(None)
                    ids.append(None)
                slots[index] = [[task_id, None], None]
                ids[index] = task_id
            row.count = max(0, row.count - 1)
            if row.count:
                row.sub_tasks = json.dumps(slots)
                row.save(update_fields=["sub_tasks", "count"])
                return None
            row.delete()
        return ids

    def chord_complete(self, group_id: str) -> bool:
        """Nothing left to do: the counter row went when the chord completed."""
        return True
