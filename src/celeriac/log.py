"""Logging for the worker and beat: Celery's line formats, task loggers, and print() captured
into the log."""

from __future__ import annotations

import io
import logging
import sys
import threading

from . import signals
from ._state import get_current_task
from .exceptions import ImproperlyConfigured

FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
TASK_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s"

#: The parent of every `get_task_logger` logger; its lines carry the running task's name and id.
task_logger = logging.getLogger("celeriac.task")


def get_task_logger(name: str) -> logging.Logger:
    """A logger for a tasks module (Celery's `celery.utils.log.get_task_logger`): its records
    go through `task_logger`, formatted with `worker_task_log_format`."""
    if name in ("celeriac", "celeriac.task", ""):
        raise RuntimeError(f"Logger name {name!r} is reserved!")
    logger = logging.getLogger(name)
    logger.parent = task_logger
    return logger


class TaskFormatter(logging.Formatter):
    """Fills ``%(task_name)s`` and ``%(task_id)s`` from the task running in this thread
    (``???`` outside a task), as Celery's TaskFormatter."""

    def format(self, record: logging.LogRecord) -> str:
        task = get_current_task()
        request = task.request if task is not None else None
        if request is not None and request.id:
            record.__dict__.update(task_id=request.id, task_name=task.name)
        else:
            record.__dict__.setdefault("task_name", "???")
            record.__dict__.setdefault("task_id", "???")
        return super().format(record)


def setup_logging(loglevel: str | int = "WARNING", logfile: str | None = None,
                  redirect_stdouts: bool = True, redirect_level: str | int = "WARNING", *,
                  format: str = FORMAT, task_format: str = TASK_FORMAT, datefmt: str | None = None,
                  hijack_root_logger: bool = True) -> None:
    """Configure logging as Celery's worker does, unless a `setup_logging` signal handler
    does it (then nothing else here happens, stdouts included):

    - the root logger gets one handler (stderr or `logfile`) with `format`; with
      `hijack_root_logger` False (``worker_hijack_root_logger``) handlers the application
      installed stay, and ours is added only to a root logger that has none;
    - `task_logger` gets its own handler with `task_format` (``worker_task_log_format``);
    - with `redirect_stdouts`, what is written to stdout and stderr goes to the log at
      `redirect_level` (``worker_redirect_stdouts``, ``..._level``).
    """
    level = _level_number(loglevel)
    if signals.setup_logging.receivers:
        signals.setup_logging.send(sender=None, loglevel=level, logfile=logfile, format=format,
                                   colorize=False)
        return
    root = logging.getLogger()
    if hijack_root_logger:
        root.handlers[:] = []
    if not root.handlers:
        root.addHandler(_handler(logfile, logging.Formatter(format, datefmt)))
    root.setLevel(level)
    signals.after_setup_logger.send(sender=None, logger=root, loglevel=level, logfile=logfile,
                                    format=format, colorize=False)
    task_logger.handlers[:] = [_handler(logfile, TaskFormatter(task_format, datefmt))]
    task_logger.setLevel(level)
    task_logger.propagate = False
    signals.after_setup_task_logger.send(sender=None, logger=task_logger, loglevel=level,
                                         logfile=logfile, format=task_format, colorize=False)
    if redirect_stdouts:
        number = _level_number(redirect_level)
        if not isinstance(number, int):
            raise ImproperlyConfigured(f"worker_redirect_stdouts_level: not a log level: {redirect_level!r}")
        proxy = LoggingProxy(logging.getLogger("celeriac.redirected"), number)
        sys.stdout = sys.stderr = proxy  # type: ignore[assignment]


def _level_number(level: str | int) -> int | str:
    """A level's number from its name ("info") or number; an unknown name stays a string."""
    return logging.getLevelName(level.upper()) if isinstance(level, str) else level


def _handler(logfile: str | None, formatter: logging.Formatter) -> logging.Handler:
    handler: logging.Handler = logging.FileHandler(logfile) if logfile else logging.StreamHandler(sys.__stderr__)
    handler.setFormatter(formatter)
    return handler


class LoggingProxy(io.TextIOBase):
    """A file whose lines go to a logger: `print()` inside a task shows in the worker log.

    A write made while this thread is already logging through the proxy (a handler that
    writes to the redirected stderr) goes to the real stderr instead of looping.
    """

    def __init__(self, logger: logging.Logger, level: int) -> None:
        self.logger = logger
        self.level = level
        self._buffer = ""
        self._inside = threading.local()

    def write(self, text: str) -> int:
        if getattr(self._inside, "value", False):
            return sys.__stderr__.write(text) if sys.__stderr__ is not None else len(text)
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            self._log(line)
        return len(text)

    def flush(self) -> None:
        line, self._buffer = self._buffer, ""
        self._log(line)

    def _log(self, line: str) -> None:
        if not line.strip():
            return
        self._inside.value = True
        try:
            self.logger.log(self.level, line.rstrip())
        finally:
            self._inside.value = False

    def isatty(self) -> bool:
        return False

    encoding = "utf-8"
