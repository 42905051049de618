"""Logging for the worker and beat: Celery's line format, and print() captured into the log."""

from __future__ import annotations

import io
import logging
import sys
import threading

from . import signals
from .exceptions import ImproperlyConfigured

FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"


def setup_logging(loglevel: str | int = "WARNING", logfile: str | None = None,
                  redirect_stdouts: bool = True, redirect_level: str | int = "WARNING") -> None:
    """Configure the root logger, unless a `setup_logging` signal handler does it; with
    `redirect_stdouts`, what is written to stdout and stderr goes to the log at
    `redirect_level` (Celery's `worker_redirect_stdouts` and `..._level`)."""
    level = logging.getLevelName(loglevel.upper()) if isinstance(loglevel, str) else loglevel
    if signals.setup_logging.receivers:
        signals.setup_logging.send(sender=None, loglevel=level, logfile=logfile, format=FORMAT,
                                   colorize=False)
    else:
        handler: logging.Handler = (logging.FileHandler(logfile) if logfile
                                    else logging.StreamHandler(sys.__stderr__))
        handler.setFormatter(logging.Formatter(FORMAT))
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(level)
        signals.after_setup_logger.send(sender=None, logger=root, loglevel=level, logfile=logfile,
                                        format=FORMAT, colorize=False)
    if redirect_stdouts:
        number = logging.getLevelName(redirect_level.upper()) if isinstance(redirect_level, str) else redirect_level
        if not isinstance(number, int):
            raise ImproperlyConfigured(f"worker_redirect_stdouts_level: not a log level: {redirect_level!r}")
        proxy = LoggingProxy(logging.getLogger("celeriac.redirected"), number)
        sys.stdout = sys.stderr = proxy  # type: ignore[assignment]


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
