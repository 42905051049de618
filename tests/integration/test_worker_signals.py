"""Signals sent by a real prefork worker, where Celery sends them and with Celery's
arguments (celery/app/trace.py, celery/worker/*, celery/apps/worker.py)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from celeriac import signals
from celeriac.exceptions import TaskRevokedError
from tests.helpers import wait_for
from tests.integration.test_worker_helpers import MARK, Project, project_fixture

pytestmark = pytest.mark.slow

TASKS = MARK + """
import logging, sys
from celeriac import Celery, signals

app = Celery('sigs', broker=BROKER, backend=BACKEND)

NAMES = ['task_prerun', 'task_postrun', 'task_success', 'task_failure', 'task_retry', 'task_revoked',
         'task_received', 'task_unknown', 'task_rejected', 'before_task_publish', 'after_task_publish',
         'worker_init', 'worker_ready', 'worker_shutdown', 'worker_shutting_down',
         'worker_process_init', 'worker_process_shutdown', 'celeryd_init', 'celeryd_after_setup']

def _sender(sender):
    return getattr(sender, 'name', None) or type(sender).__name__ if not isinstance(sender, str) else sender

def recorder(name):
    def handler(sender=None, **kwargs):
        kwargs.pop('signal', None)
        mark(_file='signals', name=name, sender=_sender(sender), keys=sorted(kwargs),
             task_id=kwargs.get('task_id') or getattr(kwargs.get('request'), 'id', None),
             expired=kwargs.get('expired'))
    return handler

for name in NAMES:
    getattr(signals, name).connect(recorder(name), weak=False)

@signals.setup_logging.connect
def own_logging(loglevel=None, logfile=None, format=None, colorize=None, sender=None, signal=None, **kwargs):
    mark(_file='signals', name='setup_logging', keys=sorted(['loglevel', 'logfile', 'format', 'colorize', *kwargs]))
    logging.basicConfig(level=loglevel, stream=sys.__stderr__, format=format)

@app.task
def ok(x):
    return x

@app.task
def broken():
    raise ValueError('broken')

@app.task(bind=True)
def retried(self):
    if not self.request.retries:
        raise self.retry(countdown=0)
    return 'retried'
"""

EXPECTED = {
    "task_prerun": ["args", "kwargs", "task", "task_id"],
    "task_postrun": ["args", "kwargs", "retval", "state", "task", "task_id"],
    "task_success": ["result", "runtime"],
    "task_failure": ["args", "einfo", "exception", "kwargs", "task_id", "traceback"],
    "task_retry": ["einfo", "reason", "request"],
    "task_revoked": ["expired", "request", "signum", "terminated"],
    "task_received": ["request"],
    "task_unknown": ["exc", "id", "message", "name"],
    "before_task_publish": ["body", "declare", "exchange", "headers", "properties", "retry_policy",
                            "routing_key"],
    "after_task_publish": ["body", "exchange", "headers", "routing_key"],
    "worker_init": [], "worker_ready": [], "worker_shutdown": [], "worker_process_init": [],
    "worker_shutting_down": ["exitcode", "how", "sig"],
    "worker_process_shutdown": ["exitcode", "pid"],
    "celeryd_init": ["conf", "instance", "options"],
    "celeryd_after_setup": ["conf", "instance"],
    "setup_logging": ["colorize", "format", "logfile", "loglevel"],
}


@pytest.fixture(scope="module")
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Project:
    return project_fixture(request, tmp_path_factory, "wksignals", TASKS)


def test_worker_sends_celerys_signals_with_celerys_arguments(project: Project) -> None:
    tasks = project.module
    expired = tasks.ok.apply_async((0,), expires=0.1)
    time.sleep(0.2)
    worker = project.worker("-P", "prefork", "-c", "1", "-n", "sig@%h")
    assert tasks.ok.delay(1).get(timeout=20) == 1
    with pytest.raises(ValueError):
        tasks.broken.delay().get(timeout=20)
    assert tasks.retried.delay().get(timeout=20) == "retried"
    project.app.send_task("wksignals_sqlite.unknown")
    worker.wait_for_log("unregistered task")
    with pytest.raises(TaskRevokedError):
        expired.get(timeout=20)
    assert worker.stop(signal.SIGTERM) == 0
    wait_for(lambda: any(m["name"] == "worker_process_shutdown" for m in project.marks("signals")), 10)

    seen: dict[str, list[dict[str, Any]]] = {}
    for entry in project.marks("signals"):
        seen.setdefault(entry["name"], []).append(entry)
    for name, keys in EXPECTED.items():
        assert name in seen, f"{name} was not sent"
        assert seen[name][0]["keys"] == keys, (name, seen[name][0]["keys"])
    # senders as in Celery
    assert {e["sender"] for e in seen["task_prerun"]} >= {tasks.ok.name, tasks.broken.name}
    assert seen["celeryd_init"][0]["sender"].startswith("sig@")
    assert seen["worker_process_init"][0]["sender"].startswith("sig@")
    assert seen["worker_ready"][0]["sender"] == "Consumer"
    assert seen["task_received"][0]["sender"] == "Consumer"
    assert any(e["expired"] for e in seen["task_revoked"])
    # the retry is published from the worker (the test process records its own sends too)
    assert any(e["sender"] == tasks.retried.name and e["pid"] != os.getpid()
               for e in seen["before_task_publish"])
    assert seen["worker_shutting_down"][0]["sender"].startswith("sig@")


def test_client_publish_signals(project: Project) -> None:
    got: list[tuple[str, Any, list[str]]] = []

    def before(sender: Any = None, **kwargs: Any) -> None:
        got.append(("before", sender, sorted(k for k in kwargs if k != "signal")))

    def after(sender: Any = None, **kwargs: Any) -> None:
        got.append(("after", sender, sorted(k for k in kwargs if k != "signal")))

    signals.before_task_publish.connect(before)
    signals.after_task_publish.connect(after)
    try:
        project.module.ok.delay(5)
    finally:
        signals.before_task_publish.disconnect(before)
        signals.after_task_publish.disconnect(after)
    name = project.module.ok.name
    assert got == [("before", name, EXPECTED["before_task_publish"]),
                   ("after", name, EXPECTED["after_task_publish"])]
