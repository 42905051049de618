"""The memcached result backend against a real memcached on 127.0.0.1:11211."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("pymemcache")

from celeriac import Celery, states  # noqa: E402
from celeriac.backends.cache import (  # noqa: E402
    MAX_RELATIVE_TTL,
    CacheBackend,
    memcache_ttl,
    parse_servers,
)
from celeriac.exceptions import ChordError, OperationalError  # noqa: E402
from celeriac.result import AsyncResult  # noqa: E402
from tests.services import require_service  # noqa: E402

URL = "cache+memcached://127.0.0.1:11211/"


def tid() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def make_backend() -> Iterator[Any]:
    require_service("memcached", "127.0.0.1", 11211)
    made: list[tuple[Celery, CacheBackend]] = []

    def make(**settings: Any) -> CacheBackend:
        app = Celery("cachetests", broker="memory://", backend="memory://", set_as_current=False,
                     **settings)
        backend = CacheBackend(app, URL)
        made.append((app, backend))
        return backend

    yield make
    for app, backend in made:
        backend.close()
        app.close()


@pytest.fixture
def backend(make_backend: Any) -> CacheBackend:
    return make_backend()


# -- unit ------------------------------------------------------------------------------------------

def test_parse_servers() -> None:
    assert parse_servers("cache+memcached://127.0.0.1:11211/") == [("127.0.0.1", 11211)]
    assert parse_servers("cache+memcached://a:1;b:2/") == [("a", 1), ("b", 2)]
    assert parse_servers("cache+memcached://[::1]:11212/") == [("::1", 11212)]
    assert parse_servers("cache+memcached://host/") == [("host", 11211)]
    assert parse_servers("cache+memcached:///") == [("127.0.0.1", 11211)]


def test_long_ttls_become_unix_times() -> None:
    assert memcache_ttl(None) == 0 and memcache_ttl(0) == 0
    assert memcache_ttl(3600) == 3600
    assert abs(memcache_ttl(MAX_RELATIVE_TTL + 10) - (time.time() + MAX_RELATIVE_TTL + 10)) < 5


def test_an_unreachable_server_is_an_operational_error() -> None:
    app = Celery("x", broker="memory://", backend="memory://", set_as_current=False,
                 cache_backend_options={"connect_timeout": 0.2, "timeout": 0.2})
    backend = CacheBackend(app, "cache+memcached://127.0.0.1:1/")
    with pytest.raises(OperationalError):
        backend.get_task_meta("x")


# -- against memcached -----------------------------------------------------------------------------

def test_round_trip_in_celerys_key(backend: CacheBackend) -> None:
    task_id = tid()
    assert backend.get_task_meta(task_id)["status"] == states.PENDING
    backend.mark_as_done(task_id, {"a": 1})
    assert backend.client.get(f"celery-task-meta-{task_id}").startswith(b'{"status": "SUCCESS"')
    assert AsyncResult(task_id, backend=backend, app=backend.app).get(timeout=1) == {"a": 1}
    failed = tid()
    backend.mark_as_failure(failed, KeyError("k"))
    with pytest.raises(KeyError):
        AsyncResult(failed, backend=backend, app=backend.app).get(timeout=1)
    metas = backend.get_many_metas([task_id, failed, "missing"])
    assert [m["status"] for m in metas] == ["SUCCESS", "FAILURE", "PENDING"]
    backend.forget(task_id)
    assert backend.get_task_meta(task_id)["status"] == states.PENDING


def test_result_expires_is_the_ttl(make_backend: Any) -> None:
    backend = make_backend(result_expires=1)
    task_id = tid()
    backend.mark_as_done(task_id, 1)
    assert backend.get_task_meta(task_id)["status"] == states.SUCCESS
    time.sleep(2.1)  # memcached counts whole seconds
    assert backend.get_task_meta(task_id)["status"] == states.PENDING


def test_groups_and_store_many(backend: CacheBackend) -> None:
    group_id, a, b = tid(), tid(), tid()
    backend.store_many([backend.make_meta(a, 1, states.SUCCESS), backend.make_meta(b, 2, states.SUCCESS)])
    saved = [[group_id, None], [[[a, None], None], [[b, None], None]]]
    backend.save_group(group_id, saved)
    assert backend.get_group(group_id) == saved
    backend.delete_group(group_id)
    assert backend.get_group(group_id) is None


def test_wait_for(backend: CacheBackend) -> None:
    task_id = tid()
    threading.Timer(0.2, backend.mark_as_done, (task_id, "late")).start()
    assert backend.wait_for(task_id, timeout=10, interval=0.05)["result"] == "late"


def test_celery_reads_our_results_and_we_read_celerys(backend: CacheBackend) -> None:
    import celery

    their_app = celery.Celery("theirs", backend=URL, set_as_default=False)
    theirs = their_app.backend
    mine = tid()
    backend.mark_as_failure(mine, ValueError("v"))
    assert isinstance(theirs.get_task_meta(mine)["result"], ValueError)
    their_id = tid()
    theirs.store_result(their_id, [1, 2], "SUCCESS")
    assert backend.get_task_meta(their_id)["result"] == [1, 2]
    their_app.close()


def test_chord_counts_each_part_once_in_group_order(backend: CacheBackend) -> None:
    group_id = tid()
    backend.chord_init(group_id, 3)
    assert backend.client.get(f"chord-unlock-{group_id}") == b"0"  # Celery's counter
    assert backend.chord_part_done(group_id, "c", 2, states.SUCCESS, "C") is None
    assert backend.chord_part_done(group_id, "a", 0, states.FAILURE, KeyError("k")) is None
    assert backend.chord_part_done(group_id, "a", 0, states.FAILURE, KeyError("k")) is None
    parts = backend.chord_part_done(group_id, "b", 1, states.SUCCESS, "B")
    assert parts == [
        ("a", "FAILURE", {"exc_type": "KeyError", "exc_message": ["k"], "exc_module": "builtins"}),
        ("b", "SUCCESS", "B"), ("c", "SUCCESS", "C")]
    assert backend.chord_part_done(group_id, "b", 1, states.SUCCESS, "B") is None  # claimed
    assert backend.chord_complete(group_id)
    assert backend.chord_part_done(group_id, "b", 1, states.SUCCESS, "B") is None  # done


def test_chord_without_group_indexes_and_a_lapsed_claim(backend: CacheBackend) -> None:
    group_id = tid()
    backend.chord_init(group_id, 2)
    assert backend.chord_part_done(group_id, "x", None, states.SUCCESS, 1) is None
    assert backend.chord_part_done(group_id, "x", None, states.SUCCESS, 1) is None
    assert backend.chord_part_done(group_id, "y", None, states.SUCCESS, 2) is not None
    backend._claims.clear()  # the claimer died before sending the body
    backend.client.delete(f"celeriac-chord-claim-{group_id}")  # ... and its claim ran out
    assert backend.chord_part_done(group_id, "y", None, states.SUCCESS, 2) == [
        ("x", "SUCCESS", 1), ("y", "SUCCESS", 2)]


def test_chord_size_from_a_group_saved_by_celery(backend: CacheBackend) -> None:
    group_id = tid()
    backend.save_group(group_id, [[group_id, None], [[["a", None], None], [["b", None], None]]])
    backend.client.set(f"chord-unlock-{group_id}", b"0")
    assert backend.chord_part_done(group_id, "a", 0, states.SUCCESS, 1) is None
    assert backend.chord_part_done(group_id, "b", 1, states.SUCCESS, 2) is not None


def test_evicted_chord_state_is_a_chord_error(backend: CacheBackend) -> None:
    group_id = tid()
    backend.chord_init(group_id, 2)
    backend.chord_part_done(group_id, "a", 0, states.SUCCESS, 1)
    backend.client.delete(f"celeriac-chord-part-{group_id}-0")
    with pytest.raises(ChordError, match="lost 1 of 2"):
        backend.chord_part_done(group_id, "b", 1, states.SUCCESS, 2)


def test_chord_parts_in_parallel_complete_once(backend: CacheBackend) -> None:
    group_id = tid()
    size = 12
    backend.chord_init(group_id, size)
    barrier = threading.Barrier(size)
    winners: list[Any] = []

    def part(index: int) -> None:
        barrier.wait()
        out = backend.chord_part_done(group_id, f"t{index}", index, states.SUCCESS, index)
        if out is not None:
            winners.append(out)

    threads = [threading.Thread(target=part, args=(i,)) for i in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(winners) == 1
    assert [value for _, _, value in winners[0]] == list(range(size))


def test_a_chord_through_a_real_worker(backend: CacheBackend) -> None:
    from celeriac.canvas import chord
    from celeriac.testing import start_worker

    app = Celery("cachechord", broker=f"memory://{uuid.uuid4().hex}", set_as_current=False)
    app._backend = CacheBackend(app, URL)  # the scheme -> class line is the lead's

    @app.task
    def double(x: int) -> int:
        return 2 * x

    @app.task
    def total(values: list[int]) -> int:
        return sum(values)

    with start_worker(app, pool="threads", concurrency=4):
        assert chord([double.s(i) for i in range(5)])(total.s()).get(timeout=20) == 20
    app.close()

