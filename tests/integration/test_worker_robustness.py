"""Bad input, lost workers and shutdowns, through real worker processes on SQLite."""

from __future__ import annotations

import importlib
import json
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.helpers import Process, start_worker, wait_for, write_module

pytestmark = pytest.mark.slow

TASKS = """
    import os, time
    from celeriac import Celery

    app = Celery('robust', broker='sqlite:///broker.db', backend='sqlite:///results.db')
    app.conf.broker_transport_options = {'visibility_timeout': 3}

    @app.task
    def add(a, b):
        return a + b

    @app.task(acks_late=True)
    def slow_marked(path, seconds):
        with open(path, 'a') as f:
            f.write(f'start {os.getpid()}\\n')
        time.sleep(seconds)
        with open(path, 'a') as f:
            f.write('done\\n')
        return 'finished'

    @app.task
    def sleeper(seconds):
        time.sleep(seconds)
        return seconds
"""


def _insert_raw(db: Path, queue: str, meta: list, body: bytes) -> None:
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO celeriac_messages (queue, priority, visible_at, meta, body) VALUES (?, 0, 0, ?, ?)",
                 (queue, json.dumps(meta), body))
    conn.commit()
    conn.close()


def test_bad_messages_are_logged_rejected_and_others_still_run(project: Path, processes: list[Process]) -> None:
    write_module(project, "tasks.py", TASKS)
    tasks = importlib.import_module("tasks")
    tasks.app.broker.declare([])  # opens the file and creates the tables
    db = project / "broker.db"
    good_before = tasks.add.delay(1, 1)
    # an unknown task name
    unknown = tasks.app.send_task("tasks.does_not_exist", [1])
    # headers with no task and a body that is not JSON
    _insert_raw(db, "celery", [{}, {}, "application/json", "utf-8"], b"\xff\xfe not json")
    # a v2 message whose body is not [args, kwargs, embed]
    _insert_raw(db, "celery", [{"task": "tasks.add", "id": "bad-body", "lang": "py"}, {},
                               "application/json", "utf-8"], b'{"oops": 1}')
    # pickle, which is not in accept_content
    import pickle
    _insert_raw(db, "celery", [{"task": "tasks.add", "id": "pickled", "lang": "py"}, {},
                               "application/x-python-serialize", "binary"],
                pickle.dumps(((1, 2), {}, {})))
    good_after = tasks.add.delay(2, 2)
    worker = start_worker(project, "tasks", "-P", "threads", "-c", "2")
    processes.append(worker)
    assert good_before.get(timeout=20) == 2
    assert good_after.get(timeout=20) == 4
    worker.wait_for_log("unregistered task of type 'tasks.does_not_exist'")
    worker.wait_for_log("Refusing to deserialize untrusted content of type application/x-python-serialize")
    worker.wait_for_log("Rejecting undecodable message")
    worker.wait_for_log("Task tasks.add[bad-body] rejected")
    with pytest.raises(Exception) as info:
        unknown.get(timeout=5)
    assert type(info.value).__name__ == "NotRegistered"
    # nothing is left to be retried forever
    wait_for(lambda: sqlite3.connect(db).execute("SELECT count(*) FROM celeriac_messages").fetchone()[0] == 0,
             message="every message consumed or rejected")
    assert worker.proc.poll() is None


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_sigkilled_worker_acks_late_task_runs_again(project: Path, processes: list[Process], pool: str) -> None:
    write_module(project, "tasks.py", TASKS)
    tasks = importlib.import_module("tasks")
    marks = project / "marks.txt"
    result = tasks.slow_marked.delay(str(marks), 2)
    first = start_worker(project, "tasks", "-P", pool, "-c", "1")
    processes.append(first)
    wait_for(lambda: marks.exists() and "start" in marks.read_text(), 20, message="task started")
    first.kill()  # SIGKILL the whole worker, mid-task
    assert "done" not in marks.read_text()
    second = start_worker(project, "tasks", "-P", pool, "-c", "1")
    processes.append(second)
    assert result.get(timeout=30) == "finished"
    lines = marks.read_text().split()
    assert lines.count("start") == 2 and lines.count("done") == 1


def test_killed_pool_child_with_acks_late_is_redelivered(project: Path, processes: list[Process]) -> None:
    write_module(project, "tasks.py", TASKS)
    tasks = importlib.import_module("tasks")
    marks = project / "marks.txt"
    result = tasks.slow_marked.delay(str(marks), 3)
    worker = start_worker(project, "tasks", "-P", "prefork", "-c", "1")
    processes.append(worker)
    wait_for(lambda: marks.exists() and "start" in marks.read_text(), 20, message="task started")
    child_pid = int(marks.read_text().split()[1])
    import os
    os.kill(child_pid, signal.SIGKILL)
    assert result.get(timeout=30) == "finished"
    assert "WorkerLostError" in worker.log and "requeued" in worker.log
    assert marks.read_text().split().count("start") == 2


def test_warm_shutdown_finishes_running_and_loses_nothing(project: Path, processes: list[Process]) -> None:
    write_module(project, "tasks.py", TASKS)
    tasks = importlib.import_module("tasks")
    running = tasks.sleeper.delay(2)
    queued = [tasks.add.delay(i, i) for i in range(20)]
    worker = start_worker(project, "tasks", "-P", "solo")
    processes.append(worker)
    worker.wait_for_log(f"Task tasks.sleeper[{running.id}] received")
    time.sleep(0.3)
    assert worker.stop(signal.SIGTERM) == 0
    assert running.get(timeout=1) == 2  # finished before exit
    processes.append(start_worker(project, "tasks", "-P", "solo"))
    assert [r.get(timeout=20) for r in queued] == [i + i for i in range(20)]


def test_cold_shutdown_gives_unfinished_back(project: Path, processes: list[Process]) -> None:
    write_module(project, "tasks.py", TASKS)
    tasks = importlib.import_module("tasks")
    marks = project / "marks.txt"
    result = tasks.slow_marked.delay(str(marks), 5)
    worker = start_worker(project, "tasks", "-P", "threads", "-c", "1")
    processes.append(worker)
    wait_for(lambda: marks.exists(), 20, message="task started")
    worker.send_signal(signal.SIGINT)
    time.sleep(0.2)
    worker.send_signal(signal.SIGINT)  # second Ctrl-C: stop at once
    worker.proc.wait(10)
    assert "Cold shutdown" in worker.log
    processes.append(start_worker(project, "tasks", "-P", "threads", "-c", "1"))
    assert result.get(timeout=30) == "finished"
