"""A client whose broker is down: `delay()` retries as task_publish_retry_policy says (Celery:
3 retries over ~0.6 s), then raises OperationalError naming the masked URL, instead of
blocking for the worker's connection retries (100, ~3 minutes). A broker back within the
policy's retries gets the message once."""

from __future__ import annotations

import threading
import time

import pytest

from celeriac import Celery
from celeriac.exceptions import OperationalError
from tests.redis_server import RedisServer, free_port


def _app(broker: str, **settings: object) -> Celery:
    app = Celery("pubretry", broker=broker)
    app.conf.update(settings)

    @app.task(name="pubretry.add")
    def add(x: int, y: int) -> int:
        return x + y

    return app


@pytest.mark.parametrize("scheme", ["redis://:secret@127.0.0.1:{port}/0", "amqp://guest:secret@127.0.0.1:{port}//"])
def test_broker_down_fails_after_the_publish_policy(scheme: str, caplog: pytest.LogCaptureFixture) -> None:
    app = _app(scheme.format(port=free_port()))
    add = app.tasks["pubretry.add"]
    started = time.monotonic()
    with pytest.raises(OperationalError) as info:
        add.delay(1, 2)
    took = time.monotonic() - started
    assert 0.5 <= took < 5, took  # waits 0 + 0.2 + 0.4 s between its 4 tries
    assert ":**@127.0.0.1" in str(info.value) and "secret" not in str(info.value)
    assert "secret" not in caplog.text
    assert caplog.text.count("retry ") == 3, caplog.text

    caplog.clear()
    started = time.monotonic()
    with pytest.raises(OperationalError):
        add.apply_async((1, 2), retry=False)
    assert time.monotonic() - started < 0.5
    assert "retry " not in caplog.text

    app.conf.task_publish_retry_policy = {"max_retries": 1, "interval_start": 0.3}
    started = time.monotonic()
    with pytest.raises(OperationalError):
        add.delay(1, 2)
    assert 0.3 <= time.monotonic() - started < 2


def test_broker_back_within_the_policy_gets_the_message_once() -> None:
    with RedisServer() as server:
        app = _app(server.url(1))
        add = app.tasks["pubretry.add"]
        add.delay(0, 0)  # connected, the queue's bindings written
        server.stop()
        restarter = threading.Timer(0.5, server.start)
        restarter.start()
        try:
            started = time.monotonic()
            result = add.apply_async((1, 2), retry_policy={"max_retries": 60, "interval_start": 0.05,
                                                            "interval_step": 0, "interval_max": 0.05})
            assert time.monotonic() - started >= 0.4  # it did wait for the server
        finally:
            restarter.join()
        bodies = server.client(1).lrange("celery", 0, -1)
        assert len(bodies) == 1 and result.id.encode() in bodies[0]  # the restart lost the first
        with pytest.raises(OperationalError):  # the setting alone still gives up
            server.stop()
            add.delay(3, 4)
