"""The Redis result backend against a real Redis (db 12), and against Celery 5.7's client."""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from celeriac import states  # noqa: E402
from celeriac.backends.redis import RedisBackend  # noqa: E402
from celeriac.exceptions import TimeoutError  # noqa: E402
from redis_server import RedisServer, redis_url, require_redis  # noqa: E402

pytestmark = pytest.mark.redis
DB = 12


class Conf(dict):
    """The few settings a backend reads, by attribute and by `get`."""

    def __getattr__(self, name):
        return self.get(name)


def make_backend(url: str = redis_url(DB), **settings) -> RedisBackend:
    conf = Conf(result_serializer="json", result_accept_content=None, accept_content=["json"],
                result_expires=86400, result_extended=False, result_backend_transport_options={},
                redis_backend_use_ssl=None)
    conf.update(settings)
    return RedisBackend(SimpleNamespace(conf=conf), url)


@pytest.fixture
def r():
    return require_redis(DB)


@pytest.fixture
def backend(r):
    b = make_backend()
    yield b
    b.close()


def test_result_is_setex_and_published_in_celerys_shape(r, backend):
    listener = r.pubsub()
    listener.subscribe("celery-task-meta-t1")
    listener.get_message(timeout=1)
    backend.mark_as_done("t1", {"ü": [1, 2]})
    raw = r.get("celery-task-meta-t1")
    meta = json.loads(raw)
    assert list(meta) == ["status", "result", "traceback", "children", "date_done", "task_id"]
    assert meta["status"] == "SUCCESS" and meta["result"] == {"ü": [1, 2]} and meta["task_id"] == "t1"
    assert 86390 < r.ttl("celery-task-meta-t1") <= 86400
    message = listener.get_message(timeout=1)
    assert message["data"] == raw
    listener.close()


def test_no_expiry_means_plain_set(r):
    backend = make_backend(result_expires=None)
    backend.mark_as_done("forever", 1)
    assert r.ttl("celery-task-meta-forever") == -1


def test_store_many_is_one_pipeline(r, backend):
    metas = [backend.make_meta(f"m{i}", i, states.SUCCESS) for i in range(50)]
    backend.store_many(metas)
    assert [m["result"] for m in backend.get_many_metas([f"m{i}" for i in range(50)])] == list(range(50))
    assert backend.get_many_metas(["nope"])[0]["status"] == states.PENDING


def test_wait_for_wakes_on_publish(backend):
    timer = threading.Timer(0.2, backend.mark_as_done, ("w1", 42))
    start = time.monotonic()
    timer.start()
    meta = backend.wait_for("w1", timeout=5)
    assert meta["result"] == 42 and 0.15 < time.monotonic() - start < 0.5


def test_wait_for_finds_a_result_written_before(backend):
    backend.mark_as_done("early", "x")
    assert backend.wait_for("early", timeout=0.5)["result"] == "x"


def test_wait_for_skips_non_ready_states_and_times_out(backend):
    backend.mark_as_started("s1")
    with pytest.raises(TimeoutError):
        backend.wait_for("s1", timeout=0.3)
    threading.Timer(0.1, backend.store_result, ("s1", {"p": 1}, "PROGRESS")).start()
    threading.Timer(0.2, backend.mark_as_failure, ("s1", ValueError("bad"))).start()
    meta = backend.wait_for("s1", timeout=5)
    assert meta["status"] == "FAILURE"
    assert meta["result"] == {"exc_type": "ValueError", "exc_message": ["bad"], "exc_module": "builtins"}


def test_round_trip_is_fast(backend):
    # The waiter's PUB/SUB connection is kept between calls: no reconnect per get().
    times = []
    for i in range(50):
        threading.Thread(target=backend.mark_as_done, args=(f"rt{i}", i)).start()
        start = time.perf_counter()
        backend.wait_for(f"rt{i}", timeout=2)
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.005


def test_global_keyprefix_and_forget(r):
    backend = make_backend(result_backend_transport_options={"global_keyprefix": "p"})
    backend.mark_as_done("k", 1)
    assert r.exists("p_celery-task-meta-k")
    assert backend.wait_for("k", timeout=1)["result"] == 1
    backend.forget("k")
    assert not r.exists("p_celery-task-meta-k")
    assert make_backend(result_backend_transport_options={"global_keyprefix": "q:"})._group_key("g") == "q:celery-taskset-meta-g"


def test_group_save_and_restore(r, backend):
    tuple_form = [["g1", None], [[["a", None], None], [["b", None], None]]]
    backend.save_group("g1", tuple_form)
    assert json.loads(r.get("celery-taskset-meta-g1")) == {"result": tuple_form}
    assert backend.get_group("g1") == tuple_form
    backend.delete_group("g1")
    assert backend.get_group("g1") is None


def test_chord_counts_once_and_hands_results_to_one_caller(r, backend):
    backend.chord_init("c1", 3)
    assert r.get("celery-taskset-meta-c1.s") == b"3" and r.ttl("celery-taskset-meta-c1.s") > 86000
    assert backend.chord_part_done("c1", "t2", 2, "SUCCESS", "two") is None
    assert backend.chord_part_done("c1", "t0", 0, "SUCCESS", {"z": 0}) is None
    assert backend.chord_part_done("c1", "t0", 0, "SUCCESS", "again") is None  # redelivered: counted once
    results = backend.chord_part_done("c1", "t1", 1, "FAILURE", KeyError("k"))
    assert results == [("t0", "SUCCESS", {"z": 0}), ("t1", "FAILURE",
                        {"exc_type": "KeyError", "exc_message": ["k"], "exc_module": "builtins"}), ("t2", "SUCCESS", "two")]
    assert r.zcard("celery-taskset-meta-c1.j") == 3 and r.scard("celery-taskset-meta-c1.d") == 3
    assert backend.chord_part_done("c1", "t1", 1, "SUCCESS", 1) is None  # claimed: nobody else
    assert backend.chord_complete("c1")
    assert r.get("celery-taskset-meta-c1.c") == b"done"
    assert not r.exists("celery-taskset-meta-c1.j", "celery-taskset-meta-c1.s", "celery-taskset-meta-c1.d")
    assert backend.chord_part_done("c1", "t1", 1, "SUCCESS", 1) is None


def test_chord_claim_expires_when_the_claimer_dies(r, backend):
    backend.claim_seconds = 1
    backend.chord_init("c2", 1)
    assert backend.chord_part_done("c2", "t0", 0, "SUCCESS", 1) == [("t0", "SUCCESS", 1)]
    time.sleep(1.1)  # never completed: a redelivered header task may claim it again
    assert backend.chord_part_done("c2", "t0", 0, "SUCCESS", 1) == [("t0", "SUCCESS", 1)]


def test_unordered_chord_and_added_parts(r):
    backend = make_backend(result_backend_transport_options={"result_chord_ordered": False})
    backend.chord_init("c3", 1)
    backend.chord_add("c3")
    assert backend.chord_part_done("c3", "a", None, "SUCCESS", 1) is None
    assert backend.chord_part_done("c3", "b", None, "SUCCESS", 2) == [("a", "SUCCESS", 1), ("b", "SUCCESS", 2)]
    assert r.type("celery-taskset-meta-c3.j") == b"list"


def test_celery_client_reads_our_results_and_we_read_celerys(r, backend):
    celery = pytest.importorskip("celery")
    app = celery.Celery("interop", broker="memory://", backend=redis_url(DB))
    try:
        backend.mark_as_done("ours", {"n": [1, "ü"]})
        assert app.AsyncResult("ours").get(timeout=2) == {"n": [1, "ü"]}
        backend.mark_as_failure("ours-err", ValueError("bad value"))
        with pytest.raises(ValueError, match="bad value"):
            app.AsyncResult("ours-err").get(timeout=2)
        # A Celery worker's writes, read by us (and a wait woken by its PUBLISH).
        threading.Timer(0.2, app.backend.store_result, ("theirs", [1, 2], "SUCCESS")).start()
        assert backend.wait_for("theirs", timeout=3)["result"] == [1, 2]
        app.backend.store_result("theirs-err", KeyError("x"), "FAILURE")
        assert backend.get_task_meta("theirs-err")["result"]["exc_type"] == "KeyError"
    finally:
        app.close()


def test_password_server_and_restart():
    with RedisServer(password="332572", appendonly=True) as server:
        backend = make_backend(f"redis://:332572@127.0.0.1:{server.port}/1")
        backend.mark_as_done("before", 1)
        server.restart()
        assert backend.get_task_meta("before")["result"] == 1  # reconnected; data kept
        threading.Timer(0.3, backend.mark_as_done, ("after", 2)).start()
        assert backend.wait_for("after", timeout=5)["result"] == 2
        backend.close()
