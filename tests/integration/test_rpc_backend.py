"""The rpc:// result backend against the real RabbitMQ, and against Celery 5.7's rpc backend.

A "worker" here is a subscription to the task queue plus `store_result` with the request's
reply_to and correlation_id, as the worker passes them; end-to-end worker runs come with the
interop tests.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from celeriac import Celery, Exchange, Queue, states
from celeriac.backends.rpc import RPCBackend
from celeriac.exceptions import ImproperlyConfigured
from celeriac.exceptions import TimeoutError as CeleriacTimeoutError
from celeriac.result import AsyncResult
from celeriac.task import Context

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from amqp_server import URL, Cleanup, connect, list_queues, require_amqp, unique  # noqa: E402


@pytest.fixture
def cleanup() -> Iterator[Cleanup]:
    done = Cleanup()
    yield done
    done.run()


@pytest.fixture
def app(cleanup: Cleanup) -> Iterator[Celery]:
    require_amqp()
    app = Celery("rpc-tests", broker=URL, backend="rpc://", set_as_current=False)
    cleanup.queue(app.oid)
    yield app
    app.backend.close()
    app.broker.close()


@pytest.fixture
def task_queue(app: Celery, cleanup: Cleanup) -> str:
    name = cleanup.queue(unique("tasks"))
    cleanup.exchange(name)  # the router's queue for the name comes with a same-named exchange
    app.conf.task_default_queue = name
    app.broker.declare([Queue(name, Exchange(""), name)])
    return name


def request_for(app: Celery, task_id: str, **fields: Any) -> Context:
    return Context(id=task_id, reply_to=app.oid, correlation_id=task_id, **fields)


def basic_get(queue: str) -> Any:
    with connect() as connection:
        return connection.channel().basic_get(queue, no_ack=True)


# -- no server needed ---------------------------------------------------------------------


def test_needs_an_amqp_broker() -> None:
    backend = RPCBackend(Celery("x", broker="memory://", set_as_current=False), "rpc://")
    with pytest.raises(ImproperlyConfigured, match="AMQP broker"):
        backend.on_task_call()


def test_what_rpc_cannot_do() -> None:
    backend = RPCBackend(Celery("x", broker=URL, set_as_current=False), "rpc://")
    with pytest.raises(NotImplementedError):
        backend.store_many([{"task_id": "a"}])
    with pytest.raises(NotImplementedError):
        backend.save_group("g", ())
    with pytest.raises(NotImplementedError, match="chords"):
        backend.ensure_chords_allowed()


# -- the wire format ----------------------------------------------------------------------


def test_reply_queue_is_declared_like_celery_57(app: Celery) -> None:
    import celery
    import kombu

    backend = app.backend
    backend.on_task_call()
    queue = list_queues()[app.oid]
    assert (queue["durable"], queue["auto_delete"], queue["exclusive"]) == (True, True, False)
    assert queue["arguments"] == {"x-expires": 86400000}
    theirs = celery.Celery("theirs", broker=URL, backend="rpc://", set_as_current=False)
    with theirs.connection_for_write() as connection:
        # Celery's own declaration of the same queue: refused if anything differed.
        kombu.Queue(app.oid, kombu.Exchange(None), app.oid, durable=True, auto_delete=True,
                    expires=theirs.backend.expires)(connection.default_channel).declare()


def test_reply_message_equals_celerys(app: Celery) -> None:
    import celery

    app.backend.on_task_call()
    request = SimpleNamespace(reply_to=app.oid, correlation_id="aw-add", group=None, parent_id=None)
    theirs = celery.Celery("theirs", broker=URL, backend="rpc://", set_as_current=False)
    theirs.backend.store_result("aw-add", 4, states.SUCCESS, request=request)
    app.backend.store_result("aw-add", 4, states.SUCCESS, request=request_for(app, "aw-add"))
    celery_msg, our_msg = basic_get(app.oid), basic_get(app.oid)
    assert our_msg.properties == celery_msg.properties == {
        "content_type": "application/json", "content_encoding": "utf-8", "application_headers": {},
        "delivery_mode": 1, "priority": 0, "correlation_id": "aw-add",
    }
    assert our_msg.delivery_info["exchange"] == celery_msg.delivery_info["exchange"] == ""
    assert our_msg.delivery_info["routing_key"] == app.oid
    ours, theirs_meta = json.loads(our_msg.body), json.loads(celery_msg.body)
    assert list(ours) == list(theirs_meta) == ["status", "result", "traceback", "children", "date_done", "task_id"]
    assert {k: v for k, v in ours.items() if k != "date_done"} \
        == {k: v for k, v in theirs_meta.items() if k != "date_done"}


def test_result_persistent_sends_delivery_mode_2(cleanup: Cleanup) -> None:
    require_amqp()
    app = Celery("p", broker=URL, backend="rpc://", set_as_current=False)
    cleanup.queue(app.oid)
    app.conf.result_persistent = True
    try:
        app.backend.on_task_call()
        app.backend.store_result("p-1", 1, states.SUCCESS, request=request_for(app, "p-1"))
        assert basic_get(app.oid).properties["delivery_mode"] == 2
    finally:
        app.broker.close()


def test_no_reply_to_sends_nothing(app: Celery) -> None:
    app.backend.on_task_call()
    meta = app.backend.store_result("lost", 1, states.SUCCESS, request=Context(id="lost"))
    assert meta["status"] == states.SUCCESS
    assert basic_get(app.oid) is None


# -- the client's side ------------------------------------------------------------------------


def test_wait_for_keeps_other_results(app: Celery) -> None:
    backend = app.backend
    backend.on_task_call()
    for task_id, value in (("a", 1), ("b", 2)):
        backend.store_result(task_id, None, states.STARTED, request=request_for(app, task_id))
        backend.store_result(task_id, value, states.SUCCESS, request=request_for(app, task_id))
    assert backend.wait_for("b", timeout=5)["result"] == 2
    assert backend.get_task_meta("a")["result"] == 1  # seen while waiting for b
    assert [m["status"] for m in backend.get_many_metas(["a", "never"])] == [states.SUCCESS, states.PENDING]
    backend.forget("a")
    assert backend.get_task_meta("a")["status"] == states.PENDING
    with pytest.raises(CeleriacTimeoutError):
        backend.wait_for("never", timeout=0.3)


def test_our_client_and_worker_round_trip(app: Celery, task_queue: str) -> None:
    app.backend.on_task_call()  # what the producer does before sending (see the report)
    ok = app.send_task("proj.add", (2, 2))
    bad = app.send_task("proj.fail", ())
    sub = app.broker.subscribe([task_queue], prefetch=10)
    try:
        deliveries = []
        while len(deliveries) < 2:
            deliveries += sub.get_many(2, 1.0)
        for delivery in deliveries:
            props = delivery.envelope.properties
            request = Context(id=delivery.envelope.headers["id"], reply_to=props["reply_to"],
                              correlation_id=props["correlation_id"])
            if delivery.envelope.headers["task"] == "proj.add":
                app.backend.mark_as_done(request.id, 4, request=request)
            else:
                app.backend.mark_as_failure(request.id, KeyError("nope"), "Traceback...", request=request)
        sub.ack_many(deliveries)
    finally:
        sub.close()
    assert ok.get(timeout=5) == 4
    with pytest.raises(KeyError):
        bad.get(timeout=5)
    assert AsyncResult(bad.id, app=app).traceback == "Traceback..."


# -- interop with Celery 5.7 ----------------------------------------------------------------


def test_celery_client_gets_our_workers_result(app: Celery, cleanup: Cleanup) -> None:
    import celery

    queue = cleanup.queue(unique("celery-client"))
    cleanup.exchange(queue)  # Celery declares a same-named exchange for queue=
    app.broker.declare([Queue(queue, Exchange(""), queue)])
    theirs = celery.Celery("theirs", broker=URL, backend="rpc://", set_as_current=False)
    cleanup.queue(theirs.thread_oid)
    ok = theirs.send_task("proj.add", (1, 2), queue=queue)
    bad = theirs.send_task("proj.fail", (), queue=queue)
    sub = app.broker.subscribe([queue], prefetch=10)
    try:
        deliveries = []
        while len(deliveries) < 2:
            deliveries += sub.get_many(2, 1.0)
        for delivery in deliveries:
            props = delivery.envelope.properties
            request = Context(reply_to=props["reply_to"], correlation_id=props["correlation_id"])
            task_id = delivery.envelope.headers["id"]
            if task_id == ok.id:
                app.backend.mark_as_done(task_id, 3, request=request)
            else:
                app.backend.mark_as_failure(task_id, ValueError("bad"), None, request=request)
        sub.ack_many(deliveries)
    finally:
        sub.close()
    assert ok.get(timeout=10) == 3
    with pytest.raises(ValueError, match="bad"):
        bad.get(timeout=10)


def test_our_client_gets_celery_workers_result(app: Celery, task_queue: str) -> None:
    import celery

    app.backend.on_task_call()
    result = app.send_task("proj.add", (20, 22))
    message = basic_get(task_queue)
    theirs = celery.Celery("theirs", broker=URL, backend="rpc://", set_as_current=False)
    request = SimpleNamespace(reply_to=message.properties["reply_to"],
                              correlation_id=message.properties["correlation_id"], group=None, parent_id=None)
    theirs.backend.store_result(message.headers["id"], None, states.STARTED, request=request)
    theirs.backend.store_result(message.headers["id"], 42, states.SUCCESS, request=request)
    assert result.get(timeout=10) == 42
