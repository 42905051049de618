"""EventDispatcher: Celery's event fields, a Lamport clock, task events buffered and sent once
per turn (one alone under its own key, several as a `task.multi` list), and a broker that is
down costs a warning, not the worker."""

from __future__ import annotations

import json
import logging
import uuid

import pytest

from celeriac import Celery
from celeriac.events import EventDispatcher, Heart


def _listen(app: Celery):  # a monitor bound '#', as `celery events`
    return app.broker.subscribe_fanout("celeryev", routing_key="#")


def _app() -> Celery:
    return Celery("ev", broker=f"memory://{uuid.uuid4().hex}")


def test_worker_event_fields_and_clock() -> None:
    app = _app()
    monitor = _listen(app)
    dispatcher = EventDispatcher(app, "w1@host")
    heart = Heart(dispatcher, lambda: (1, 7))
    heart.beat()
    heart.beat()
    first, second = monitor.get(1), monitor.get(1)
    assert first.headers == {"hostname": "w1@host"} and first.properties["delivery_mode"] == 1
    assert first.content_type == "application/json"
    event = json.loads(first.body)
    assert event["type"] == "worker-heartbeat" and event["hostname"] == "w1@host"
    assert {"utcoffset", "pid", "timestamp", "clock"} <= event.keys()
    assert (event["freq"], event["active"], event["processed"]) == (2.0, 1, 7)
    assert json.loads(second.body)["clock"] == event["clock"] + 1


def test_task_events_are_buffered_and_batched() -> None:
    app = _app()
    monitor = _listen(app)
    dispatcher = EventDispatcher(app, "w1@host", task_events=True)
    dispatcher.buffer_task("task-started", uuid="a")
    assert monitor.get(0.05) is None  # nothing until the turn ends
    dispatcher.flush()
    alone = monitor.get(1)
    assert json.loads(alone.body)["type"] == "task-started"
    dispatcher.buffer_task("task-received", uuid="b", name="t.add")
    dispatcher.buffer_task("task-succeeded", uuid="b", result="5", runtime=0.1)
    dispatcher.flush()
    batch = monitor.get(1)
    assert [e["type"] for e in json.loads(batch.body)] == ["task-received", "task-succeeded"]
    dispatcher.flush()
    assert monitor.get(0.05) is None  # an empty buffer sends nothing


def test_task_events_off_send_nothing() -> None:
    app = _app()
    monitor = _listen(app)
    dispatcher = EventDispatcher(app, "w1@host")
    dispatcher.buffer_task("task-started", uuid="a")
    dispatcher.flush()
    assert monitor.get(0.05) is None


def test_a_broker_that_is_down_costs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    app = Celery("ev", broker="redis://127.0.0.1:1/0")  # nothing listens on port 1
    dispatcher = EventDispatcher(app, "w1@host", task_events=True)
    with caplog.at_level(logging.WARNING, logger="celeriac.events"):
        dispatcher.send("worker-online")
    assert "Could not send event worker.online" in caplog.text


def test_client_sends_task_sent_only_when_asked() -> None:
    app = _app()
    monitor = _listen(app)

    @app.task(name="ev.add")
    def add(x: int, y: int) -> int:
        return x + y

    add.delay(1, 2)
    assert monitor.get(0.05) is None  # task_send_sent_event is off by default
    app.conf.task_send_sent_event = True
    one = add.delay(1, 2)
    event = json.loads(monitor.get(1).body)
    assert event["type"] == "task-sent" and event["uuid"] == one.id and event["name"] == "ev.add"
    assert event["hostname"].startswith("gen") and event["args"] == "(1, 2)" and event["queue"] == "celery"
    from celeriac import group

    members = group(add.s(i, i) for i in range(3)).apply_async()
    ids = [json.loads(monitor.get(1).body)["uuid"] for _ in range(3)]
    assert ids == [r.id for r in members.results]
