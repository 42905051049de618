"""The result backend interface, and the parts every backend shares.

A backend stores one *meta* dict per task id, in Celery's shape (celery-wire.md 3.2):
``{"status", "result", "traceback", "children", "date_done", [group_id], [parent_id],
[extended fields], "task_id"}``. Subclasses provide a few byte-level primitives on string
keys (`_get`, `_mget`, `_set`, `_delete`); this module builds and reads the metas, encodes
exceptions, and waits for results.

Every operation on the store goes through `Backend._retrying`: an error the backend calls
`exception_safe_to_retry` (a lost connection) is retried, with Celery's policy when
`result_backend_always_retry` is on (full-jitter exponential backoff between
`result_backend_base_sleep_between_retries_ms` and `..._max_sleep_...`, up to
`result_backend_max_retries` times), else with the backend's own few retries
(`default_retries`); then `BackendStoreError`, `BackendGetMetaError` or `BackendError`.
"""

from __future__ import annotations

import abc
import builtins
import contextlib
import importlib
import logging
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from .. import states
from ..exceptions import (
    BackendError,
    BackendGetMetaError,
    BackendStoreError,
    SecurityError,
    TimeoutError,
)
from ..serialization import accept_content_types, dumps, loads
from ..urls import mask_url

if TYPE_CHECKING:
    from ..app import Celery

logger = logging.getLogger("celeriac.backends")

T = TypeVar("T")

TASK_KEYPREFIX = "celery-task-meta-"
GROUP_KEYPREFIX = "celery-taskset-meta-"


#: Where Celery keeps the exceptions celeriac raises under the same names, so a Celery client
#: reading our results gets its own classes (and we get ours reading Celery's).
_CELERY_HOMES = {
    "BackendError": "celery.exceptions", "BackendGetMetaError": "celery.exceptions",
    "BackendStoreError": "celery.exceptions", "ChordError": "celery.exceptions", "Ignore": "celery.exceptions",
    "ImproperlyConfigured": "celery.exceptions", "MaxRetriesExceededError": "celery.exceptions",
    "NotRegistered": "celery.exceptions", "QueueNotFound": "celery.exceptions",
    "Reject": "celery.exceptions", "Retry": "celery.exceptions", "SecurityError": "celery.exceptions",
    "TaskError": "celery.exceptions", "TaskRevokedError": "celery.exceptions",
    "TimeoutError": "celery.exceptions", "SoftTimeLimitExceeded": "billiard.exceptions",
    "TimeLimitExceeded": "billiard.exceptions", "WorkerLostError": "billiard.exceptions",
}


def pending_meta(task_id: str) -> dict[str, Any]:
    """The meta of a task the store knows nothing about (Celery's PENDING)."""
    return {"status": states.PENDING, "result": None, "traceback": None,
            "children": [], "date_done": None, "task_id": task_id}


def exception_to_dict(exc: BaseException) -> dict[str, Any]:
    """Encode an exception as Celery does: type name, args as a list, module."""
    cls = type(exc)
    try:
        message: Any = list(exc.args)
        dumps(message, "json")
    except Exception:  # args that JSON cannot carry: fall back to their text
        message = [str(arg) for arg in exc.args]
    module = cls.__module__
    if module == "celeriac.exceptions":
        module = _CELERY_HOMES.get(cls.__qualname__, module)
    return {"exc_type": cls.__qualname__, "exc_message": message, "exc_module": module}


_synthetic: dict[tuple[str, str], type[Exception]] = {}


def exception_from_dict(data: Mapping[str, Any]) -> BaseException:
    """Rebuild an exception: the real class when importable, else a stand-in of that name."""
    type_name = str(data.get("exc_type") or "Exception")
    module_name = str(data.get("exc_module") or "builtins")
    if _CELERY_HOMES.get(type_name) == module_name:
        module_name = "celeriac.exceptions"  # Celery's own exception: ours has the same name
    message = data.get("exc_message")
    args = tuple(message) if isinstance(message, list | tuple) else (message,)
    cls: Any = None
    module = sys.modules.get(module_name)
    if module is None and module_name != "builtins":
        try:
            module = importlib.import_module(module_name)
        except Exception:
            module = None
    if module_name == "builtins":
        module = builtins
    if module is not None:
        cls = module
        for part in type_name.split("."):
            cls = getattr(cls, part, None)
            if cls is None:
                break
    if cls is not None and not (isinstance(cls, type) and issubclass(cls, BaseException)):
        return SecurityError(
            f"Expected an exception class, got {module_name}.{type_name} with payload {message!r}"
        )
    if cls is None:
        # A stand-in that names the original type, so `except Exception` still catches it.
        key = (module_name, type_name)
        cls = _synthetic.get(key)
        if cls is None:
            cls = type(type_name, (Exception,), {"__module__": module_name})
            _synthetic[key] = cls
    try:
        return cls(*args)
    except Exception:
        exc = Exception.__new__(cls)
        exc.args = args
        return exc


def _expires_seconds(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    seconds = int(value)
    return seconds if seconds > 0 else None


class Backend(abc.ABC):
    """Stores and reads task results. Safe to share between threads."""

    #: Whether `get()` can be woken by the backend rather than by polling.
    supports_native_join = False

    #: Retries of an error `exception_safe_to_retry` while `result_backend_always_retry` is
    #: off (celeriac's own policy for a short outage, pauses from 0.05 s doubling to 1 s).
    default_retries = 0

    def __init__(self, app: Celery, url: str | None = None) -> None:
        self.app = app
        self.url = url or ""
        conf = app.conf
        self.serializer: str = conf.result_serializer or "json"
        accept = conf.result_accept_content or conf.accept_content or ["json"]
        self.accept = accept_content_types(accept)
        self.expires = _expires_seconds(conf.result_expires)
        self.extended = bool(conf.result_extended)
        self._batch = threading.local()
        self.always_retry = bool(conf.result_backend_always_retry)
        max_retries = conf.result_backend_max_retries
        self.max_retries: float = float("inf") if max_retries is None else max_retries
        self.base_sleep_between_retries_ms: float = conf.result_backend_base_sleep_between_retries_ms
        self.max_sleep_between_retries_ms: float = conf.result_backend_max_sleep_between_retries_ms

    # -- retries -----------------------------------------------------------------------

    def exception_safe_to_retry(self, exc: Exception) -> bool:
        """Whether an operation that raised `exc` may simply be run again (Celery's name).

        No exception by default; a backend names its connection errors.
        """
        return False

    def _retrying(self, fn: Callable[..., T], *args: Any, error: type[BackendError] = BackendError,
                  **details: Any) -> T:
        """`fn(*args)`, run again after errors that are safe to retry; when the retries are
        spent, raise `error(..., **details)` from the last one."""
        limit = self.max_retries if self.always_retry else self.default_retries
        retries = 0
        while True:
            try:
                return fn(*args)
            except Exception as exc:
                if not self.exception_safe_to_retry(exc):
                    raise
                if retries >= limit:
                    raise error(f"Result backend {mask_url(self.url)} failed after {retries} "
                                f"retries: {exc!r}", **details) from exc
                retries += 1
                if self.always_retry:  # Celery's: full jitter up to base * 2**retries, capped
                    ceiling = min(self.max_sleep_between_retries_ms,
                                  self.base_sleep_between_retries_ms * 2**retries)
                    pause = random.uniform(0, ceiling) / 1000
                else:
                    pause = min(0.05 * 2 ** (retries - 1), 1.0)
                logger.warning("Result backend error, retry %d of %s in %.3fs: %r",
                               retries, limit, pause, exc)
                time.sleep(pause)

    # -- primitives a store provides -----------------------------------------------------

    @abc.abstractmethod
    def _get(self, key: str) -> bytes | None: ...

    def _mget(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self._get(key) for key in keys]

    @abc.abstractmethod
    def _set(self, key: str, value: bytes, ttl: int | None) -> None:
        """Write a value with a time to live, and wake whoever waits on the key."""

    def _set_many(self, items: Sequence[tuple[str, bytes]], ttl: int | None) -> None:
        for key, value in items:
            self._set(key, value, ttl)

    @abc.abstractmethod
    def _delete(self, key: str) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def cleanup(self) -> int:
        """Delete expired results where the store does not expire them itself; return how many."""
        return 0

    def on_task_call(self) -> None:  # noqa: B027 - optional hook
        """Called before a task whose result is wanted is sent (rpc:// declares its reply queue)."""

    # -- encoding ----------------------------------------------------------------------

    def encode(self, meta: Any) -> bytes:
        return dumps(meta, self.serializer)[0]

    def decode(self, data: bytes) -> dict[str, Any]:
        content_type = {
            "json": "application/json",
            "pickle": "application/x-python-serialize",
            "msgpack": "application/x-msgpack",
            "yaml": "application/x-yaml",
        }.get(self.serializer, self.serializer)
        return loads(data, content_type, "utf-8" if self.serializer == "json" else "binary", self.accept)

    # -- metas -------------------------------------------------------------------------

    def make_meta(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        children: list | None = None,
    ) -> dict[str, Any]:
        """A meta dict in Celery's field order (celery-wire.md 3.2)."""
        meta: dict[str, Any] = {
            "status": state,
            "result": result,
            "traceback": traceback,
            "children": children or getattr(request, "children", None) or [],
            "date_done": datetime.now(UTC).isoformat() if state in states.READY_STATES else None,
        }
        if request is not None:
            group = getattr(request, "group", None)
            if group:
                meta["group_id"] = group
            parent = getattr(request, "parent_id", None)
            if parent:
                meta["parent_id"] = parent
            if self.extended:
                meta["name"] = getattr(request, "task", None)
                meta["args"] = getattr(request, "args", None)
                meta["kwargs"] = getattr(request, "kwargs", None)
                meta["worker"] = getattr(request, "hostname", None)
                meta["retries"] = getattr(request, "retries", None)
                delivery_info = getattr(request, "delivery_info", None) or {}
                meta["queue"] = delivery_info.get("routing_key")
        meta["task_id"] = task_id
        return meta

    def store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        children: list | None = None,
    ) -> dict[str, Any]:
        """Store a state; exceptions in `result` are encoded as Celery encodes them."""
        if isinstance(result, BaseException):
            result = exception_to_dict(result)
        meta = self.make_meta(task_id, result, state, traceback, request, children)
        self._retrying(self._write_meta, meta, request,
                       error=BackendStoreError, task_id=task_id, state=state)
        return meta

    def _write_meta(self, meta: dict[str, Any], request: Any) -> None:
        """Store one meta. Key-value stores use this; tables and rpc:// override it."""
        key, value = TASK_KEYPREFIX + meta["task_id"], self.encode(meta)
        if meta["status"] != states.SUCCESS and self._is_success(key):
            # As Celery: a stored SUCCESS stays. A retry's RETRY may arrive after the retried
            # run has already succeeded; a duplicate run must not undo a success.
            return
        batch = getattr(self._batch, "items", None)
        if batch is not None and meta["status"] in states.READY_STATES:
            batch.append((key, value))
        else:
            self._set(key, value, self.expires)

    def _is_success(self, key: str) -> bool:
        data = self._get(key)
        return data is not None and self.decode(data).get("status") == states.SUCCESS

    @contextlib.contextmanager
    def batched_writes(self) -> Iterator[None]:
        """Collect the final results stored in this thread; write them in one round trip at
        the end (the solo pool wraps each batch of fast tasks in this, before acking them).
        Intermediate states (STARTED, PROGRESS, RETRY) are still written at once."""
        if getattr(self._batch, "items", None) is not None:
            yield
            return
        items: list[tuple[str, bytes]] = []
        self._batch.items = items
        try:
            yield
        finally:
            self._batch.items = None
            if items:
                self._retrying(self._set_many, items, self.expires, error=BackendStoreError)

    def store_many(self, metas: Iterable[dict[str, Any]]) -> None:
        """Store prepared metas in one round trip where the store can."""
        items = [(TASK_KEYPREFIX + meta["task_id"], self.encode(meta)) for meta in metas]
        if items:
            self._retrying(self._set_many, items, self.expires, error=BackendStoreError)

    def mark_as_started(self, task_id: str, request: Any = None, **meta: Any) -> dict[str, Any]:
        return self.store_result(task_id, meta, states.STARTED, request=request)

    def mark_as_done(self, task_id: str, result: Any, request: Any = None) -> dict[str, Any]:
        return self.store_result(task_id, result, states.SUCCESS, request=request)

    def mark_as_failure(
        self, task_id: str, exc: BaseException, traceback: str | None = None, request: Any = None
    ) -> dict[str, Any]:
        return self.store_result(task_id, exc, states.FAILURE, traceback, request)

    def mark_as_retry(
        self, task_id: str, exc: BaseException, traceback: str | None = None, request: Any = None
    ) -> dict[str, Any]:
        return self.store_result(task_id, exc, states.RETRY, traceback, request)

    def mark_as_revoked(self, task_id: str, reason: str = "revoked", request: Any = None) -> dict[str, Any]:
        from ..exceptions import TaskRevokedError

        return self.store_result(task_id, TaskRevokedError(reason), states.REVOKED, request=request)

    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        """The stored meta, or a PENDING one when nothing is stored."""
        data = self._retrying(self._get, TASK_KEYPREFIX + task_id,
                              error=BackendGetMetaError, task_id=task_id)
        return pending_meta(task_id) if data is None else self.decode(data)

    def get_many_metas(self, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        keys = [TASK_KEYPREFIX + tid for tid in task_ids]
        values = self._retrying(self._mget, keys, error=BackendGetMetaError)
        return [pending_meta(task_id) if data is None else self.decode(data)
                for task_id, data in zip(task_ids, values, strict=True)]

    def forget(self, task_id: str) -> None:
        self._retrying(self._delete, TASK_KEYPREFIX + task_id)

    def wait_for(
        self, task_id: str, timeout: float | None = None, interval: float = 0.5
    ) -> dict[str, Any]:
        """Wait until the task is ready; return its meta. Polls; fast stores override this."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = min(0.005, interval)
        while True:
            meta = self.get_task_meta(task_id)
            if meta["status"] in states.READY_STATES:
                return meta
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"The operation timed out waiting for task {task_id}.")
            pause = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
            delay = min(delay * 2, interval)

    # -- groups ------------------------------------------------------------------------

    def save_group(self, group_id: str, result: Any) -> None:
        """Store a GroupResult's tuple form (celery-wire.md 3.5)."""
        value = self.encode({"result": result})
        self._retrying(self._set, GROUP_KEYPREFIX + group_id, value, self.expires)

    def get_group(self, group_id: str) -> Any:
        data = self._retrying(self._get, GROUP_KEYPREFIX + group_id)
        return None if data is None else self.decode(data).get("result")

    def delete_group(self, group_id: str) -> None:
        self._retrying(self._delete, GROUP_KEYPREFIX + group_id)

    # -- chords ------------------------------------------------------------------------

    def chord_init(self, group_id: str, size: int) -> None:
        """Start counting a chord: `size` header parts will report to `group_id`.

        Called by the client before any header task is published (a new run of a chord
        with the same group id starts from zero).
        """
        raise NotImplementedError(
            f"{type(self).__name__} cannot count chord parts: chords need a result backend "
            "such as sqlite://, redis:// or memory://"
        )

    def chord_part_done(
        self, group_id: str, task_id: str, group_index: int | None, state: str, result: Any
    ) -> list[tuple[str, str, Any]] | None:
        """Record one header part's outcome, atomically; a part delivered twice counts once.

        Returns:
            None, except for exactly one caller, the one whose part completes the chord: the
            parts as ``(task_id, state, result)`` in group-index order (exceptions as
            Celery's ``{exc_type, exc_message, exc_module}`` dicts). That caller sends the
            body (or fails it).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot count chord parts")
