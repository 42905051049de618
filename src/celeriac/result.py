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

    def get(self, timeout: float | None = None, propagate: bool = True, **kwargs: Any) -> R:
        if propagate and self._exception is not None and self.state in states.PROPAGATE_STATES:
            raise self._exception
        return self.result  # type: ignore[no-any-return]

    def forget(self) -> None:
        pass

    def revoke(self, *args: Any, **kwargs: Any) -> None:
        self._cache = {**self._get_meta(), "status": states.REVOKED}


class ResultSet:
    """Several results waited on together."""

    def __init__(self, results: Iterable[AsyncResult[Any]], app: Celery | None = None) -> None:
        self.results = list(results)
        self.app = app or _state.get_current_app()

    def __iter__(self) -> Iterator[AsyncResult[Any]]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> AsyncResult[Any]:
        return self.results[index]

    def add(self, result: AsyncResult[Any]) -> None:
        if result not in self.results:
            self.results.append(result)

    def _metas(self) -> list[dict[str, Any]]:
        backend = self.app.backend
        if not self.results:
            return []
        return list(backend.get_many_metas([r.id for r in self.results]))

    def completed_count(self) -> int:
        return sum(1 for meta in self._metas() if meta["status"] == states.SUCCESS)

    def ready(self) -> bool:
        return all(meta["status"] in states.READY_STATES for meta in self._metas())

    def successful(self) -> bool:
        return all(meta["status"] == states.SUCCESS for meta in self._metas())

    def failed(self) -> bool:
        return any(meta["status"] == states.FAILURE for meta in self._metas())

    def waiting(self) -> bool:
        return not self.ready()

    def revoke(self, terminate: bool = False, signal: Any = None, **kwargs: Any) -> None:
        self.app.control.revoke([r.id for r in self.results], terminate=terminate, signal=signal)

    def forget(self) -> None:
        for result in self.results:
            result.forget()

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
            **kwargs: Any) -> list[Any]:
        """Wait for every result; return their values in order."""
        return self.join(timeout=timeout, propagate=propagate, interval=interval, **kwargs)

    def join(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
             callback: Any = None, **kwargs: Any) -> list[Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for result in self.results:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError("The operation timed out.")
            value = result.get(timeout=remaining, propagate=propagate, interval=interval,
                               disable_sync_subtasks=kwargs.get("disable_sync_subtasks", True))
            if callback is not None:
                callback(result.id, value)
            values.append(value)
        return values

    join_native = join

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(r.id for r in self.results)}]>"


class GroupResult(ResultSet):
    """The results of a group, with its id; `save()`/`restore()` keep it in the backend."""

    def __init__(self, id: str | None = None, results: Iterable[AsyncResult[Any]] | None = None,  # noqa: A002
                 parent: AsyncResult[Any] | None = None, app: Celery | None = None) -> None:
        super().__init__(results or [], app=app)
        self.id = id
        self.parent = parent

    def save(self, backend: Any = None) -> GroupResult:
        (backend or self.app.backend).save_group(self.id, self.as_tuple())
        return self

    def delete(self, backend: Any = None) -> None:
        (backend or self.app.backend).delete_group(self.id)

    def as_tuple(self) -> Any:
        parent = self.parent.as_tuple() if self.parent is not None else None
        return [[self.id, parent], [r.as_tuple() for r in self.results]]

    @classmethod
    def restore(cls, id: str, backend: Any = None, app: Celery | None = None) -> GroupResult | None:  # noqa: A002
        app = app or _state.get_current_app()
        data = (backend or app.backend).get_group(id)
        return None if data is None else result_from_tuple(data, app)  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"


def result_from_tuple(data: Any, app: Celery | None = None) -> Any:
    """Rebuild an AsyncResult or GroupResult from its tuple form `[[id, parent], children]`."""
    app = app or _state.get_current_app()
    (task_id, parent), nodes = data
    parent_result = result_from_tuple(parent, app) if parent else None
    if nodes is not None:
        return GroupResult(task_id, [result_from_tuple(child, app) for child in nodes],
                           parent=parent_result, app=app)
    return AsyncResult(task_id, app=app, parent=parent_result)
