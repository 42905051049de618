"""Remote control of a celeriac worker on RabbitMQ (Celery's pidbox layout, celery-wire.md
4.6), from celeriac and from real Celery. The RabbitMQ is shared with other tests: every
command names this worker, and its queue is its own."""

from __future__ import annotations

import sys
import uuid

import pytest

from celeriac.exceptions import TaskRevokedError
from tests.helpers import Process
from tests.integration.test_worker_helpers import Project, project_fixture

pytestmark = [pytest.mark.slow, pytest.mark.amqp, pytest.mark.redis]

TASKS = """
import os
from celeriac import Celery

app = Celery('ctlamqp', broker=BROKER, backend=BACKEND)
app.conf.task_default_queue = os.environ.get('QUEUE', 'celeriac-test.ctl')

@app.task
def add(a, b):
    return a + b
"""

CELERY_SIDE = """
from celery import Celery

app = Celery('ctlamqp', broker={broker!r}, backend={backend!r})
"""


@pytest.fixture
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            monkeypatch: pytest.MonkeyPatch) -> Project:
    queue = f"celeriac-test.ctl-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("QUEUE", queue)
    project = project_fixture(request, tmp_path_factory, "wkctlamqp", TASKS, "amqp")
    request.addfinalizer(lambda: _delete_queue(queue))
    return project


def _delete_queue(name: str) -> None:
    from tests.amqp_server import connect

    connection = connect()
    try:
        connection.channel().queue_delete(name)
    finally:
        connection.close()


def test_control_over_rabbitmq(project: Project) -> None:
    node = f"ctl-{uuid.uuid4().hex[:8]}"
    worker = project.worker("-P", "threads", "-n", f"{node}@%h")
    name = next(n for reply in project.app.control.ping(timeout=1) for n in reply if n.startswith(node))
    code, out = project.celeriac("inspect", "ping", "-d", name, "-t", "1")
    assert code == 0 and "pong" in out and "1 node online." in out
    queues = project.app.control.inspect(destination=[name], timeout=1).active_queues()[name]
    assert [q["name"] for q in queues] == [project.module.app.conf.task_default_queue]

    (project.root / "celery_side.py").write_text(CELERY_SIDE.format(broker=project.broker_url,
                                                                     backend=project.backend_url))
    proc = Process(["-m", "celery", "-A", "celery_side", "inspect", "ping", "-d", name, "-t", "1"],
                   project.root, name="celery-cli", program=[sys.executable])
    project.processes.append(proc)
    assert proc.proc.wait(30) == 0, proc.log
    assert "pong" in proc.log

    parked = project.module.add.apply_async((1, 2), countdown=2)
    replies = project.app.control.revoke(parked.id, destination=[name], reply=True, timeout=1)
    assert replies == [{name: {"ok": f"tasks {{'{parked.id}'}} flagged as revoked"}}]
    with pytest.raises(TaskRevokedError):
        parked.get(timeout=20)
    assert project.module.add.delay(2, 2).get(timeout=20) == 4
    assert project.app.control.shutdown(destination=[name], reply=True, timeout=1) == [
        {name: {"ok": "shutting down"}}]
    assert worker.proc.wait(15) == 0
