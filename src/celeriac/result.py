"""Results: AsyncResult, EagerResult, ResultSet, GroupResult. Waiting is the backend's job."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import _state, states
from .exceptions import TimeoutError

if TYPE_CHECKING:
    from .app import Celery

R = TypeVar("R")


def _decode_value(meta: dict[str, Any]) -> Any:
    """The result value of a meta: exceptions are rebuilt for exception states."""
    from .backends.base import exception_from_dict

    value = meta.get("result")
    if meta.get("status") in states.EXCEPTION_STATES and isinstance(value, dict) and "exc_type" in value:
        return exception_from_dict(value)
    return value


class AsyncResult(Generic[R]):
    """A handle on a task's result: its state, return value, exception and traceback."""

    def __init__(self, id: str, backend: Any = None, task_name: str | None = None,  # noqa: A002
                 app: Celery | None = None, parent: AsyncResult[Any] | None = None) -> None:
        self.id = id
        self.app = app or _state.get_current_app()
        self._backend = backend
        self.task_name = task_name
        self.parent = parent
        self._cache: dict[str, Any] | None = None

    @property
    def task_id(self) -> str:
        return self.id

    @property
    def backend(self) -> Any:
        return self._backend if self._backend is not None else self.app.backend

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __str__(self) -> str:
        return self.id

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def _get_meta(self) -> dict[str, Any]:
        if self._cache is not None:
            return self._cache
        meta = self.backend.get_task_meta(self.id)
        if meta.get("status") in states.READY_STATES:
            self._cache = meta
        return meta

    @property
    def state(self) -> str:
        """PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED, or a custom state."""
        return str(self._get_meta()["status"])

    status = state

    @property
    def result(self) -> Any:
        """The return value, or the exception for failed tasks, or a custom state's meta."""
        return _decode_value(self._get_meta())

    info = result

    @property
    def traceback(self) -> str | None:
        return self._get_meta().get("traceback")

    @property
    def date_done(self) -> datetime | None:
        value = self._get_meta().get("date_done")
        if isinstance(value, str):
            return datetime.fromisoformat(value)
        return value

    @property
    def children(self) -> list[AsyncResult[Any]]:
        return [result_from_tuple(child, self.app) for child in self._get_meta().get("children") or []]

    @property
    def name(self) -> str | None:
        return self._get_meta().get("name", self.task_name)

    @property
    def args(self) -> Any:
        return self._get_meta().get("args")

    @property
    def kwargs(self) -> Any:
        return self._get_meta().get("kwargs")

    @property
    def worker(self) -> Any:
        return self._get_meta().get("worker")

    @property
    def queue(self) -> Any:
        return self._get_meta().get("queue")

    @property
    def retries(self) -> Any:
        return self._get_meta().get("retries")

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
            no_ack: bool = True, follow_parents: bool = True, disable_sync_subtasks: bool = True,
            callback: Any = None, on_message: Any = None, on_interval: Any = None) -> R:
        """Wait for the task and return its result; re-raise its exception if it failed."""
        if disable_sync_subtasks and _state.get_current_task() is not None:
            request = _state.get_current_task().request
            if not request.called_directly and not request.is_eager:
                raise RuntimeError(
                    "Never call result.get() within a task: it can deadlock the worker. "
                    "Pass disable_sync_subtasks=False to do it anyway."
                )
        if follow_parents and self.parent is not None and propagate:
            self.parent._raise_if_failed_ready()
        meta = self._cache or self.backend.wait_for(self.id, timeout=timeout, interval=interval)
        self._cache = meta
        value = _decode_value(meta)
        if callback is not None:
            callback(self.id, value)
        if propagate and meta["status"] in states.PROPAGATE_STATES and isinstance(value, BaseException):
            raise value
        return value  # type: ignore[no-any-return]

    wait = get

    def _raise_if_failed_ready(self) -> None:
        meta = self._get_meta()
        if meta["status"] in states.PROPAGATE_STATES:
            value = _decode_value(meta)
            if isinstance(value, BaseException):
                raise value

    def forget(self) -> None:
        """Remove the stored result."""
        self._cache = None
        self.backend.forget(self.id)

    def revoke(self, connection: Any = None, terminate: bool = False, signal: Any = None,
               wait: bool = False, timeout: float | None = None) -> None:
        """Ask every worker not to run this task (and to stop it with terminate=True)."""
        self.app.control.revoke(self.id, terminate=terminate, signal=signal)

    def collect(self, intermediate: bool = False, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
        """Yield (result, value) for this result and its children, depth first."""
        value = self.get(**kwargs)
        yield self, value
        for child in self.children:
            yield from child.collect(intermediate=intermediate, **kwargs)

    def as_tuple(self) -> Any:
        parent = self.parent.as_tuple() if self.parent is not None else None
        return [[self.id, parent], None]

    def then(self, callback: Any, on_error: Any = None) -> None:
        raise NotImplementedError("promises are not supported; use link= on apply_async")


class EagerResult(AsyncResult[R]):
    """The result of `apply()`: already known, never touches a backend."""

    def __init__(self, id: str, ret_value: Any, state: str, traceback: str | None = None,  # noqa: A002
                 app: Celery | None = None, name: str | None = None) -> None:
        super().__init__(id, app=app, task_name=name)
        from .backends.base import exception_to_dict

        result = exception_to_dict(ret_value) if isinstance(ret_value, BaseException) else ret_value
        self._exception = ret_value if isinstance(ret_value, BaseException) else None
        self._cache = {"status": state, "result": result, "traceback": traceback,
                       "children": [], "date_done": None, "task_id": id}

    def _get_meta(self) -> dict[str, Any]:
        assert self._cache is not None
        return self._cache

    @property
    def result(self) -> Any:
        return self._exception if self._exception is not None else self._get_meta()["result"]

    info = result

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
            no_ack: bool = True, follow_parents: bool = True, disable_sync_subtasks: bool = True,
            callback: Any = None, on_message: Any = None, on_interval: Any = None, **kwargs: Any) -> R:
        """The value the task returned here (nothing to wait for); its exception re-raised."""
        if propagate and self._exception is not None and self.state in states.PROPAGATE_STATES:
            raise self._exception
        return self.result  # type: ignore[no-any-return]

    def forget(self) -> None:
        pass

    def revoke(self, *args: Any, **kwargs: Any) -> None:
        self._cache = {**self._get_meta(), "status": states.REVOKED}


class PendingResults:
    """The results of a group's members, made when first asked for (`ResultSet.results`).

    Sending a group of 10,000 made an AsyncResult per member that is often never looked at
    (~0.5 us each, and objects for the cyclic GC to walk: bench client.py enqueue --bulk).

    Attributes:
        app: The app of the plain members' results.
        entries: Per member, a plain member's task id, or the result object of another.
        names: Per member, a plain member's task name (None for the others).
    """

    __slots__ = ("app", "entries", "names")

    def __init__(self, app: Celery, entries: list[Any], names: list[str | None]) -> None:
        self.app = app
        self.entries = entries
        self.names = names

    def __len__(self) -> int:
        return len(self.entries)

    def build(self) -> list[Any]:
        """The results, in order."""
        app = self.app
        return [AsyncResult(entry, app=app, task_name=name) if type(entry) is str else entry
                for entry, name in zip(self.entries, self.names, strict=True)]


class ResultSet:
    """Several results waited on together: `get()`/`join()` return their values in order."""

    #: The app of `app.GroupResult` (see `GroupResult.bound_to`); else the current app.
    _bound_app: Celery | None = None
    _results: list[Any] | PendingResults

    def __init__(self, results: Iterable[Any] | PendingResults, app: Celery | None = None, **kwargs: Any) -> None:
        self.results = results  # type: ignore[assignment]
        self.app = app or type(self)._bound_app or _state.get_current_app()

    @property
    def results(self) -> list[Any]:
        """The results, in order (made on first use from `PendingResults`)."""
        results = self._results
        if isinstance(results, PendingResults):
            results = self._results = results.build()
        return results

    @results.setter
    def results(self, results: Iterable[Any] | PendingResults) -> None:
        self._results = results if isinstance(results, PendingResults) else list(results)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self._results)

    def __getitem__(self, index: int) -> Any:
        return self.results[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultSet):
            return other.results == self.results
        return NotImplemented

    def add(self, result: Any) -> None:
        """Add a result, unless it is in the set already."""
        if result not in self.results:
            self.results.append(result)

    def remove(self, result: Any) -> None:
        """Remove a result (an AsyncResult or a task id); KeyError when it is not there."""
        if isinstance(result, str):
            result = AsyncResult(result, app=self.app)
        try:
            self.results.remove(result)
        except ValueError:
            raise KeyError(result) from None

    def discard(self, result: Any) -> None:
        """Remove a result if it is in the set."""
        try:
            self.remove(result)
        except KeyError:
            pass

    def update(self, results: Iterable[Any]) -> None:
        self.results.extend(r for r in results if r not in self.results)

    def clear(self) -> None:
        self.results[:] = []

    @property
    def backend(self) -> Any:
        return self.app.backend

    @property
    def supports_native_join(self) -> bool:
        return bool(getattr(self.backend, "supports_native_join", False))

    def _fetch(self) -> dict[str, dict[str, Any]]:
        """The metas of the plain results, read in bulk; ready ones are cached on the result."""
        metas: dict[str, dict[str, Any]] = {}
        missing: dict[str, list[AsyncResult[Any]]] = {}
        for result in self.results:
            if isinstance(result, ResultSet):
                continue
            if result._cache is not None:
                metas[result.id] = result._get_meta()
            else:
                missing.setdefault(result.id, []).append(result)
        ids = list(missing)
        for start in range(0, len(ids), _BATCH):  # SQLite limits the parameters of one query
            for meta in self.backend.get_many_metas(ids[start:start + _BATCH]):
                task_id = meta.get("task_id")
                if task_id not in missing:
                    continue
                metas[task_id] = meta
                if meta["status"] in states.READY_STATES:
                    for result in missing[task_id]:
                        result._cache = meta
        return metas

    def _all(self, check: Any, nested: str) -> Iterator[bool]:
        metas = self._fetch()
        for result in self.results:
            if isinstance(result, ResultSet):
                yield getattr(result, nested)()
            else:
                yield check(metas.get(result.id, {}).get("status", states.PENDING))

    def successful(self) -> bool:
        """True when every task succeeded."""
        return all(self._all(lambda s: s == states.SUCCESS, "successful"))

    def failed(self) -> bool:
        """True when any task failed."""
        return any(self._all(lambda s: s == states.FAILURE, "failed"))

    def ready(self) -> bool:
        """True when every task has finished (succeeded, failed or was revoked)."""
        return all(self._all(lambda s: s in states.READY_STATES, "ready"))

    def waiting(self) -> bool:
        """True when any task has not finished yet."""
        return not self.ready()

    def completed_count(self) -> int:
        """How many tasks succeeded."""
        return sum(self._all(lambda s: s == states.SUCCESS, "successful"))

    def maybe_throw(self, callback: Any = None, propagate: bool = True) -> None:
        """Raise the exception of the first finished task that failed (in order)."""
        for result in self.results:
            if result.ready():
                value = result.get(propagate=propagate, disable_sync_subtasks=False)
                if callback is not None:
                    callback(result.id, value)

    maybe_reraise = maybe_throw

    def _raise_if_failed_ready(self) -> None:
        # `AsyncResult.get()` checks its parents first: a chord body's parent is its header.
        for result in self.results:
            result._raise_if_failed_ready()

    def forget(self) -> None:
        for result in self.results:
            result.forget()

    def revoke(self, connection: Any = None, terminate: bool = False, signal: Any = None,
               wait: bool = False, timeout: float | None = None) -> None:
        """Ask every worker not to run these tasks (and to stop them with terminate=True)."""
        self.app.control.revoke([r.id for r in self.results], terminate=terminate, signal=signal)

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
            callback: Any = None, no_ack: bool = True, on_message: Any = None,
            disable_sync_subtasks: bool = True, on_interval: Any = None) -> list[Any]:
        """Wait for every result; return their values in order (see `join`)."""
        return self.join(timeout=timeout, propagate=propagate, interval=interval,
                         callback=callback, disable_sync_subtasks=disable_sync_subtasks)

    def join(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
             callback: Any = None, no_ack: bool = True, on_message: Any = None,
             disable_sync_subtasks: bool = True, on_interval: Any = None) -> list[Any]:
        """Wait for every result and return their values in order.

        The states are read in bulk (one query per 500 results) each round, so joining
        10,000 results costs a few queries, not 10,000 waits. With `propagate`, the first
        failed result (in order) raises its exception as soon as it and all before it are
        ready.

        Raises:
            TimeoutError: not all ready after `timeout` seconds.
        """
        if disable_sync_subtasks:
            _check_not_in_task()
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = min(0.005, interval)
        while True:
            metas = self._fetch()
            values: list[Any] = []
            for result in self.results:
                if isinstance(result, ResultSet):
                    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                    values.append(result.join(timeout=remaining, propagate=propagate,
                                              interval=interval, disable_sync_subtasks=False))
                    continue
                meta = metas.get(result.id)
                if meta is None or meta["status"] not in states.READY_STATES:
                    break
                values.append(result.get(propagate=propagate, follow_parents=False,
                                         disable_sync_subtasks=False))
            else:
                if callback is not None:
                    for result, value in zip(self.results, values, strict=True):
                        callback(result.id, value)
                return values
            if on_interval is not None:
                on_interval()
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("The operation timed out.")
            pause = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
            delay = min(delay * 2, interval)

    join_native = join

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(r.id for r in self.results)}]>"


class GroupResult(ResultSet):
    """The results of a group, with its id; `save()`/`restore()` keep it in the backend."""

    def __init__(self, id: str | None = None, results: Iterable[Any] | PendingResults | None = None,  # noqa: A002
                 parent: AsyncResult[Any] | None = None, app: Celery | None = None,
                 **kwargs: Any) -> None:
        super().__init__(results if results is not None else [], app=app)
        self.id = id
        self.parent = parent

    @classmethod
    def bound_to(cls, app: Celery) -> type[GroupResult]:
        """This class bound to `app`, for `app.GroupResult` (so `app.GroupResult.restore(id)`)."""
        return type("GroupResult", (cls,), {"_bound_app": app, "__module__": cls.__module__})

    @property
    def children(self) -> list[Any]:
        return self.results

    def save(self, backend: Any = None) -> GroupResult:
        """Store the group (its id and its results' ids) so `restore(id)` finds it."""
        (backend or self.app.backend).save_group(self.id, self.as_tuple())
        return self

    def delete(self, backend: Any = None) -> None:
        """Remove the saved group."""
        (backend or self.app.backend).delete_group(self.id)

    def as_tuple(self) -> Any:
        parent = self.parent.as_tuple() if self.parent is not None else None
        return [[self.id, parent], [r.as_tuple() for r in self.results]]

    @classmethod
    def restore(cls, id: str, backend: Any = None, app: Celery | None = None) -> GroupResult | None:  # noqa: A002
        """The saved group of this id, or None."""
        app = app or cls._bound_app or _state.get_current_app()
        data = (backend or app.backend).get_group(id)
        return None if data is None else result_from_tuple(data, app)  # type: ignore[no-any-return]

    def __bool__(self) -> bool:
        return bool(self.id or len(self))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return other.id == self.id and other.results == self.results
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __str__(self) -> str:
        return str(self.id)

    def __reduce__(self) -> Any:
        return (GroupResult, (self.id, self.results, self.parent))

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"


_BATCH = 500


def _check_not_in_task() -> None:
    task = _state.get_current_task()
    if task is not None:
        request = task.request
        if not request.called_directly and not request.is_eager:
            raise RuntimeError(
                "Never call result.get() within a task: it can deadlock the worker. "
                "Pass disable_sync_subtasks=False to do it anyway."
            )


def result_from_tuple(data: Any, app: Celery | None = None) -> Any:
    """Rebuild an AsyncResult or GroupResult from its tuple form `[[id, parent], children]`."""
    app = app or _state.get_current_app()
    (task_id, parent), nodes = data
    parent_result = result_from_tuple(parent, app) if parent else None
    if nodes is not None:
        return GroupResult(task_id, [result_from_tuple(child, app) for child in nodes],
                           parent=parent_result, app=app)
    return AsyncResult(task_id, app=app, parent=parent_result)
