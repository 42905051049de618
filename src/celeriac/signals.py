"""Signals with Celery's names and arguments.

`@task_success.connect` or `task_success.connect(handler, sender=...)`; handlers get
`sender=` and the keyword arguments Celery documents for each signal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("celeriac.signals")


class Signal:
    """A named hook that calls its receivers in order of connection."""

    def __init__(self, name: str, providing_args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.providing_args = providing_args
        self.receivers: list[tuple[Callable[..., Any], Any]] = []

    def connect(self, receiver: Callable[..., Any] | None = None, *, sender: Any = None,
                weak: bool = False, dispatch_uid: Any = None) -> Any:
        """Connect a receiver; usable as `@sig.connect` or `@sig.connect(sender=...)`."""
        if receiver is None:
            def decorator(fun: Callable[..., Any]) -> Callable[..., Any]:
                self.connect(fun, sender=sender)
                return fun
            return decorator
        if not any(r is receiver and s is sender for r, s in self.receivers):
            self.receivers.append((receiver, sender))
        return receiver

    def disconnect(self, receiver: Callable[..., Any], sender: Any = None) -> None:
        self.receivers = [(r, s) for r, s in self.receivers if not (r is receiver and s is sender)]

    def send(self, sender: Any = None, **named: Any) -> list[tuple[Callable[..., Any], Any]]:
        """Call each receiver; an exception in one is logged and does not stop the others."""
        responses = []
        for receiver, wanted in list(self.receivers):
            if wanted is not None and wanted is not sender and wanted != getattr(sender, "name", sender):
                continue
            try:
                responses.append((receiver, receiver(signal=self, sender=sender, **named)))
            except Exception as exc:
                logger.exception("Signal handler %r raised: %r", receiver, exc)
                responses.append((receiver, exc))
        return responses

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"


before_task_publish = Signal("before_task_publish")
after_task_publish = Signal("after_task_publish")
task_received = Signal("task_received")
task_prerun = Signal("task_prerun")
task_postrun = Signal("task_postrun")
task_success = Signal("task_success")
task_retry = Signal("task_retry")
task_failure = Signal("task_failure")
task_revoked = Signal("task_revoked")
task_rejected = Signal("task_rejected")
task_unknown = Signal("task_unknown")
task_internal_error = Signal("task_internal_error")
celeryd_init = Signal("celeryd_init")
celeryd_after_setup = Signal("celeryd_after_setup")
worker_init = Signal("worker_init")
worker_ready = Signal("worker_ready")
worker_shutdown = Signal("worker_shutdown")
worker_shutting_down = Signal("worker_shutting_down")
worker_process_init = Signal("worker_process_init")
worker_process_shutdown = Signal("worker_process_shutdown")
setup_logging = Signal("setup_logging")
after_setup_logger = Signal("after_setup_logger")
after_setup_task_logger = Signal("after_setup_task_logger")
beat_init = Signal("beat_init")
beat_embedded_init = Signal("beat_embedded_init")
import_modules = Signal("import_modules")
