"""Tasks: `Task`, its request context, and calling (direct, delay/apply_async, apply, retry)."""

from __future__ import annotations

import logging
import random
import sys
import traceback as traceback_module
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from . import _state, states
from .canvas import Signature
from .exceptions import Ignore, MaxRetriesExceededError, Reject, Retry
from .log import get_task_logger
from .producer import send_task_message
from .result import AsyncResult, EagerResult

if TYPE_CHECKING:
    from .app import Celery

P = ParamSpec("P")
R = TypeVar("R")

#: The states an eager run stores with `task_store_eager_result` (what a worker would store).
_STORED_EAGER_STATES = frozenset({states.SUCCESS, states.FAILURE, states.RETRY})


class Context:
    """`self.request` inside a running task: what the message said about this call."""

    id: str | None = None
    task: str | None = None
    args: Any = None
    kwargs: Any = None
    retries: int = 0
    is_eager: bool = False
    eta: str | None = None
    expires: str | None = None
    group: str | None = None
    group_index: int | None = None
    chord: Any = None
    chain: Any = None
    callbacks: Any = None
    errbacks: Any = None
    root_id: str | None = None
    parent_id: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    delivery_info: dict[str, Any] | None = None
    hostname: str | None = None
    origin: str | None = None
    timelimit: Any = None
    ignore_result: bool = False
    headers: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    shadow: str | None = None
    stamps: Any = None
    children: list[Any] | None = None
    called_directly: bool = True

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    @classmethod
    def of(cls, fields: dict[str, Any]) -> Context:
        """A context that keeps `fields` as its own attributes, without a copy (the worker
        builds one per task)."""
        request = cls.__new__(cls)
        request.__dict__ = fields
        return request

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"<Context: {self.__dict__!r}>"


class Task(Generic[P, R]):
    """A task type. `@app.task` makes a subclass per function; options are class attributes."""

    name: str = ""
    typing: bool = True
    max_retries: int | None = 3
    default_retry_delay: float = 180
    rate_limit: str | None = None
    ignore_result: bool | None = None
    store_errors_even_if_ignored: bool | None = None
    track_started: bool | None = None
    acks_late: bool | None = None
    acks_on_failure_or_timeout: bool | None = None
    reject_on_worker_lost: bool | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    serializer: str | None = None
    expires: Any = None
    queue: str | None = None
    priority: int | None = None
    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: dict[str, Any] = {}
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600
    retry_jitter: bool = True
    abstract: bool = False
    _bound_run: bool = False
    _app: Celery | None = None

    def __init__(self) -> None:
        self._local = _state.ContextLocal()

    # -- binding -----------------------------------------------------------------------

    def bind(self, app: Celery) -> None:
        """Attach to an app and take the app's defaults for options left unset."""
        self._app = app
        conf = app.conf
        for attr, setting in (
            ("ignore_result", "task_ignore_result"),
            ("store_errors_even_if_ignored", "task_store_errors_even_if_ignored"),
            ("track_started", "task_track_started"),
            ("acks_late", "task_acks_late"),
            ("acks_on_failure_or_timeout", "task_acks_on_failure_or_timeout"),
            ("reject_on_worker_lost", "task_reject_on_worker_lost"),
            ("serializer", "task_serializer"),
            ("time_limit", "task_time_limit"),
            ("soft_time_limit", "task_soft_time_limit"),
        ):
            if getattr(self, attr) is None:
                setattr(self, attr, conf.get(setting))
        if self.rate_limit is None:
            self.rate_limit = conf.get("task_default_rate_limit")

    @property
    def app(self) -> Celery:
        return self._app if self._app is not None else _state.get_current_app()

    @property
    def backend(self) -> Any:
        return self.app.backend

    @property
    def logger(self) -> logging.Logger:
        """This task's logger (`get_task_logger(name)`): lines with the running task's id."""
        return get_task_logger(self.name)

    # -- the request context ---------------------------------------------------------------

    @property
    def request(self) -> Context:
        stack = self._local.get("stack")
        return stack[-1] if stack else Context()

    def push_request(self, request: Context) -> None:
        stack = self._local.get("stack")
        if stack is None:
            stack = self._local.stack = []
        stack.append(request)

    def pop_request(self) -> None:
        self._local.get("stack").pop()

    # -- calling -----------------------------------------------------------------------

    def run(self, *args: P.args, **kwargs: P.kwargs) -> R:
        raise NotImplementedError("Tasks must define the run method.")

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the task here and now, in this process; no broker is involved."""
        pushed = False
        if not self._local.get("stack"):
            self.push_request(Context(args=args, kwargs=kwargs, called_directly=True))
            pushed = True
        _state.push_current_task(self)
        try:
            if self._bound_run:
                return self.run(*args, **kwargs)  # type: ignore[no-any-return]
            return self.run(*args, **kwargs)
        finally:
            _state.pop_current_task()
            if pushed:
                self.pop_request()

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Send the task to a worker: `apply_async(args, kwargs)`."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        task_id: str | None = None,
        link: Any = None,
        link_error: Any = None,
        shadow: str | None = None,
        **options: Any,
    ) -> AsyncResult[R]:
        """Send the task with options: countdown, eta, expires, queue, priority, ..."""
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, task_id=task_id, link=link, link_error=link_error,  # type: ignore[return-value]
                              **options)
        if task_id is not None:
            options["task_id"] = task_id
        if link is not None:
            options["link"] = link
        if link_error is not None:
            options["link_error"] = link_error
        if shadow is not None:
            options["shadow"] = shadow
        return send_task_message(self.app, self.name, args, kwargs, options, task=self)

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        task_id: str | None = None,
        link: Any = None,
        link_error: Any = None,
        throw: bool | None = None,
        retries: int = 0,
        **options: Any,
    ) -> EagerResult[R]:
        """Run the task in this process and return an EagerResult.

        Arguments still round-trip through the task's serializer, so a task that works
        eagerly also works on a worker.
        """
        from .serialization import dumps, loads

        serializer = options.get("serializer") or self.serializer or "json"
        data, content_type, encoding = dumps([list(args or ()), dict(kwargs or {})], serializer)
        args, kwargs = loads(data, content_type, encoding, None)
        task_id = task_id or str(uuid.uuid4())
        request = Context(id=task_id, task=self.name, args=args, kwargs=kwargs, retries=retries,
                          is_eager=True, root_id=task_id, called_directly=False,
                          delivery_info={"is_eager": True}, hostname="localhost",
                          ignore_result=options.get("ignore_result", False))
        if throw is None:
            throw = bool(self.app.conf.task_eager_propagates)
        self.push_request(request)
        _state.push_current_task(self)
        retval: Any
        try:
            try:
                retval = self.run(*args, **kwargs)
                state, tb = states.SUCCESS, None
            except Retry as exc:
                if exc.sig is not None and isinstance(exc.sig, EagerResult):
                    return exc.sig
                state, retval, tb = states.RETRY, exc, traceback_module.format_exc()
            except Ignore:
                state, retval, tb = states.IGNORED, None, None
            except Reject as exc:
                state, retval, tb = states.REJECTED, exc, None
            except Exception as exc:
                if throw:
                    raise
                state, retval, tb = states.FAILURE, exc, traceback_module.format_exc()
        finally:
            _state.pop_current_task()
            self.pop_request()
        if state == states.SUCCESS:
            data, content_type, encoding = dumps(retval, self.app.conf.result_serializer or "json")
            retval = loads(data, content_type, encoding, None)
        ignored = options.get("ignore_result", self.ignore_result)
        if self.app.conf.task_store_eager_result and not ignored and state in _STORED_EAGER_STATES:
            self.backend.store_result(task_id, retval, state, tb, request)  # Celery's, for eager runs
        return EagerResult(task_id, retval, state, traceback=tb, app=self.app, name=self.name)

    def retry(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """Send this task again with `retries + 1` and raise `Retry`.

        Raises `exc` (or MaxRetriesExceededError) once `max_retries` is reached.
        """
        request = self.request
        if request.called_directly:
            raise RuntimeError("Task.retry() can only be called from inside a task run by a worker")
        retries = request.retries + 1
        max_retries = self.max_retries if max_retries is None else max_retries
        if max_retries is not None and retries > max_retries:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args} kwargs:{request.kwargs}"
            )
        if eta is None and countdown is None:
            countdown = self.default_retry_delay
        when = eta if eta is not None else datetime.now(UTC) + timedelta(seconds=countdown or 0)
        new_args = request.args if args is None else args
        new_kwargs = request.kwargs if kwargs is None else kwargs
        if request.is_eager:
            result = self.apply(new_args, new_kwargs, task_id=request.id, retries=retries,
                                throw=True)
            raise Retry(exc=exc, when=when, is_eager=True, sig=result)
        delivery_info = request.delivery_info or {}
        opts: dict[str, Any] = {
            "task_id": request.id,
            "retries": retries,
            "eta": when,
            "root_id": request.root_id,
            "parent_id": request.id,
            "group_id": request.group,
            "group_index": request.group_index,
            "chord": request.chord,
            "chain": request.chain,
            "link": request.callbacks,
            "link_error": request.errbacks,
            "origin": request.origin,
            "reply_to": request.reply_to,
            "add_to_parent": False,  # the same task again, not a child of itself
            "queue": delivery_info.get("routing_key") if not delivery_info.get("exchange") else None,
            "exchange": delivery_info.get("exchange") or None,
            "routing_key": delivery_info.get("routing_key"),
            "priority": delivery_info.get("priority"),
            "time_limit": (request.timelimit or (None, None))[0],
            "soft_time_limit": (request.timelimit or (None, None))[1],
        }
        opts.update(options)
        from .producer import send_task_message

        error = Retry(exc=exc, when=when)
        # RETRY is stored before the message goes out: the retried run may succeed before
        # this one returns, and its SUCCESS must be the last word.
        if not (request.ignore_result or self.ignore_result) or self.store_errors_even_if_ignored:
            tb = traceback_module.format_exc() if sys.exc_info()[0] is not None else None
            self.backend.mark_as_retry(request.id, exc if exc is not None else error, tb, request=request)
            error.stored = True
        send_task_message(self.app, self.name, new_args, new_kwargs,
                          {k: v for k, v in opts.items() if v is not None}, task=self)
        if throw:
            raise error
        return error

    def _autoretry_delay(self, retries: int) -> float | None:
        """Seconds to wait before an automatic retry (`retry_backoff`), or None for the default."""
        if not self.retry_backoff:
            return self.retry_kwargs.get("countdown")
        factor = 1 if self.retry_backoff is True else float(self.retry_backoff)
        delay = min(factor * (2 ** retries), self.retry_backoff_max)
        if self.retry_jitter:
            delay = random.randrange(int(delay) + 1)
        return float(delay)

    # -- states ------------------------------------------------------------------------

    def update_state(self, task_id: str | None = None, state: str | None = None,
                     meta: Any = None, **kwargs: Any) -> None:
        """Store a (custom) state for this task while it runs: e.g. 'PROGRESS' with meta."""
        task_id = task_id or self.request.id
        if task_id is None:
            raise ValueError("update_state() needs a task_id outside a running task")
        self.backend.store_result(task_id, meta, state or states.PENDING, request=self.request)

    def AsyncResult(self, task_id: str, **kwargs: Any) -> AsyncResult[R]:  # noqa: N802 - Celery's name
        return AsyncResult(task_id, app=self.app, task_name=self.name, **kwargs)

    # -- signatures --------------------------------------------------------------------

    def signature(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
                  *starargs: Any, **options: Any) -> Signature:
        return Signature.of_task(self.name, tuple(args or ()), dict(kwargs or {}), options, self.app)

    subtask = signature

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature with partial arguments: the parent's result is prepended in a chain."""
        return Signature.of_task(self.name, args, kwargs, {}, self.app)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: it ignores the parent's result."""
        sig = self.signature(args, kwargs)
        sig["immutable"] = True
        return sig

    def chunks(self, it: Any, n: int) -> Any:
        from .canvas import chunks

        return chunks(self.s(), it, n)

    def map(self, it: Any) -> Any:
        from .canvas import xmap

        return xmap(self.s(), it)

    def starmap(self, it: Any) -> Any:
        from .canvas import xstarmap

        return xstarmap(self.s(), it)

    # -- handlers a subclass may override ------------------------------------------------

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        """Called in the worker before the task runs."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """Called in the worker when the task succeeded."""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Called in the worker when the task failed."""

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Called in the worker when the task is to be retried."""

    def after_return(self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any,
                     einfo: Any) -> None:
        """Called in the worker after the task returned, whatever the outcome."""

    def __repr__(self) -> str:
        return f"<@task: {self.name} of {self.app.main or '__main__'}>"

    def __reduce__(self) -> Any:
        # Tasks travel (to pool processes, in pickled args) by name.
        return (_task_by_name, (self.name,))


def _task_by_name(name: str) -> Task:
    return _state.get_current_app().tasks[name]


def shared_task(*args: Any, **options: Any) -> Any:
    """Define a task that every app gets (for reusable apps): `@shared_task` or with options."""

    def create(fun: Any) -> Task:
        def factory(app: Celery) -> None:
            app._task_from_fun(fun, **options)

        _state.shared_task_factories.append(factory)
        for app in _state.all_apps():
            factory(app)
        app = _state.get_current_app()
        name = options.get("name") or app.gen_task_name(fun.__name__, fun.__module__)
        return app.tasks[name] if name in app.tasks else app._task_from_fun(fun, **options)

    if len(args) == 1 and callable(args[0]) and not options:
        return create(args[0])
    return create


def current_exc_info() -> Any:
    return sys.exc_info()
