"""Run one task: decode, set up the request, call, classify the outcome, store, follow links.

Runs wherever the pool runs a task (the worker's thread, a thread, or a child process);
returns an `Outcome` that the consumer turns into an ack, a reject and a log line.
"""

from __future__ import annotations

import logging
import os
import time
import traceback as traceback_module
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import _state, signals, states
from ..exceptions import (
    ContentDisallowed,
    DecodeError,
    Ignore,
    MaxRetriesExceededError,
    Reject,
    Retry,
)
from ..protocol import TaskMessage, decode_body
from ..task import Context

if TYPE_CHECKING:
    from ..app import Celery

logger = logging.getLogger("celeriac.worker")

ACK, REQUEUE, REJECT = "ack", "requeue", "reject"


@dataclass(slots=True)
class Job:
    """What a pool needs to run one task: plain data, so it can cross a process boundary."""

    tag: int
    message: TaskMessage
    delivery_info: dict[str, Any]
    accept: frozenset[str] | None
    acks_late: bool = False
    time_limit: tuple[float | None, float | None] = (None, None)

    @property
    def task_name(self) -> str:
        return str(self.message.headers["task"])

    @property
    def task_id(self) -> str:
        return str(self.message.headers["id"])


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


def build_request(job: Job, args: Any, kwargs: Any, embed: dict[str, Any], hostname: str) -> Context:
    headers = job.message.headers
    properties = job.message.envelope.properties
    return Context(
        id=headers["id"], task=headers["task"], args=args, kwargs=kwargs,
        retries=headers.get("retries") or 0, eta=headers.get("eta"), expires=headers.get("expires"),
        group=headers.get("group"), group_index=headers.get("group_index"),
        root_id=headers.get("root_id"), parent_id=headers.get("parent_id"),
        timelimit=headers.get("timelimit"), origin=headers.get("origin"),
        ignore_result=bool(headers.get("ignore_result")), shadow=headers.get("shadow"),
        stamps=headers.get("stamps"), headers=headers, properties=properties,
        correlation_id=properties.get("correlation_id"), reply_to=properties.get("reply_to"),
        delivery_info=job.delivery_info, hostname=hostname, is_eager=False, called_directly=False,
        callbacks=embed.get("callbacks"), errbacks=embed.get("errbacks"),
        chain=embed.get("chain"), chord=embed.get("chord"),
    )


def _call_with_autoretry(task: Any, args: Any, kwargs: Any) -> Any:
    try:
        return task.run(*args, **kwargs)
    except Exception as exc:
        if (task.autoretry_for and isinstance(exc, task.autoretry_for)
                and not (task.dont_autoretry_for and isinstance(exc, task.dont_autoretry_for))
                and not isinstance(exc, Retry | Ignore | Reject)):
            options = dict(task.retry_kwargs)
            countdown = task._autoretry_delay(task.request.retries)
            if countdown is not None:
                options["countdown"] = countdown
            raise task.retry(exc=exc, **options) from exc
        raise


def _send_links(app: Celery, request: Context, retval: Any) -> None:
    """After success: callbacks, the next step of a chain, the chord part (see chords.py)."""
    from ..chords import send_links

    send_links(app, request, retval)


def _send_errbacks(app: Celery, task: Any, request: Context, exc: BaseException, tb: str | None) -> None:
    """After failure: the chord part, the rest of the chain, errbacks (see chords.py)."""
    from ..chords import send_errbacks

    send_errbacks(app, request, exc, tb)


def execute_job(app: Celery, job: Job, hostname: str) -> Outcome:
    """Run the job's task to completion and say how it ended. Never raises."""
    started = time.monotonic()
    task = app.tasks[job.task_name]
    try:
        args, kwargs, embed = decode_body(job.message, job.accept)
    except (ContentDisallowed, DecodeError) as exc:
        return Outcome(job.tag, states.REJECTED, REJECT, summary=f"{type(exc).__name__}: {exc}")
    request = build_request(job, args, kwargs, embed, hostname)
    backend = app.backend
    store_errors = not request.ignore_result and not task.ignore_result or task.store_errors_even_if_ignored
    task.push_request(request)
    _state.push_current_task(task)
    einfo = None
    retval: Any = None
    try:
        if signals.task_prerun.receivers:
            signals.task_prerun.send(sender=task, task_id=request.id, task=task, args=args, kwargs=kwargs)
        try:
            task.before_start(request.id, args, kwargs)
            if task.track_started and not task.ignore_result:
                backend.mark_as_started(request.id, request=request, pid=os.getpid(), hostname=hostname)
            retval = _call_with_autoretry(task, args, kwargs)
        except Retry as exc:
            state = states.RETRY
            einfo = traceback_module.format_exc()
            reason = exc.exc if exc.exc is not None else exc
            if store_errors:
                backend.mark_as_retry(request.id, reason, einfo, request=request)
            task.on_retry(reason, request.id, args, kwargs, einfo)
            if signals.task_retry.receivers:
                signals.task_retry.send(sender=task, request=request, reason=reason, einfo=einfo)
            outcome = Outcome(job.tag, state, ACK, summary=f"Retry in {_when(exc)}: {reason!r}")
        except Ignore:
            outcome = Outcome(job.tag, states.IGNORED, ACK, summary="ignored")
        except Reject as exc:
            outcome = Outcome(job.tag, states.REJECTED, REQUEUE if exc.requeue else REJECT,
                              summary=f"rejected: {exc.reason!r}")
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit) and not isinstance(exc, MaxRetriesExceededError):
                raise
            einfo = traceback_module.format_exc()
            if store_errors:
                backend.mark_as_failure(request.id, exc, einfo, request=request)
            task.on_failure(exc, request.id, args, kwargs, einfo)
            if signals.task_failure.receivers:
                signals.task_failure.send(sender=task, task_id=request.id, exception=exc, args=args,
                                          kwargs=kwargs, traceback=exc.__traceback__, einfo=einfo)
            _send_errbacks(app, task, request, exc, einfo)
            action = ACK if (not job.acks_late or task.acks_on_failure_or_timeout) else REJECT
            outcome = Outcome(job.tag, states.FAILURE, action, summary=repr(exc), traceback=einfo)
            retval = exc
        else:
            if not (request.ignore_result or task.ignore_result):
                backend.mark_as_done(request.id, retval, request=request)
            task.on_success(retval, request.id, args, kwargs)
            if signals.task_success.receivers:
                signals.task_success.send(sender=task, result=retval)
            _send_links(app, request, retval)
            outcome = Outcome(job.tag, states.SUCCESS, ACK, summary=_short_repr(retval))
        task.after_return(outcome.state, retval, request.id, args, kwargs, einfo)
        if signals.task_postrun.receivers:
            signals.task_postrun.send(sender=task, task_id=request.id, task=task, args=args,
                                      kwargs=kwargs, retval=retval, state=outcome.state)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a failing handler or backend: report it, do not crash the pool
        logger.exception("Internal error running %s[%s]", job.task_name, job.task_id)
        outcome = Outcome(job.tag, states.FAILURE, REJECT if job.acks_late else ACK,
                          summary=f"internal error: {exc!r}", traceback=traceback_module.format_exc())
    finally:
        _state.pop_current_task()
        task.pop_request()
    outcome.runtime = time.monotonic() - started
    return outcome


def _when(exc: Retry) -> str:
    when = exc.when
    return when.isoformat() if hasattr(when, "isoformat") else f"{when}s"


def _short_repr(value: Any, limit: int = 1024) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
