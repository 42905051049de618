"""`result_backend_always_retry` and its three companions, against a private Redis that the
tests stop and start again (no mocks): as Celery 5.x, a backend operation that fails on an error
safe to retry is run again with full-jitter exponential backoff, up to
`result_backend_max_retries`, then `BackendStoreError` / `BackendGetMetaError` is raised.
With the setting off, the Redis backend keeps its own short retries (about 15 s)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from celeriac import Celery, states
from celeriac.backends.redis import RedisBackend
from celeriac.exceptions import (
    BackendError,
    BackendGetMetaError,
    BackendStoreError,
    OperationalError,
)
from tests.helpers import start_worker, wait_for, write_module
from tests.redis_server import RedisServer


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A private redis-server on a free port (skipped, or failed under
    CELERIAC_REQUIRE_SERVICES=1, when redis-server is not installed)."""
    srv = RedisServer()
    srv.start()
    yield srv
    srv.cleanup()


def make_backend(server: RedisServer, **settings: object) -> RedisBackend:
    app = Celery("always_retry", broker="memory://", backend=server.url(0))
    app.conf.update(settings)
    backend = app.backend
    assert isinstance(backend, RedisBackend)
    return backend


def restart_later(server: RedisServer, delay: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), server.start()), daemon=True)
    thread.start()
    return thread


def test_store_issued_while_redis_is_down_lands_when_it_is_back(server: RedisServer) -> None:
    backend = make_backend(server, result_backend_always_retry=True,
                           result_backend_base_sleep_between_retries_ms=10,
                           result_backend_max_sleep_between_retries_ms=200)
    task_id = str(uuid.uuid4())
    backend.store_result(task_id, 1, states.STARTED)  # connected before the outage
    server.stop()
    started = time.monotonic()
    thread = restart_later(server, 1.5)
    backend.store_result(task_id, 42, states.SUCCESS)
    waited = time.monotonic() - started
    thread.join()
    assert waited >= 1.4  # it did wait for Redis, and ...
    assert waited < 5  # ... went on soon after (pauses capped at 0.2 s)
    meta = backend.get_task_meta(task_id)
    assert (meta["status"], meta["result"]) == (states.SUCCESS, 42)
    assert server.client().get("celery-task-meta-" + task_id) is not None
    backend.close()


def test_read_and_forget_also_wait_for_redis(server: RedisServer) -> None:
    backend = make_backend(server, result_backend_always_retry=True,
                           result_backend_max_sleep_between_retries_ms=200)
    task_id = str(uuid.uuid4())
    backend.store_result(task_id, "x", states.SUCCESS)
    server.stop()
    thread = restart_later(server, 1.0)
    # The restarted server is empty (no persistence): the read finds nothing, but it is a
    # successful read, not an error.
    assert backend.get_task_meta(task_id)["status"] == states.PENDING
    thread.join()
    server.stop()
    thread = restart_later(server, 0.5)
    backend.forget(task_id)
    thread.join()
    backend.close()


def test_gives_up_after_max_retries_with_a_clear_error(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    backend = make_backend(server, result_backend_always_retry=True, result_backend_max_retries=3,
                           result_backend_base_sleep_between_retries_ms=10,
                           result_backend_max_sleep_between_retries_ms=50)
    server.stop()
    task_id = str(uuid.uuid4())
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="celeriac.backends"):
        with pytest.raises(BackendStoreError) as stored:
            backend.store_result(task_id, 42, states.SUCCESS)
    assert time.monotonic() - started < 3
    error = stored.value
    assert (error.task_id, error.state) == (task_id, states.SUCCESS)
    assert isinstance(error, OperationalError)  # what the backend raised before
    assert isinstance(error.__cause__, redis.ConnectionError)
    assert "after 3 retries" in str(error) and str(server.port) in str(error)
    retries = [r for r in caplog.records if "Result backend error, retry" in r.getMessage()]
    assert len(retries) == 3

    with pytest.raises(BackendGetMetaError) as read:
        backend.get_task_meta(task_id)
    assert read.value.task_id == task_id
    with pytest.raises(BackendError):
        backend.forget(task_id)
    backend.close()


def test_off_keeps_the_backends_own_short_retries(server: RedisServer) -> None:
    backend = make_backend(server)  # result_backend_always_retry is False by default
    assert not backend.always_retry
    task_id = str(uuid.uuid4())
    # A restart shorter than the Redis backend's own window (about 15 s) is ridden out, as before.
    backend.store_result(task_id, 1, states.STARTED)
    server.stop()
    restart_later(server, 1.0)
    backend.store_result(task_id, 2, states.SUCCESS)  # returns once Redis is back
    assert backend.get_task_meta(task_id)["result"] == 2
    # Past it, the error is raised and result_backend_max_retries does not apply. (Two
    # retries instead of 19 here, so the test takes 0.15 s rather than 15.)
    server.stop()
    backend.default_retries = 2
    started = time.monotonic()
    with pytest.raises(BackendStoreError) as stored:
        backend.store_result(task_id, 3, states.SUCCESS)
    assert time.monotonic() - started < 2
    assert "after 2 retries" in str(stored.value)
    backend.close()


@pytest.mark.parametrize("always_retry", [True, False])
def test_errors_not_safe_to_retry_are_raised_at_once(server: RedisServer, always_retry: bool) -> None:
    backend = make_backend(server, result_backend_always_retry=always_retry)
    task_id = str(uuid.uuid4())
    server.client().rpush("celery-task-meta-" + task_id, "not a string")  # GET: WRONGTYPE
    started = time.monotonic()
    with pytest.raises(redis.ResponseError):
        backend.get_task_meta(task_id)
    assert time.monotonic() - started < 0.5
    backend.close()


def write_tasks(project: Path, server: RedisServer, sleep: float, **settings: object) -> Any:
    """Write and import tasks.py: an app on a SQLite broker with `server` as its backend and
    `settings`, and `slow(x)`, which sleeps `sleep` seconds and returns 2x."""
    write_module(project, "tasks.py", f"""
        import time
        from celeriac import Celery

        app = Celery('tasks', broker='sqlite:///{project}/broker.db', backend='{server.url(0)}')
        app.conf.update({settings!r})

        @app.task
        def slow(x):
            time.sleep({sleep})
            return x * 2
    """)
    import tasks  # type: ignore[import-not-found]

    return tasks


@pytest.mark.slow
def test_worker_stores_the_result_after_its_redis_restarts(
    server: RedisServer, project: Path, processes: list
) -> None:
    """Through a real worker (solo pool, SQLite broker): the backend's Redis goes away while a
    task runs and comes back 3 s later; that task's result lands, and the next task runs."""
    tasks = write_tasks(project, server, 1.0, result_backend_always_retry=True,
                        result_backend_max_sleep_between_retries_ms=300)
    worker = start_worker(project, "tasks", "-P", "solo")
    processes.append(worker)
    first = tasks.slow.delay(21)
    worker.wait_for_log(f"[{first.id}] received")
    server.stop()
    time.sleep(3.0)
    second = tasks.slow.delay(5)  # sent while the backend is down: the broker is SQLite
    server.start()
    client = server.client()
    wait_for(lambda: client.exists("celery-task-meta-" + second.id), timeout=15,
             message="the second result")
    assert first.get(timeout=5) == 42
    assert second.get(timeout=5) == 10
    assert "retry 1 of inf" in worker.log  # Celery's policy (the backend's own says "of 19")
    assert "Internal error" not in worker.log
    worker.stop()


@pytest.mark.slow
def test_worker_logs_a_result_it_cannot_store_and_goes_on(
    server: RedisServer, project: Path, processes: list
) -> None:
    """Retries spent (result_backend_max_retries=2): the worker logs the BackendStoreError as
    an internal error, as it did the OperationalError before, and runs the next task."""
    tasks = write_tasks(project, server, 0.5, result_backend_always_retry=True, result_backend_max_retries=2,
                        result_backend_max_sleep_between_retries_ms=50)
    worker = start_worker(project, "tasks", "-P", "solo")
    processes.append(worker)
    first = tasks.slow.delay(21)
    worker.wait_for_log(f"[{first.id}] received")
    server.stop()
    worker.wait_for_log(f"Internal error running tasks.slow[{first.id}]: BackendStoreError(")
    server.start()
    second = tasks.slow.delay(5)
    assert second.get(timeout=10) == 10
    assert first.state == states.PENDING  # that result is lost, as before
    assert worker.proc.poll() is None
    worker.stop()


@pytest.mark.parametrize(("always_retry", "retries"), [(True, 2), (False, 3)])
def test_database_backend_retries_its_connection_errors(always_retry: bool, retries: int) -> None:
    """The SQL backend names its own safe errors (SQLAlchemy's OperationalError): a PostgreSQL
    port where nothing listens fails every try; off, its own 3 retries apply, as before."""
    pytest.importorskip("sqlalchemy")
    from tests.redis_server import free_port

    app = Celery("db_retry", broker="memory://",
                 backend=f"db+postgresql://postgres@127.0.0.1:{free_port()}/none")
    app.conf.update(database_create_tables_at_setup=False, result_backend_always_retry=always_retry,
                    result_backend_max_retries=2, result_backend_max_sleep_between_retries_ms=50)
    backend = app.backend
    backend._prepared = True  # skip create_tables' own race retries: this is about _run's
    started = time.monotonic()
    with pytest.raises(BackendGetMetaError) as read:
        backend.get_task_meta("abc")
    assert time.monotonic() - started < 3
    assert f"after {retries} retries" in str(read.value) and read.value.task_id == "abc"
    with pytest.raises(BackendStoreError):
        backend.store_result("abc", 1, states.SUCCESS)
    backend.close()
