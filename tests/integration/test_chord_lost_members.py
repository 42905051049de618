"""A chord whose member is revoked, or killed by its hard time limit, fails with ChordError
instead of waiting forever (real prefork worker on SQLite)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tests.helpers import Process, start_worker, write_module

pytestmark = pytest.mark.slow

TASKS = """
    import time
    from celeriac import Celery

    app = Celery('chords', broker='sqlite:///b.db', backend='sqlite:///r.db')

    @app.task
    def add(a, b):
        return a + b

    @app.task
    def sleeper(seconds):
        time.sleep(seconds)
        return seconds

    @app.task
    def tsum(values):
        return sum(values)
"""


def test_revoked_member_fails_the_chord(project: Path, processes: list[Process]) -> None:
    write_module(project, "tasks.py", TASKS)
    tasks = importlib.import_module("tasks")
    from celeriac import chord
    from celeriac.exceptions import ChordError

    tasks.app.control.revoke("member-2")  # kept in the broker: the worker starts later
    result = chord([tasks.add.s(1, 1), tasks.add.s(2, 2).set(task_id="member-2")], tasks.tsum.s())()
    processes.append(start_worker(project, "tasks", "-P", "prefork", "-c", "2"))
    with pytest.raises(ChordError, match="member-2"):
        result.get(timeout=30, follow_parents=False)  # the body itself, not its parents


def test_member_past_its_hard_time_limit_fails_the_chord(project: Path, processes: list[Process]) -> None:
    write_module(project, "tasks.py", TASKS)
    tasks = importlib.import_module("tasks")
    from celeriac import chord
    from celeriac.exceptions import ChordError

    slow = tasks.sleeper.s(30).set(time_limit=1, task_id="too-slow")
    result = chord([tasks.add.s(1, 1), slow], tasks.tsum.s())()
    processes.append(start_worker(project, "tasks", "-P", "prefork", "-c", "2"))
    with pytest.raises(ChordError, match="too-slow"):
        result.get(timeout=30, follow_parents=False)  # the body itself, not its parents
    assert tasks.app.AsyncResult("too-slow").state == "FAILURE"
