"""Waiting for a Redis result: one write (UNSUBSCRIBE last, GET, SUBSCRIBE) on a kept
connection per wait, in RESP2 and RESP3, and no subscription left behind after the next wait."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from celeriac.backends.redis import RedisBackend  # noqa: E402
from celeriac.exceptions import TimeoutError  # noqa: E402
from redis_server import redis_url, require_redis  # noqa: E402

pytestmark = pytest.mark.redis
DB = 12
CHANNEL = "celery-task-meta-"


class Conf(dict):
    def __getattr__(self, name):
        return self.get(name)


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def backend(request):
    require_redis(DB)
    conf = Conf(result_serializer="json", result_accept_content=None, accept_content=["json"],
                result_expires=86400, result_extended=False, result_backend_transport_options={},
                redis_backend_use_ssl=None)
    b = RedisBackend(SimpleNamespace(conf=conf), redis_url(DB))
    b.client = redis.Redis.from_url(redis_url(DB), protocol=request.param)
    yield b
    b.close()


def subscribers(r: redis.Redis, task_id: str) -> int:
    return dict(r.pubsub_numsub(CHANNEL + task_id))[(CHANNEL + task_id).encode()]


def test_waits_wake_on_publish_and_unsubscribe_the_last_channel(backend):
    r = redis.Redis.from_url(redis_url(DB))
    for i in range(3):
        threading.Timer(0.1, backend.mark_as_done, (f"w{i}", i)).start()
        start = time.monotonic()
        assert backend.wait_for(f"w{i}", timeout=5)["result"] == i
        assert time.monotonic() - start < 0.6  # woken, not found by the once-a-second read
        assert subscribers(r, f"w{i}") == 1  # kept until the next wait, which ends it
        if i:
            assert subscribers(r, f"w{i - 1}") == 0


def test_a_result_stored_before_the_wait_is_read_and_later_messages_are_skipped(backend):
    backend.mark_as_done("early", "x")
    assert backend.wait_for("early", timeout=1)["result"] == "x"
    backend.mark_as_done("early", "published to a channel still subscribed")
    backend.mark_as_done("next", "y")
    assert backend.wait_for("next", timeout=1)["result"] == "y"


def test_intermediate_states_are_skipped_and_a_timeout_leaves_the_connection_usable(backend):
    backend.mark_as_started("s1")
    with pytest.raises(TimeoutError):
        backend.wait_for("s1", timeout=0.3)
    threading.Timer(0.1, backend.store_result, ("s1", {"p": 1}, "PROGRESS")).start()
    threading.Timer(0.2, backend.mark_as_failure, ("s1", ValueError("bad"))).start()
    assert backend.wait_for("s1", timeout=5)["status"] == "FAILURE"
    threading.Timer(0.1, backend.mark_as_done, ("s2", 2)).start()
    assert backend.wait_for("s2", timeout=5)["result"] == 2


def test_a_killed_waiting_connection_is_replaced(backend):
    backend.mark_as_done("k0", 0)
    assert backend.wait_for("k0", timeout=1)["result"] == 0
    host, port = backend._local.waiter._sock.getsockname()[:2]
    redis.Redis.from_url(redis_url(DB)).client_kill(f"{host}:{port}")  # the waiting connection
    threading.Timer(0.2, backend.mark_as_done, ("k1", 1)).start()
    assert backend.wait_for("k1", timeout=5)["result"] == 1


def _private_backend(server):
    conf = Conf(result_serializer="json", result_accept_content=None, accept_content=["json"],
                result_expires=86400, result_extended=False, result_backend_transport_options={},
                redis_backend_use_ssl=None)
    return RedisBackend(SimpleNamespace(conf=conf), server.url(0))


def test_redis_down_while_waiting_is_retried_then_a_clear_error(caplog):
    """Not a silent wait forever: warnings, then BackendGetMetaError once the backend's
    retries are spent; a timeout still ends it first; Redis back in time: the result."""
    from celeriac.exceptions import BackendGetMetaError
    from redis_server import RedisServer

    with RedisServer() as server:
        b = _private_backend(server)
        b.default_retries = 3  # 0.05 + 0.1 + 0.2 s of pauses (19 by default: ~15 s)
        b.mark_as_done("up", 1)
        assert b.wait_for("up", timeout=2)["result"] == 1
        server.stop()
        started = time.monotonic()
        with pytest.raises(BackendGetMetaError) as info:
            b.wait_for("down")
        assert time.monotonic() - started < 5 and info.value.task_id == "down"
        assert caplog.text.count("Result backend error, retry") == 3
        b.default_retries = 100
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            b.wait_for("down", timeout=0.5)
        assert time.monotonic() - started < 2.5
        threading.Timer(0.3, server.start).start()
        writer = _private_backend(server)
        threading.Timer(1.5, writer.mark_as_done, ("back", 2)).start()
        assert b.wait_for("back", timeout=20)["result"] == 2
        b.close()
        writer.close()
