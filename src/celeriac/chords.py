"""What a worker does with a finished task's workflow: links, errbacks and chord joins.

- success: callbacks get the result prepended; the next step of a chain (the last element of
  ``embed.chain``) is sent with the result and the rest of the list (celery-wire.md 1.6);
- failure: errbacks run with Celery's conventions, the rest of the chain is marked failed so
  nothing waits for it forever;
- chord parts (``embed.chord`` set): the backend counts the part atomically
  (`Backend.chord_part_done`); the one caller that completes the chord sends the body with the
  ordered list of results, or, when a part failed, fails the body with a `ChordError` naming
  that part and runs the body's errbacks. No polling ``chord_unlock`` task.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from . import states
from .backends.base import exception_from_dict
from .canvas import Signature, _chain, _chord, group, maybe_signature
from .exceptions import ChordError
from .task import Context

if TYPE_CHECKING:
    from .app import Celery

__all__ = ["call_errbacks", "fail_chain", "on_chord_part_return", "send_errbacks", "send_links"]

logger = logging.getLogger("celeriac.chords")


def send_links(app: Celery, request: Context, retval: Any) -> None:
    """After a success: send the callbacks and the next step of the chain, count a chord part."""
    if not (request.callbacks or request.chain or request.chord):
        return  # most tasks have none: nothing to build (bench/: drain)
    ids: dict[str, Any] = {"parent_id": request.id, "root_id": request.root_id}
    callbacks = [maybe_signature(c, app=app) for c in request.callbacks or ()]
    if len(callbacks) == 1:
        callbacks[0].apply_async((retval,), **ids)  # type: ignore[union-attr]
    elif callbacks:  # several callbacks go out together, as a group (as Celery sends them)
        for sig in callbacks:
            if isinstance(sig, group):
                sig.apply_async((retval,), **ids)
        tasks = [sig for sig in callbacks if not isinstance(sig, group)]
        if tasks:
            group(tasks, app=app).apply_async((retval,), **ids)
    if request.chain:
        rest = list(request.chain)
        following = maybe_signature(rest.pop(), app=app)
        following.apply_async((retval,), chain=rest, **ids)  # type: ignore[union-attr]
    if request.chord:
        on_chord_part_return(app, request, states.SUCCESS, retval)


def send_errbacks(app: Celery, request: Context, exc: BaseException, traceback: str | None) -> None:
    """After a failure: count the chord part, fail the rest of the chain, run the errbacks."""
    if request.chord:
        on_chord_part_return(app, request, states.FAILURE, exc)
    fail_chain(app, request.chain, exc, traceback)
    call_errbacks(app, request, exc, traceback)


def call_errbacks(app: Celery, request: Any, exc: BaseException, traceback: str | None) -> None:
    """Run `request.errbacks` with Celery's conventions (celery-wire.md 1.6).

    An errback whose function takes more than one positional argument (`on_err(request, exc,
    traceback)`) is called here, in this process. Others (`on_err(task_id)`, bound or
    class-based tasks, tasks this worker does not know) are sent as task messages with the
    failed task's id, together as a group.
    """
    sent = []
    for errback in request.errbacks or ():
        sig = maybe_signature(errback, app=app, clone=isinstance(errback, Signature))
        task = app.tasks.get(sig.task)  # type: ignore[union-attr]
        if task is not None and _takes_request(task, sig):
            try:
                sig(request, exc, traceback)  # type: ignore[misc]
            except Exception:
                logger.exception("Errback %r raised an exception", sig)
        else:
            sent.append(sig)
    if sent:
        task_id = request.id
        group(sent, app=app).apply_async((task_id,), parent_id=task_id,
                                         root_id=request.root_id or task_id)


def _takes_request(task: Any, sig: Any) -> bool:
    fun = getattr(task, "__wrapped__", None)
    if fun is None or getattr(task, "_bound_run", False):
        return False
    if not sig.immutable and (sig.args or sig.kwargs):
        try:  # only the arguments not already stored in the signature count
            fun = partial(fun, *sig.args, **sig.kwargs)
            inspect.signature(fun)
        except (TypeError, ValueError):
            fun = task.__wrapped__
    try:
        spec = inspect.getfullargspec(fun)
    except TypeError:
        return False
    return bool(spec.varargs) or len(spec.args) > 1


def fail_chain(app: Celery, chain: Iterable[Any] | None, exc: BaseException,
               traceback: str | None = None) -> None:
    """Mark the steps after a failed one as failed, so their results never wait forever.

    A step that is a part of a chord counts as a failed part; a chord step fails its body.
    """
    pending = deque(chain or ())
    while pending:
        sig = maybe_signature(pending.popleft(), app=app)
        if isinstance(sig, _chord):
            pending.extend(sig._header().tasks)
            pending.append(sig.body)
        elif isinstance(sig, group | _chain):
            pending.extend(sig.tasks)
        elif sig is not None and sig.id:
            _fail_task(app, sig, exc, traceback, errbacks=False)


def _fail_task(app: Celery, sig: Signature, exc: BaseException, traceback: str | None,
               errbacks: bool) -> None:
    """Store `exc` as the result of a task that will not run; report its chord part."""
    opts = sig.options
    request = Context(id=sig.id, task=sig.task, args=sig.args, kwargs=sig.kwargs,
                      group=opts.get("group_id"), group_index=opts.get("group_index"),
                      chord=opts.get("chord"), root_id=opts.get("root_id") or sig.id,
                      parent_id=opts.get("parent_id"), errbacks=opts.get("link_error"),
                      delivery_info={}, called_directly=False)
    app.backend.mark_as_failure(sig.id, exc, traceback, request=request)
    if request.chord:
        on_chord_part_return(app, request, states.FAILURE, exc)
    if errbacks and request.errbacks:
        call_errbacks(app, request, exc, traceback)
    fail_chain(app, opts.get("chain"), exc, traceback)


def fail_signature(app: Celery, sig: Signature, exc: BaseException) -> None:
    """A canvas that will never run (its chord failed): fail its tasks, run their errbacks."""
    if isinstance(sig, group):
        for task in sig.tasks:
            fail_signature(app, maybe_signature(task, app=app), exc)  # type: ignore[arg-type]
    elif isinstance(sig, _chain):
        steps = sig.tasks
        if steps:  # as if the first step failed: its errbacks run, the rest is failed
            first = maybe_signature(steps[0], app=app)
            first.options["chain"] = [*first.options.get("chain", []), *steps[:0:-1]]  # type: ignore[union-attr]
            fail_signature(app, first, exc)  # type: ignore[arg-type]
    elif isinstance(sig, _chord):
        fail_chain(app, sig._header().tasks, exc)
        fail_signature(app, sig.body, exc)
    elif sig.id:
        _fail_task(app, sig, exc, None, errbacks=True)


def on_chord_part_return(app: Celery, request: Any, state: str, value: Any) -> None:
    """Count one chord header part; the caller that completes the chord sends the body.

    Called by the worker after a task whose message had ``embed.chord`` ended (SUCCESS or
    FAILURE; REVOKED too), with the task's request.
    """
    group_id = request.group
    if not group_id or not request.id:
        return
    backend = app.backend
    parts = backend.chord_part_done(group_id, request.id, request.group_index, state, value)
    if parts is None:
        return
    body = maybe_signature(request.chord, app=app)
    try:
        try:
            values = _values(parts)
        except ChordError as exc:
            logger.error("Chord %s failed: %s", group_id, exc)
            fail_signature(app, body, exc)  # type: ignore[arg-type]
            return
        try:
            body.apply_async((values,), parent_id=request.id, root_id=request.root_id)  # type: ignore[union-attr]
        except Exception as exc:
            logger.exception("Chord %s: sending the body failed", group_id)
            error = ChordError(f"Callback error: {exc!r}")
            error.__cause__ = exc
            fail_signature(app, body, error)  # type: ignore[arg-type]
    finally:
        complete = getattr(backend, "chord_complete", None)
        if complete is not None:
            complete(group_id)


def _values(parts: Iterable[Any]) -> list[Any]:
    """The header results in order; a `ChordError` naming the first part that failed."""
    values = []
    for task_id, state, value in parts:
        if state in states.PROPAGATE_STATES:
            exc = value
            if isinstance(value, dict) and "exc_type" in value:
                exc = exception_from_dict(value)
            error = ChordError(f"Dependency {task_id} raised {exc!r}")
            if isinstance(exc, BaseException):
                error.__cause__ = exc
            raise error
        values.append(value)
    return values
