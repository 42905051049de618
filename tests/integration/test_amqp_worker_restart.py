"""RabbitMQ restarted under a running worker and a publishing client: nothing is lost.

A private RabbitMQ node (tests/rabbitmq_node.py) is stopped and started again (same ports, same
database: the durable queue and its persistent messages survive) while a worker with
``acks_late`` tasks consumes and the client keeps publishing. The worker must reconnect and go
on, the client's publishes must retry (a `task_publish_retry_policy` long enough for the outage;
Celery's default gives up after ~0.6 s), and every task must run at least once. Duplicates are
allowed only as acks_late redeliveries (a task that ran while its ack could not reach the
broker): they are counted and bounded by what was in flight.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac import Celery
from tests.helpers import Process, start_worker, wait_for, write_module

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from rabbitmq_node import RabbitMQNode, running_node  # noqa: E402

pytestmark = pytest.mark.slow

TASKS = 400


@pytest.fixture(scope="module")
def node() -> Iterator[RabbitMQNode]:
    with running_node() as started:
        yield started


def runs(path: Path) -> Counter[str]:
    """How many times each task id ran (one line per run, appended by the task)."""
    if not path.exists():
        return Counter()
    return Counter(line for line in path.read_text().splitlines() if line)


@pytest.mark.parametrize(("pool", "how"), [("prefork", "stop"), ("solo", "stop"), ("prefork", "kill")])
def test_worker_and_client_survive_a_rabbitmq_restart(node: RabbitMQNode, project: Path,
                                                       processes: list[Process], pool: str, how: str) -> None:
    queue = f"restart-{pool}-{uuid.uuid4().hex[:8]}"
    ran = project / "ran.txt"
    write_module(project, "restartapp.py", f"""
        import os, time
        from celeriac import Celery

        app = Celery('restartapp', broker={node.url!r})
        app.conf.task_default_queue = {queue!r}
        app.conf.broker_heartbeat = 4

        @app.task(acks_late=True, ignore_result=True)
        def work(n):
            time.sleep(0.005)
            fd = os.open({str(ran)!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, (work.request.id + "\\n").encode())
            finally:
                os.close(fd)
    """)
    worker = start_worker(project, "restartapp", "-P", pool, "-c", "2")
    processes.append(worker)

    client = Celery("client", broker=node.url)
    client.conf.task_default_queue = queue
    client.conf.task_publish_retry_policy = {"max_retries": 120, "interval_start": 0, "interval_step": 0.2,
                                             "interval_max": 0.5}
    sent: list[str] = []
    errors: list[BaseException] = []

    def publish() -> None:  # steadily, across the outage: each send retries until RabbitMQ is back
        try:
            for n in range(TASKS):
                sent.append(client.send_task("restartapp.work", (n,)).id)
                time.sleep(0.01)
        except BaseException as exc:
            errors.append(exc)

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        wait_for(lambda: len(runs(ran)) >= 50, timeout=30, message="50 tasks before the restart")
        node.stop() if how == "stop" else node.kill()  # kill: a crash, no goodbye to clients
        during = len(sent)
        time.sleep(1.0)
        node.start()
        publisher.join(120)
        assert not publisher.is_alive() and not errors, errors
        assert len(sent) == TASKS and len(sent) > during  # the client went on after the restart
        try:
            wait_for(lambda: set(runs(ran)) >= set(sent), timeout=90, message="every task to run")
        except AssertionError:
            missing = set(sent) - set(runs(ran))
            raise AssertionError(f"{len(missing)} tasks never ran:\n{worker.log[-5000:]}") from None
    finally:
        publisher.join(5)
        client.close()
    counts = runs(ran)
    assert set(counts) == set(sent)  # nothing ran that was not sent
    duplicates = sum(n - 1 for n in counts.values())
    # Only what the worker held (basic_qos: 2 x 4) when the connection dropped, and a publish
    # whose confirm was lost (sent again), can run twice.
    assert duplicates <= 8 + 1, (duplicates, worker.log[-5000:])
    assert "reconnecting" in worker.log or "Cannot connect" in worker.log
    worker.stop()
    print(f"{pool}, {how}: {len(sent)} tasks, {duplicates} ran twice (acks_late redeliveries)")
