"""Remote control, revokes and rate limits without a network: the pidbox wire format, the
command handlers on a stub worker, the fanout and revoke stores of the memory and SQLite
brokers, and the pieces the CLI uses."""

from __future__ import annotations

import base64
import heapq
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery
from celeriac.brokers.base import Envelope, Route
from celeriac.brokers.memory import MemoryBroker
from celeriac.brokers.sqlite import SQLiteBroker
from celeriac.cli import _compile_arguments, _pretty
from celeriac.control import Control, decode, encode, flatten_reply, pidbox_exchange, reply_exchange
from celeriac.entities import Exchange, Queue
from celeriac.worker import control as commands
from celeriac.worker.pidbox import Mailbox, addressed_to
from celeriac.worker.ratelimit import RateLimits, parse_rate
from celeriac.worker.revoked import RevokedTasks

# -- rate limits ------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "per_second"), [
    ("10/s", 10.0), ("120/m", 2.0), ("3600/h", 1.0), (5, 5.0), ("2.5", 2.5), (None, 0.0), ("", 0.0),
    ("0/s", 0.0),
])
def test_parse_rate(value: Any, per_second: float) -> None:
    assert parse_rate(value) == per_second


@pytest.mark.parametrize("value", ["fast", "10/x", "/s"])
def test_parse_rate_refuses_nonsense(value: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(value)


class _Task:
    def __init__(self, rate_limit: Any) -> None:
        self.rate_limit = rate_limit


def _release(limits: RateLimits, now: float) -> list[int]:
    """The tags whose timers are due at `now` (as the consumer releases them)."""
    out = []
    while limits.timers and limits.timers[0][0] <= now:
        out.append(heapq.heappop(limits.timers)[1])
    return out


def test_rate_limit_slot_is_taken_at_start_and_others_wait_in_line() -> None:
    tasks = {"t.limited": _Task("4/s"), "t.free": _Task(None)}
    limits = RateLimits(tasks)
    assert limits.start("t.limited", 1, now=100.0)
    assert not limits.start("t.limited", 2, now=100.0)
    assert not limits.start("t.limited", 3, now=100.01)
    assert limits.start("t.free", 4, now=100.0)
    assert limits.timers == [(100.25, 2)]  # only the first in line is on the timer
    assert limits.waiting() == {2, 3}
    assert _release(limits, 100.25) == [2]
    # tag 2 starts late (the pool was busy): the next slot counts from its real start
    assert limits.start("t.limited", 2, now=100.4)
    assert limits.timers == [(100.65, 3)]
    assert not limits.start("t.limited", 5, now=100.5)  # behind 3, not on the timer
    assert limits.timers == [(100.65, 3)]
    assert _release(limits, 100.65) == [3]
    assert limits.start("t.limited", 3, now=100.65)
    assert _release(limits, 100.9) == [5]
    assert limits.start("t.limited", 5, now=100.9)
    assert limits.waiting() == set()
    assert limits.start("t.limited", 6, now=200.0)  # idle time is not banked: capacity 1
    assert not limits.start("t.limited", 7, now=200.1)


def test_rate_limit_line_after_revoke_reset_and_disable() -> None:
    tasks = {"t.limited": _Task("1/s")}
    limits = RateLimits(tasks)
    assert limits.start("t.limited", 1, now=0.0)
    assert [limits.start("t.limited", tag, now=0.0) for tag in (2, 3)] == [False, False]
    assert _release(limits, 1.0) == [2]
    limits.leave("t.limited", 2)  # revoked: the next goes on the timer for the same slot
    assert limits.timers == [(1.0, 3)]
    tasks["t.limited"].rate_limit = None
    limits.reset("t.limited")  # lifted: the line still goes in order, then none wait
    assert not limits.start("t.limited", 4, now=1.0)
    assert _release(limits, 1.0) == [3]
    assert limits.start("t.limited", 3, now=1.0)
    assert _release(limits, 1.0) == [4]
    assert limits.start("t.limited", 4, now=1.0)
    assert limits.start("t.limited", 5, now=1.0)
    disabled = RateLimits({"t.limited": _Task("1/m")}, disabled=True)
    assert all(disabled.start("t.limited", tag, now=5.0) for tag in range(3))


# -- revoked ids --------------------------------------------------------------------------------


def test_revokes_persist_in_the_broker_for_workers_started_later() -> None:
    broker = MemoryBroker(f"memory://{uuid.uuid4().hex}")
    first = RevokedTasks(broker)
    first.add(["a", "b"])
    assert "a" in first and "c" not in first
    later = RevokedTasks(broker)
    assert later.load() == 2 and sorted(later.ids()) == ["a", "b"]
    expired = RevokedTasks(broker, expires=-1)
    expired.add(["gone"])
    assert "gone" not in expired and "gone" not in broker.load_revoked()


def test_revoked_set_keeps_the_newest_ids() -> None:
    revoked = RevokedTasks(MemoryBroker(f"memory://{uuid.uuid4().hex}"), maxlen=3)
    revoked.add([str(n) for n in range(5)], persist=False)
    assert revoked.ids() == ["2", "3", "4"]


def test_sqlite_broker_keeps_revokes_and_broadcasts(tmp_path: Path) -> None:
    broker = SQLiteBroker(f"sqlite:///{tmp_path}/b.db")
    broker.store_revoked(["x"], expires=4102444800.0)
    broker.store_revoked(["old"], expires=1.0)
    assert broker.load_revoked() == ["x"]
    listener = broker.subscribe_fanout("celery.pidbox")
    events = broker.subscribe_fanout("celeryev", routing_key="worker.#")
    broker.publish_fanout("celery.pidbox", Envelope(b"1", {}))
    broker.publish_fanout("celeryev", Envelope(b"2", {}), "worker.heartbeat")
    broker.publish_fanout("celeryev", Envelope(b"3", {}), "task.succeeded")
    assert listener.get(0).body == b"1" and listener.get(0) is None
    assert events.get(0).body == b"2" and events.get(0) is None
    late = broker.subscribe_fanout("celery.pidbox")
    assert late.get(0) is None  # only what is published after subscribing
    for sub in (listener, events, late):
        sub.close()


def test_sqlite_subscription_changes_queues(tmp_path: Path) -> None:
    broker = SQLiteBroker(f"sqlite:///{tmp_path}/b.db")
    broker.publish(Envelope(b"a", {"id": "a"}), Route("qa", routing_key="qa"))
    broker.publish(Envelope(b"b", {"id": "b"}), Route("qb", routing_key="qb"))
    sub = broker.subscribe(["qa"], prefetch=10)
    assert [d.envelope.body for d in sub.get_many(10, 0)] == [b"a"]
    sub.set_queues(["qb"])
    got = sub.get_many(10, 0)
    assert [d.envelope.body for d in got] == [b"b"]
    sub.ack_many(got)
    sub.close()


def test_memory_reply_queue_binding_and_delete() -> None:
    broker = MemoryBroker(f"memory://{uuid.uuid4().hex}")
    queue = Queue("oid.reply.celery.pidbox", Exchange("reply.celery.pidbox", "direct"), "oid")
    sub = broker.subscribe_queue(queue)
    broker.publish(Envelope(b"r", {}), Route("", "reply.celery.pidbox", "oid"))
    assert [d.envelope.body for d in sub.get_many(10, 0)] == [b"r"]
    sub.close()
    broker.delete_queue(queue.name, "reply.celery.pidbox", "oid")
    assert broker._targets(Route("", "reply.celery.pidbox", "oid")) == []


# -- the wire -------------------------------------------------------------------------------


def test_request_envelope_is_celerys_pidbox_message() -> None:
    app = Celery("t", broker=f"memory://{uuid.uuid4().hex}")
    envelope = encode(app, {"method": "ping", "arguments": {}}, {"expires": 12.5}, 2)
    assert envelope.content_type == "application/json"
    assert envelope.headers["expires"] == 12.5 and isinstance(envelope.headers["clock"], int)
    assert envelope.properties == {"delivery_mode": 2, "priority": 0}
    assert decode(app, envelope) == {"method": "ping", "arguments": {}}
    assert pidbox_exchange(app) == "celery.pidbox" and reply_exchange(app) == "reply.celery.pidbox"


def test_a_captured_celery_request_decodes() -> None:
    # celery-wire.md 2.7: `celery inspect ping` as published on Redis
    body = base64.b64decode(
        "eyJtZXRob2QiOiAicGluZyIsICJhcmd1bWVudHMiOiB7fSwgImRlc3RpbmF0aW9uIjogbnVsbCwgInBhdHRlcm4iOiBudWxs"
        "LCAibWF0Y2hlciI6IG51bGwsICJ0aWNrZXQiOiAiOWMwMTA0ZTAtNjkyNy00MzViLWE5MzUtOGQ3ZGJiZDRmOWE0IiwgInJl"
        "cGx5X3RvIjogeyJleGNoYW5nZSI6ICJyZXBseS5jZWxlcnkucGlkYm94IiwgInJvdXRpbmdfa2V5IjogIjExNTIxYTQ0LTkw"
        "MDYtMzM3OC1iYzY0LWViNjU3MjUwYzI5MCJ9fQ==")
    app = Celery("t", broker=f"memory://{uuid.uuid4().hex}")
    request = decode(app, Envelope(body, {"clock": 1, "expires": 1795591847.94}))
    assert request["method"] == "ping" and request["reply_to"]["exchange"] == "reply.celery.pidbox"
    assert addressed_to("w1@vm", request)


@pytest.mark.parametrize(("body", "expected"), [
    ({"destination": ["a@x"]}, True), ({"destination": ["b@x"]}, False),
    ({"pattern": "a@*", "matcher": "glob"}, True), ({"pattern": "b.*", "matcher": "pcre"}, False),
    ({"pattern": r"a@\w", "matcher": "pcre"}, True), ({}, True),
])
def test_addressed_to(body: dict[str, Any], expected: bool) -> None:
    assert addressed_to("a@x", body) is expected


def test_flatten_reply_warns_about_duplicate_names() -> None:
    assert flatten_reply([{"a": 1}, {"b": 2}]) == {"a": 1, "b": 2}
    with pytest.warns(UserWarning, match="multiple replies"):
        flatten_reply([{"a": 1}, {"a": 2}])


# -- commands on a stub worker, through a memory broker ---------------------------------------


class _StubConsumer:
    def __init__(self) -> None:
        self.queues = [Queue("celery", Exchange("celery"), "celery")]
        self.autoscaler = None
        self.prefetch = 4
        self.totals: dict[str, int] = {}
        self.calls: list[Any] = []
        self.limits = RateLimits({})

    def jobs(self) -> tuple[list[Any], list[Any], list[Any]]:
        return [], [], []

    def call_soon(self, call: Any) -> None:
        self.calls.append(call)

    def terminate(self, task_id: str, signum: int) -> bool:
        return False


class _StubWorker:
    def __init__(self, app: Celery) -> None:
        self.app = app
        self.hostname = "stub@host"
        self.clock = 0
        self.started_at = 0.0
        self.consumer = _StubConsumer()
        self.revoked = RevokedTasks(app.broker)
        self.pool_name = "threads"
        self.max_tasks_per_child = None
        self.stopped = False

        class _Pool:
            limit = 2

            def info(self) -> dict[str, Any]:
                return {"implementation": "threads", "max-concurrency": 2}

            def grow(self, n: int) -> None: ...
            def shrink(self, n: int) -> None: ...

        self.pool = _Pool()

    def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def stub() -> Any:
    tag = uuid.uuid4().hex
    app = Celery("stub", broker=f"memory://{tag}", backend=f"memory://{tag}")

    @app.task(name="t.add", rate_limit="1/s")
    def add(a: int, b: int) -> int:
        return a + b

    worker = _StubWorker(app)
    mailbox = Mailbox(worker)  # type: ignore[arg-type]
    mailbox.start()
    yield worker
    mailbox.stop()


def test_ping_and_inspect_round_trip(stub: Any) -> None:
    control = Control(stub.app)
    assert control.ping(destination=["stub@host"]) == [{"stub@host": {"ok": "pong"}}]
    inspect = control.inspect(destination=["stub@host"])
    assert "t.add [rate_limit=1/s]" in inspect.registered()["stub@host"]
    assert inspect.active() == {"stub@host": []}
    assert inspect.active_queues()["stub@host"][0]["name"] == "celery"
    stats = inspect.stats()["stub@host"]
    assert stats["pool"]["max-concurrency"] == 2 and stats["prefetch_count"] == 4
    assert control.inspect(destination=["other@host"], timeout=0.05).ping() is None


def test_revoke_is_stored_for_later_workers_and_marks_the_result(stub: Any) -> None:
    control = Control(stub.app)
    reply = control.revoke("t-1", reply=True, destination=["stub@host"])
    assert reply == [{"stub@host": {"ok": "tasks {'t-1'} flagged as revoked"}}]
    assert "t-1" in stub.revoked
    assert "t-1" in stub.app.broker.load_revoked()
    assert stub.app.AsyncResult("t-1").state == "REVOKED"
    assert control.inspect(destination=["stub@host"]).revoked() == {"stub@host": ["t-1"]}


def test_control_commands_on_the_stub(stub: Any) -> None:
    control = Control(stub.app)
    one = {"destination": ["stub@host"]}
    assert control.rate_limit("t.add", "5/s", reply=True, **one) == [
        {"stub@host": {"ok": "new rate limit set successfully"}}]
    assert stub.app.tasks["t.add"].rate_limit == "5/s"
    assert control.rate_limit("t.nope", "5/s", reply=True, **one) == [{"stub@host": {"error": "unknown task"}}]
    assert control.time_limit("t.add", soft=1, hard=2, reply=True, **one)[0]["stub@host"]["ok"]
    assert stub.app.tasks["t.add"].time_limit == 2
    assert control.pool_grow(2, reply=True, **one) == [{"stub@host": {"ok": "pool will grow"}}]
    assert control.add_consumer("extra", reply=True, **one) == [{"stub@host": {"ok": "add consumer extra"}}]
    assert len(stub.consumer.calls) == 2  # run later in the consumer loop
    assert "error" in control.autoscale(3, 1, reply=True, **one)[0]["stub@host"]
    assert "error" in control.broadcast("no_such", reply=True, **one)[0]["stub@host"]
    assert control.shutdown(reply=True, **one) == [{"stub@host": {"ok": "shutting down"}}]
    assert stub.stopped


# -- CLI pieces -------------------------------------------------------------------------------


def test_cli_arguments_and_rendering() -> None:
    assert _compile_arguments("rate_limit", ["t.add", "5/s"]) == {"task_name": "t.add", "rate_limit": "5/s"}
    assert _compile_arguments("revoke", ["a", "b"]) == {"task_id": ["a", "b"]}
    assert _compile_arguments("terminate", ["KILL", "a"]) == {"signal": "KILL", "task_id": ["a"]}
    assert _compile_arguments("pool_grow", ["3"]) == {"n": 3}
    assert _pretty({"ok": "pong"}) == ("OK", "pong")
    assert _pretty({"error": "nope"}) == ("ERROR", "nope")
    assert _pretty([]) == ("OK", "- empty -")
    assert _pretty(["x", "y"]) == ("OK", "* x\n* y")
    assert json.loads(_pretty({"a": 1})[1]) == {"a": 1}
    assert commands.COMMANDS["dump_active"] is commands.COMMANDS["active"]
