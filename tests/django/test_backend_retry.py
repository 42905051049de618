"""The django-db backend after its database connection is lost: with
`result_backend_always_retry` it closes the dead connection and runs the operation again on a new
one; without, it raises a clear error and the next call works (the dead connection was closed).

The connection is ended by the server itself (PostgreSQL's pg_terminate_backend, MariaDB's KILL),
as a database restart or a proxy's idle timeout would end it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from django.db import connections

from celeriac import Celery, states
from celeriac.contrib.django.backend import DatabaseBackend
from celeriac.exceptions import BackendGetMetaError, BackendStoreError

from .conftest import _empty_tables, use_alias

_SERVER_ID = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}
_KILL = {"postgresql": "SELECT pg_terminate_backend(%s)", "mysql": "KILL %s"}


@pytest.fixture(params=["postgresql", "mysql"])
def server(request: pytest.FixtureRequest) -> Iterator[str]:
    from . import routers

    use_alias(request.param)
    _empty_tables(request.param)
    yield request.param
    connections[request.param].close()
    _empty_tables(request.param)
    routers.CURRENT = "default"


def make_backend(always_retry: bool) -> DatabaseBackend:
    app = Celery("djretry", broker="memory://", backend="memory://", set_as_current=False)
    app.conf.update(result_backend_always_retry=always_retry, result_backend_max_retries=3,
                    result_backend_base_sleep_between_retries_ms=1)
    return DatabaseBackend(app)


def end_connection(alias: str) -> None:
    """End the server side of `alias`'s open connection, from another connection."""
    with connections[alias].cursor() as cursor:
        cursor.execute(_SERVER_ID[alias])
        server_id = cursor.fetchone()[0]
    other = connections.create_connection(alias)
    try:
        with other.cursor() as cursor:
            cursor.execute(_KILL[alias] % int(server_id))
    finally:
        other.close()


def test_a_lost_connection_is_retried_on_a_new_one(server: str) -> None:
    backend = make_backend(always_retry=True)
    task_id = str(uuid.uuid4())
    backend.mark_as_done(task_id, {"n": 1})
    end_connection(server)
    assert backend.get_task_meta(task_id)["result"] == {"n": 1}
    end_connection(server)
    backend.mark_as_done(task_id2 := str(uuid.uuid4()), 2)
    end_connection(server)
    assert [m["status"] for m in backend.get_many_metas([task_id, task_id2])] == [states.SUCCESS] * 2
    end_connection(server)
    backend.save_group(group_id := str(uuid.uuid4()), [task_id, task_id2])
    end_connection(server)
    assert backend.get_group(group_id) == [task_id, task_id2]
    end_connection(server)
    backend.forget(task_id)
    assert backend.get_task_meta(task_id)["status"] == states.PENDING


def test_a_chord_part_counted_after_a_lost_connection_counts_once(server: str) -> None:
    backend = make_backend(always_retry=True)
    group_id, first, second = (str(uuid.uuid4()) for _ in range(3))
    backend.chord_init(group_id, 2)
    end_connection(server)
    backend.mark_as_done(first, 1)
    assert backend.chord_part_done(group_id, first, 0, states.SUCCESS, 1) is None
    end_connection(server)
    assert backend.chord_part_done(group_id, second, 1, states.SUCCESS, 2) == [
        (first, states.SUCCESS, 1), (second, states.SUCCESS, 2)]


def test_without_always_retry_the_error_is_raised_and_the_next_call_works(server: str) -> None:
    backend = make_backend(always_retry=False)
    task_id = str(uuid.uuid4())
    backend.mark_as_done(task_id, "kept")
    end_connection(server)
    with pytest.raises(BackendGetMetaError) as info:
        backend.get_task_meta(task_id)
    assert info.value.task_id == task_id
    assert backend.get_task_meta(task_id)["result"] == "kept"  # on a new connection
    end_connection(server)
    with pytest.raises(BackendStoreError):
        backend.mark_as_done(str(uuid.uuid4()), 1)
    backend.mark_as_done(task_id, "again")  # a stored SUCCESS is kept, as before
    assert backend.get_task_meta(task_id)["result"] == "kept"
