"""Logging for the worker and beat: Celery's line format, and print() captured into the log."""

from __future__ import annotations

import io
import logging
import sys
from typing import Any

from . import signals

FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"


def setup_logging(loglevel: str | int = "WARNING", logfile: str | None = None,
                  redirect_stdouts: bool = True) -> None:
    """Configure the root logger, unless a `setup_logging` signal handler does it."""
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
        sys.stdout = LoggingProxy(logging.getLogger("celeriac.redirected"), logging.WARNING)  # type: ignore[assignment]


class LoggingProxy(io.TextIOBase):
    """A file whose lines go to a logger: `print()` inside a task shows in the worker log."""

    def __init__(self, logger: logging.Logger, level: int) -> None:
        self.logger = logger
        self.level = level
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            if line.strip():
                self.logger.log(self.level, line.rstrip())
        return len(text)

    def flush(self) -> None:
        if self._buffer.strip():
            self.logger.log(self.level, self._buffer.rstrip())
        self._buffer = ""

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> Any:
        return "utf-8"
