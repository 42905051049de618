"""Events from a celeriac worker, read by real Celery's EventReceiver and folded into Celery's
`events.State`: what Flower and `celery events` run. On Redis (PUB/SUB on
``/<db>.celeryev/<key>``) and RabbitMQ (the `celeryev` topic exchange), celery-wire.md 5."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import Process, require_port, wait_for
from tests.interop.conftest import DB_URL, start

AMQP = "amqp://guest:guest@127.0.0.1:5672//"


class Monitor:
    """Celery's EventReceiver on a thread, every event kept and folded into a State."""

    def __init__(self, url: str) -> None:
        from celery import Celery as RealCelery

        self.app = RealCelery("monitor", broker=url)
        self.events: list[dict[str, Any]] = []
        self.state = self.app.events.State()
        self.connection = self.app.connection_for_read()
        self.receiver = self.app.events.Receiver(self.connection, handlers={"*": self._on_event})
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(20), "the receiver did not start"

    def _on_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.state.event(event)

    def _run(self) -> None:
        # ConsumerMixin's hook, called once its queue is bound (EventReceiver's would wake workers)
        self.receiver.on_consume_ready = lambda *args, **kwargs: self.ready.set()
        self.receiver.capture(limit=None, timeout=None, wakeup=False)  # until should_stop

    def of(self, kind: str, **fields: Any) -> list[dict[str, Any]]:
        return [e for e in list(self.events)
                if e["type"] == kind and all(e.get(k) == v for k, v in fields.items())]

    def close(self) -> None:
        self.receiver.should_stop = True
        self.thread.join(5)
        self.connection.close()


@pytest.fixture(params=["redis", "amqp"])
def setup(request: pytest.FixtureRequest, redis_db: object) -> Iterator[tuple[str, str, Any]]:
    url = DB_URL
    if request.param == "amqp":
        require_port("RabbitMQ", "127.0.0.1", 5672)
        url = AMQP
    queue = f"ev-{uuid.uuid4().hex[:8]}"
    yield request.param, url, queue


def _worker(monitor: Monitor, setup: tuple[str, str, Any], processes: list[Process],
            *args: str) -> tuple[Process, str]:
    """A celeriac worker (`args`: e.g. -E) and its node name, read from its worker-online."""
    kind, url, queue = setup
    env = {"INTEROP_URL": url, "INTEROP_BACKEND": DB_URL, "INTEROP_QUEUE": queue}
    worker = start("celeriac", queue, *args, name=f"ev{kind}{len(args)}", env=env)
    processes.append(worker)
    return worker, next(e["hostname"] for e in _wait(monitor, "worker-online"))


def _client(url: str, queue: str) -> Any:
    from celeriac import Celery

    app = Celery("interop", broker=url, backend=DB_URL)
    app.conf.task_default_queue = queue
    return app


def test_celery_monitor_sees_our_worker_and_its_tasks(setup: tuple[str, str, Any],
                                                       processes: list[Process]) -> None:
    _kind, url, queue = setup
    monitor = Monitor(url)
    try:
        worker, hostname = _worker(monitor, setup, processes, "-E")
        client = _client(url, queue)
        client.conf.task_send_sent_event = True
        ok = client.send_task("interop.add", (2, 3))
        bad = client.send_task("interop.fail", ("value",))
        assert ok.get(timeout=20) == 5
        with pytest.raises(Exception, match="bad value"):
            bad.get(timeout=20)
        wait_for(lambda: monitor.of("task-succeeded", uuid=ok.id) and monitor.of("task-failed", uuid=bad.id),
                 timeout=10, message="the task events")
        received = monitor.of("task-received", uuid=ok.id)[0]
        assert received["name"] == "interop.add" and received["args"] == "(2, 3)"
        assert received["hostname"] == hostname and received["kwargs"] == "{}"
        assert monitor.of("task-started", uuid=ok.id)
        sent = monitor.of("task-sent", uuid=ok.id)[0]  # from the client, not the worker
        assert sent["hostname"].startswith("gen") and sent["name"] == "interop.add"
        assert sent["args"] == "(2, 3)" and sent["queue"] == queue
        succeeded = monitor.of("task-succeeded", uuid=ok.id)[0]
        assert succeeded["result"] == "5" and succeeded["runtime"] >= 0
        failed = monitor.of("task-failed", uuid=bad.id)[0]
        assert "ValueError('bad value')" in failed["exception"] and "Traceback" in failed["traceback"]
        clocks = [e["clock"] for e in monitor.events if e["hostname"] == hostname]
        assert clocks == sorted(clocks)  # a Lamport clock, in send order
        # Celery's State (Flower's model) made sense of them
        assert monitor.state.tasks[ok.id].state == "SUCCESS"
        assert monitor.state.tasks[ok.id].name == "interop.add"
        assert monitor.state.tasks[bad.id].state == "FAILURE"
        assert monitor.state.workers[hostname].alive
        heartbeat = _wait(monitor, "worker-heartbeat", hostname=hostname)[0]
        assert heartbeat["freq"] == 2.0 and heartbeat["processed"] >= 2 and len(heartbeat["loadavg"]) == 3
        worker.stop()
        _wait(monitor, "worker-offline", hostname=hostname)
        assert not monitor.state.workers[hostname].alive
    finally:
        monitor.close()


def test_without_e_only_worker_events_and_remote_enable(setup: tuple[str, str, Any],
                                                        processes: list[Process]) -> None:
    _kind, url, queue = setup
    monitor = Monitor(url)
    try:
        _worker_process, hostname = _worker(monitor, setup, processes)
        client = _client(url, queue)
        first = client.send_task("interop.add", (1, 1))
        assert first.get(timeout=20) == 2
        _wait(monitor, "worker-heartbeat", hostname=hostname)
        assert not [e for e in monitor.events if e["type"].startswith("task-")]
        replies = client.control.enable_events(destination=[hostname], reply=True, timeout=5)
        assert replies == [{hostname: {"ok": "task events enabled"}}]
        second = client.send_task("interop.add", (2, 2))
        assert second.get(timeout=20) == 4
        _wait(monitor, "task-succeeded", uuid=second.id)
        assert not monitor.of("task-received", uuid=first.id)
    finally:
        monitor.close()


def _wait(monitor: Monitor, kind: str, **fields: Any) -> list[dict[str, Any]]:
    wait_for(lambda: monitor.of(kind, **fields), timeout=15, message=f"a {kind} event {fields}")
    return monitor.of(kind, **fields)
