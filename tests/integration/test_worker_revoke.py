"""Expiry and revoke through real workers, on SQLite and Redis.

Beyond Celery: revokes are kept in the broker with a time to live, so a worker started after
the revoke, or restarted, still skips the task (celery#4886).
"""

from __future__ import annotations

import time

import pytest

from celeriac.exceptions import TaskRevokedError
from tests.helpers import wait_for
from tests.integration.test_worker_helpers import MARK, Project, project_fixture

pytestmark = pytest.mark.slow

TASKS = MARK + """
from celeriac import Celery

app = Celery('revokes', broker=BROKER, backend=BACKEND)

@app.task
def record(tag):
    mark(tag=tag)
    return tag

@app.task(acks_late=True)
def sleeper(tag, seconds):
    mark(tag=tag, event='start')
    time.sleep(seconds)
    mark(tag=tag, event='done')
    return tag
"""


@pytest.fixture(params=["sqlite", "redis"])
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Project:
    return project_fixture(request, tmp_path_factory, "wkrevoke", TASKS, request.param)


def _tags(project: Project) -> list[str]:
    return [m["tag"] for m in project.marks()]


def test_expired_and_revoked_tasks_are_skipped_even_by_a_worker_started_later(project: Project) -> None:
    tasks = project.module
    expired = tasks.record.apply_async(("expired",), expires=0.2)
    revoked = tasks.record.delay("revoked-before-start")
    also_revoked = tasks.record.delay("also-revoked")
    project.app.control.revoke([revoked.id, also_revoked.id])  # no worker runs: kept in the broker
    fine = tasks.record.delay("fine")
    time.sleep(0.4)
    worker = project.worker("-P", "prefork", "-c", "2")
    assert fine.get(timeout=20) == "fine"
    for result in (expired, revoked, also_revoked):
        with pytest.raises(TaskRevokedError):
            result.get(timeout=20)
        assert result.state == "REVOKED"
    worker.wait_for_log("Discarding expired task")
    worker.wait_for_log("Discarding revoked task")

    # a task waiting for its ETA: AsyncResult.revoke(). On Redis the worker holds it on a
    # timer (as Celery); SQLite keeps it in the broker until due.
    later = tasks.record.apply_async(("eta",), countdown=1.5)
    if project.kind == "redis":
        worker.wait_for_log(f"Task {tasks.record.name}[{later.id}] received")
    later.revoke()
    with pytest.raises(TaskRevokedError):
        later.get(timeout=20)
    assert project.app.control.inspect(timeout=0.5).revoked()  # the worker lists it

    # terminate=True stops a running task (prefork: signal the child); the worker goes on
    running = tasks.sleeper.delay("long", 30)
    wait_for(lambda: "long" in _tags(project), 20, message="long task started")
    project.app.control.revoke(running.id, terminate=True, signal="SIGKILL")
    with pytest.raises(TaskRevokedError):
        running.get(timeout=20)
    assert tasks.record.delay("after").get(timeout=20) == "after"
    time.sleep(2)  # the ETA has passed; neither revoked task ran, the killed one was not redelivered
    assert sorted(_tags(project)) == ["after", "fine", "long"]
    worker.stop()


def test_a_restarted_worker_remembers_revokes_it_was_told(project: Project) -> None:
    tasks = project.module
    first = project.worker("-P", "threads", "-Q", "celery")
    parked = tasks.record.apply_async(("parked",), queue="other")
    # A plain broadcast, as a Celery client sends it: only the worker stores the revoke.
    project.app.control.broadcast("revoke", arguments={"task_id": parked.id}, reply=True, timeout=1)
    first.stop()
    second = project.worker("-P", "threads", "-Q", "celery,other")
    with pytest.raises(TaskRevokedError):
        parked.get(timeout=20)
    assert tasks.record.apply_async(("other-fine",), queue="other").get(timeout=20) == "other-fine"
    assert "parked" not in _tags(project)
    second.stop()
