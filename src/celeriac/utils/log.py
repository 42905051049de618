"""`celery.utils.log`'s names users import: ``from celeriac.utils.log import get_task_logger``."""

from __future__ import annotations

import logging

from ..log import get_task_logger, task_logger

__all__ = ["get_logger", "get_task_logger", "task_logger"]


def get_logger(name: str) -> logging.Logger:
    """The logger called `name` (Celery's `get_logger`)."""
    return logging.getLogger(name)
