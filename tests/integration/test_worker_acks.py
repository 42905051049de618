"""acks_late, task_acks_on_failure_or_timeout, task_reject_on_worker_lost and Reject, through
a real prefork worker on SQLite and Redis: what runs again and what does not."""

from __future__ import annotations

import os
import signal
import time

import pytest

from celeriac.exceptions import TimeLimitExceeded, WorkerLostError
from tests.helpers import wait_for
from tests.integration.test_worker_helpers import MARK, Project, project_fixture

pytestmark = pytest.mark.slow

TASKS = MARK + """
from celeriac import Celery
from celeriac.exceptions import Reject

app = Celery('acks', broker=BROKER, backend=BACKEND)
app.conf.broker_transport_options = {'visibility_timeout': 3, 'heartbeat_ttl': 3}

@app.task(acks_late=True)
def fails(key):
    mark(key=key)
    raise ValueError(key)

@app.task(acks_late=True, acks_on_failure_or_timeout=False)
def fails_rejected(key):
    mark(key=key)
    raise ValueError(key)

@app.task(acks_late=True, time_limit=0.5)
def times_out(key):
    mark(key=key)
    time.sleep(5)

@app.task(acks_late=True)
def killable(key, seconds):
    mark(key=key)
    time.sleep(seconds)
    return key

@app.task(acks_late=True, reject_on_worker_lost=False)
def killable_not_requeued(key, seconds):
    mark(key=key)
    time.sleep(seconds)
    return key

@app.task(acks_late=True, bind=True)
def rejects(self, key, requeue):
    runs = [m for m in _read() if m.get('key') == key]
    mark(key=key)
    if not runs:
        raise Reject('first try', requeue=requeue)
    return 'second try'

def _read():
    path = os.path.join(HERE, 'marks.jsonl')
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path)]
"""


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Project:
    proj = project_fixture(request, tmp_path_factory, "wkacks", TASKS, request.param)
    proj.worker("-P", "prefork", "-c", "2")
    return proj


def _runs(project: Project, key: str) -> list[dict]:
    return [m for m in project.marks() if m.get("key") == key]


def test_failures_and_timeouts_of_acks_late_tasks_are_not_run_again(project: Project) -> None:
    tasks = project.module
    with pytest.raises(ValueError):
        tasks.fails.delay("f").get(timeout=20)
    with pytest.raises(ValueError):
        tasks.fails_rejected.delay("fr").get(timeout=20)
    with pytest.raises(TimeLimitExceeded):
        tasks.times_out.delay("t").get(timeout=20)
    time.sleep(1)
    assert len(_runs(project, "f")) == len(_runs(project, "fr")) == len(_runs(project, "t")) == 1


def test_lost_child_requeues_unless_reject_on_worker_lost_is_false(project: Project) -> None:
    tasks = project.module
    again = tasks.killable.delay("again", 2)
    wait_for(lambda: _runs(project, "again"), 20, message="task started")
    os.kill(_runs(project, "again")[0]["pid"], signal.SIGKILL)
    assert again.get(timeout=30) == "again"
    assert len(_runs(project, "again")) == 2

    lost = tasks.killable_not_requeued.delay("lost", 2)
    wait_for(lambda: _runs(project, "lost"), 20, message="task started")
    os.kill(_runs(project, "lost")[0]["pid"], signal.SIGKILL)
    with pytest.raises(WorkerLostError):
        lost.get(timeout=30)
    time.sleep(1)
    assert len(_runs(project, "lost")) == 1


def test_reject_with_and_without_requeue(project: Project) -> None:
    tasks = project.module
    assert tasks.rejects.delay("rq", True).get(timeout=30) == "second try"
    dropped = tasks.rejects.delay("rn", False)
    wait_for(lambda: _runs(project, "rn"), 20, message="task ran")
    time.sleep(1)
    assert len(_runs(project, "rn")) == 1 and dropped.state == "PENDING"
