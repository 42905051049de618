"""Run one task: decode, set up the request, call, classify the outcome, store, follow links.

Runs wherever the pool runs a task (the worker's thread, a thread, a child process, or the
asyncio pool's event loop); returns an `Outcome` that the consumer turns into an ack, a
reject and a log line. `execute_job` runs a task to completion (an `async def` task on an
event loop of its own); `execute_job_async` awaits it on the caller's loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
import traceback as traceback_module
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import _state, signals, states
from ..chords import send_errbacks, send_links
from ..exceptions import (
    ContentDisallowed,
    DecodeError,
    Ignore,
    Reject,
    Retry,
)
from ..protocol import TaskMessage, decode_body
from ..task import Context
from .timelimits import time_limits

if TYPE_CHECKING:
    from ..app import Celery

logger = logging.getLogger("celeriac.worker")

ACK, REQUEUE, REJECT = "ack", "requeue", "reject"

#: States after which Celery calls no `after_return` (celery/app/trace.py).
IGNORE_STATES = frozenset({states.IGNORED, states.RETRY, states.REJECTED})


@dataclass(slots=True)
class Job:
    """What a pool needs to run one task: plain data, so it can cross a process boundary."""

    tag: int
    message: TaskMessage
    delivery_info: dict[str, Any]
    accept: frozenset[str] | None
    acks_late: bool = False
    time_limit: tuple[float | None, float | None] = (None, None)
    #: When it went to the pool (epoch seconds), and the process running it.
    time_start: float | None = None
    worker_pid: int | None = None

    @property
    def task_name(self) -> str:
        return str(self.message.headers["task"])

    @property
    def task_id(self) -> str:
        return str(self.message.headers["id"])

    # Celery's Request names, for `task_received` handlers.
    id = task_id
    name = task_name

    @property
    def eta(self) -> Any:
        return self.message.headers.get("eta")

    @property
    def expires(self) -> Any:
        return self.message.headers.get("expires")


@dataclass(slots=True)
class Outcome:
    """How a job ended, for the consumer: what to do with the message and what to log."""

    tag: int
    state: str
    action: str = ACK
    runtime: float = 0.0
    summary: str = ""
    traceback: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ExceptionInfo:
    """The `einfo` Celery hands to `on_failure`, `on_retry` and signals.

    Attributes:
        exception: The exception.
        type: Its class.
        tb: Its traceback object.
        traceback: The formatted traceback (also `str(einfo)`).
    """

    def __init__(self, exc: BaseException) -> None:
        self.exception = exc
        self.type = type(exc)
        self.tb = exc.__traceback__
        self.traceback = "".join(traceback_module.format_exception(exc))

    @property
    def exc_info(self) -> tuple[type[BaseException], BaseException, Any]:
        return self.type, self.exception, self.tb

    def __str__(self) -> str:
        return self.traceback

    def __repr__(self) -> str:
        return f"<ExceptionInfo: {self.exception!r}>"


def build_request(job: Job, args: Any, kwargs: Any, embed: dict[str, Any], hostname: str) -> Context:
    headers = job.message.headers
    properties = job.message.envelope.properties
    get = headers.get
    return Context.of({
        "id": headers["id"], "task": headers["task"], "args": args, "kwargs": kwargs,
        "retries": get("retries") or 0, "eta": get("eta"), "expires": get("expires"),
        "group": get("group"), "group_index": get("group_index"),
        "root_id": get("root_id"), "parent_id": get("parent_id"),
        "timelimit": get("timelimit"), "origin": get("origin"),
        "ignore_result": bool(get("ignore_result")), "shadow": get("shadow"),
        "stamps": get("stamps"), "headers": headers, "properties": properties,
        "correlation_id": properties.get("correlation_id"), "reply_to": properties.get("reply_to"),
        "delivery_info": job.delivery_info, "hostname": hostname, "is_eager": False,
        "called_directly": False, "callbacks": embed.get("callbacks"),
        "errbacks": embed.get("errbacks"), "chain": embed.get("chain"), "chord": embed.get("chord"),
        "children": [],
    })


def _autoretry(task: Any, exc: Exception) -> None:
    """Turn an exception listed in `autoretry_for` into `task.retry(...)` (which raises)."""
    if (task.autoretry_for and isinstance(exc, task.autoretry_for)
            and not (task.dont_autoretry_for and isinstance(exc, task.dont_autoretry_for))
            and not isinstance(exc, Retry | Ignore | Reject)):
        options = dict(task.retry_kwargs)
        countdown = task._autoretry_delay(task.request.retries)
        if countdown is not None:
            options["countdown"] = countdown
        raise task.retry(exc=exc, **options) from exc


def _call_with_autoretry(task: Any, args: Any, kwargs: Any) -> Any:
    try:
        retval = task.run(*args, **kwargs)
        if inspect.isawaitable(retval):  # an `async def` task outside the asyncio pool
            retval = asyncio.run(_awaited(retval))
        return retval
    except Exception as exc:
        _autoretry(task, exc)
        raise


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


async def _call_with_autoretry_async(task: Any, args: Any, kwargs: Any) -> Any:
    try:
        retval = task.run(*args, **kwargs)
        if inspect.isawaitable(retval):
            retval = await retval
        return retval
    except Exception as exc:
        _autoretry(task, exc)
        raise


class TaskRun:
    """One task's run, in steps shared by the sync and async paths: `start`, then
    `succeeded` or `raised`, then `close`."""

    def __init__(self, app: Celery, job: Job, hostname: str, args: Any, kwargs: Any,
                 embed: dict[str, Any]) -> None:
        self.app = app
        self.job = job
        self.hostname = hostname
        self.task = app.tasks[job.task_name]
        self.task_id = job.task_id
        self.args = args
        self.kwargs = kwargs
        self.request = build_request(job, args, kwargs, embed, hostname)
        task, request = self.task, self.request
        self.store_errors = (not request.ignore_result and not task.ignore_result
                             or bool(task.store_errors_even_if_ignored))
        self.started = time.monotonic()
        self.pushed = False

    def start(self) -> None:
        """Set `self.request`, send task_prerun, call before_start, store STARTED."""
        task, request = self.task, self.request
        task.push_request(request)
        _state.push_current_task(task)
        self.pushed = True
        if signals.task_prerun.receivers:
            signals.task_prerun.send(sender=task, task_id=self.task_id, task=task, args=self.args,
                                     kwargs=self.kwargs)
        task.before_start(self.task_id, self.args, self.kwargs)
        if task.track_started and not (request.ignore_result or task.ignore_result):
            self.app.backend.mark_as_started(self.task_id, request=request, pid=os.getpid(),
                                             hostname=self.hostname)

    def succeeded(self, retval: Any) -> Outcome:
        task, request, backend = self.task, self.request, self.app.backend
        # Links first, as Celery: what they send is recorded in this task's `children`.
        send_links(self.app, request, retval)
        if not (request.ignore_result or task.ignore_result):
            backend.mark_as_done(self.task_id, retval, request=request)
        task.on_success(retval, self.task_id, self.args, self.kwargs)
        if signals.task_success.receivers:
            signals.task_success.send(sender=task, result=retval, runtime=time.monotonic() - self.started)
        return self._after(Outcome(self.job.tag, states.SUCCESS, ACK, summary=_short_repr(retval)), retval)

    def raised(self, exc: BaseException) -> Outcome:
        """Classify an exception from the task: retry, ignore, reject or failure."""
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise exc
        task, request, job = self.task, self.request, self.job
        if isinstance(exc, Retry):
            einfo = ExceptionInfo(exc)
            reason = exc.exc if exc.exc is not None else exc
            if self.store_errors:
                if not getattr(exc, "stored", False):  # Task.retry() stores it before sending
                    self.app.backend.mark_as_retry(self.task_id, reason, einfo.traceback, request=request)
            task.on_retry(reason, self.task_id, self.args, self.kwargs, einfo)
            if signals.task_retry.receivers:
                signals.task_retry.send(sender=task, request=request, reason=exc, einfo=einfo)
            return self._after(Outcome(job.tag, states.RETRY, ACK, summary=f"Retry in {_when(exc)}: {reason!r}"), exc)
        if isinstance(exc, Ignore):
            return self._after(Outcome(job.tag, states.IGNORED, ACK, summary="ignored"), exc)
        if isinstance(exc, Reject):
            return self._after(Outcome(job.tag, states.REJECTED, REQUEUE if exc.requeue else REJECT,
                                       summary=f"rejected: {exc.reason!r}"), exc)
        einfo = ExceptionInfo(exc)
        if self.store_errors:
            self.app.backend.mark_as_failure(self.task_id, exc, einfo.traceback, request=request)
        task.on_failure(exc, self.task_id, self.args, self.kwargs, einfo)
        if signals.task_failure.receivers:
            signals.task_failure.send(sender=task, task_id=self.task_id, exception=exc, args=self.args,
                                      kwargs=self.kwargs, traceback=exc.__traceback__, einfo=einfo)
        send_errbacks(self.app, request, exc, einfo.traceback)
        action = ACK if (not job.acks_late or task.acks_on_failure_or_timeout) else REJECT
        return self._after(Outcome(job.tag, states.FAILURE, action, summary=repr(exc),
                                   traceback=einfo.traceback), exc, einfo)

    def _after(self, outcome: Outcome, retval: Any, einfo: ExceptionInfo | None = None) -> Outcome:
        task = self.task
        if outcome.state not in IGNORE_STATES:
            task.after_return(outcome.state, retval, self.task_id, self.args, self.kwargs, einfo)
        if signals.task_postrun.receivers:
            signals.task_postrun.send(sender=task, task_id=self.task_id, task=task, args=self.args,
                                      kwargs=self.kwargs, retval=retval, state=outcome.state)
        return outcome

    def internal_error(self, exc: BaseException) -> Outcome:
        """A failing handler or backend: report it, do not crash the pool."""
        job = self.job
        logger.error("Internal error running %s[%s]: %r", job.task_name, job.task_id, exc, exc_info=exc)
        if signals.task_internal_error.receivers:
            signals.task_internal_error.send(sender=self.task, task_id=job.task_id, args=self.args,
                                             kwargs=self.kwargs, request=self.request, exception=exc,
                                             traceback=exc.__traceback__, einfo=ExceptionInfo(exc))
        return Outcome(job.tag, states.FAILURE, REJECT if job.acks_late else ACK,
                       summary=f"internal error: {exc!r}",
                       traceback="".join(traceback_module.format_exception(exc)))

    def close(self, outcome: Outcome) -> Outcome:
        if self.pushed:
            _state.pop_current_task()
            self.task.pop_request()
        outcome.runtime = time.monotonic() - self.started
        return outcome


def _prepare(app: Celery, job: Job, hostname: str) -> TaskRun | Outcome:
    try:
        args, kwargs, embed = decode_body(job.message, job.accept)
    except (ContentDisallowed, DecodeError) as exc:
        return Outcome(job.tag, states.REJECTED, REJECT, summary=f"{type(exc).__name__}: {exc}")
    return TaskRun(app, job, hostname, args, kwargs, embed)


def execute_job(app: Celery, job: Job, hostname: str) -> Outcome:
    """Run the job's task to completion and say how it ended. Never raises."""
    run = _prepare(app, job, hostname)
    if isinstance(run, Outcome):
        return run
    try:
        run.start()
        try:
            hard, soft = job.time_limit
            if hard or soft:
                with time_limits(soft, hard):
                    retval = _call_with_autoretry(run.task, run.args, run.kwargs)
            else:
                retval = _call_with_autoretry(run.task, run.args, run.kwargs)
        except BaseException as exc:
            outcome = run.raised(exc)
        else:
            outcome = run.succeeded(retval)
    except (KeyboardInterrupt, SystemExit):
        run.close(Outcome(job.tag, states.FAILURE))
        raise
    except BaseException as exc:
        outcome = run.internal_error(exc)
    return run.close(outcome)


async def execute_job_async(app: Celery, job: Job, hostname: str) -> Outcome:
    """`execute_job` for the asyncio pool: an `async def` task is awaited on this loop.

    Cancelling the caller (revoke with terminate, a time limit) cancels the task; the pool
    turns that into its outcome.
    """
    run = _prepare(app, job, hostname)
    if isinstance(run, Outcome):
        return run
    try:
        run.start()
        try:
            retval = await _call_with_autoretry_async(run.task, run.args, run.kwargs)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            outcome = run.raised(exc)
        else:
            outcome = run.succeeded(retval)
    except (KeyboardInterrupt, SystemExit, asyncio.CancelledError):
        run.close(Outcome(job.tag, states.FAILURE))
        raise
    except BaseException as exc:
        outcome = run.internal_error(exc)
    return run.close(outcome)


def _when(exc: Retry) -> str:
    when = exc.when
    return when.isoformat() if hasattr(when, "isoformat") else f"{when}s"


def _short_repr(value: Any, limit: int = 1024) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
