"""Exceptions with Celery's names, so `except celery.exceptions.X` ports by renaming the import."""

from __future__ import annotations

from typing import Any


class CeleriacError(Exception):
    """Base of every error raised by celeriac itself."""


class ImproperlyConfigured(CeleriacError):
    """A setting is missing or has a value celeriac cannot use."""


class NotRegistered(CeleriacError, KeyError):
    """The task name is not in the app's registry."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class QueueNotFound(CeleriacError, KeyError):
    """A task was routed to a queue that is not defined and may not be created."""


class ContentDisallowed(CeleriacError):
    """A message's content type is not in `accept_content`."""


class DecodeError(CeleriacError):
    """A message body could not be decoded."""


class OperationalError(CeleriacError):
    """The broker or backend could not be reached."""


class BackendError(OperationalError):
    """A result backend operation failed (after its retries, when the error was retryable).

    An `OperationalError`, as the backends' errors were before these existed, so code that
    catches that still catches these.
    """


class BackendGetMetaError(BackendError):
    """Reading a task's state from the result backend failed."""

    def __init__(self, *args: Any, task_id: str = "") -> None:
        super().__init__(*args)
        self.task_id = task_id


class BackendStoreError(BackendError):
    """Storing a task's state in the result backend failed."""

    def __init__(self, *args: Any, task_id: str = "", state: str = "") -> None:
        super().__init__(*args)
        self.task_id = task_id
        self.state = state


class TimeoutError(CeleriacError):  # noqa: A001 - Celery's name
    """`AsyncResult.get()` waited longer than its timeout."""


class TaskError(CeleriacError):
    """Base of errors that describe a task's outcome."""


class Retry(TaskError):
    """Raised by `Task.retry()`: the task will run again."""

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | None = None,
        when: Any = None,
        is_eager: bool = False,
        sig: Any = None,
    ) -> None:
        self.message = message
        self.exc = exc
        self.when = when
        self.is_eager = is_eager
        self.sig = sig
        self.stored = False  # whether Task.retry() already stored the RETRY state
        super().__init__(message or (f"Retry in {when}" if when is not None else "Retry"))

    def __reduce__(self) -> Any:
        return type(self), (self.message, self.exc, self.when)


RetryTaskError = Retry


class MaxRetriesExceededError(TaskError):
    """The task asked to retry more often than `max_retries` allows."""


class TaskRevokedError(TaskError):
    """The task was revoked (or had expired) and did not run."""


class Ignore(TaskError):
    """Raised by a task to make the worker store nothing and ack the message."""


class Reject(TaskError):
    """Raised by a task to reject its message, optionally requeueing it."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)


class SoftTimeLimitExceeded(TaskError):
    """Raised inside a task when its soft time limit passes."""


class TimeLimitExceeded(TaskError):
    """The task ran past its hard time limit and its process was replaced."""


class WorkerLostError(TaskError):
    """The process running the task died."""


class ChordError(TaskError):
    """A member of a chord failed, so the chord's body cannot run."""


class SecurityError(CeleriacError):
    """A result names something that is not an exception class."""
