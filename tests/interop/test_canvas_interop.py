"""Canvases between real Celery 5.7 and celeriac on one Redis, both directions; chord joins
counted in Celery 5.7's key layout; a 1,000-member chord surviving a worker SIGKILL."""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Process, require_port, wait_for, write_module

pytestmark = pytest.mark.slow

URL = "redis://127.0.0.1:6379/12"
QUEUE = "canvas-interop"

TASKS = """
    import os
    import time

    import redis

    IMPL = os.environ.get("IMPL", "celeriac")
    if IMPL == "celery":
        from celery import Celery
    else:
        from celeriac import Celery
        from celeriac.canvas import register_builtin_tasks

    URL = os.environ["CANVAS_URL"]
    app = Celery("cv", broker=URL, backend=URL)
    app.conf.task_default_queue = os.environ["CANVAS_QUEUE"]
    app.conf.worker_hijack_root_logger = False
    app.conf.broker_transport_options = {
        "visibility_timeout": float(os.environ.get("CANVAS_VT", "3600")), "unacked_restore_interval": 1}
    if IMPL != "celery":
        register_builtin_tasks(app)  # harmless once the app registers them itself
    counter = redis.Redis.from_url(URL)


    @app.task(name="cv.add")
    def add(x, y):
        return x + y


    @app.task(name="cv.tsum")
    def tsum(values):
        counter.incr("cv:tsum")
        return sum(values)


    @app.task(name="cv.ident")
    def ident(value):
        return value


    @app.task(name="cv.fail")
    def fail(*args):
        raise ValueError("boom")


    @app.task(name="cv.on_error")
    def on_error(request, exc, traceback):
        counter.rpush("cv:errbacks", f"new:{request.id}:{type(exc).__name__}:{IMPL}")


    @app.task(name="cv.on_error_old")
    def on_error_old(task_id):
        counter.rpush("cv:errbacks", f"old:{task_id}")


    @app.task(name="cv.slow", acks_late=True)
    def slow(i):
        counter.incr("cv:slow")
        time.sleep(0.005)
        return i
"""


@pytest.fixture
def redis_db() -> Iterator[Any]:
    require_port("Redis", "127.0.0.1", 6379)
    import redis

    client = redis.Redis.from_url(URL)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_module(tmp_path, "cvtasks.py", TASKS)
    return tmp_path


@pytest.fixture
def sides(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    """(celery client module, celeriac client module): the same tasks, one per side."""
    monkeypatch.setenv("CANVAS_URL", URL)
    monkeypatch.setenv("CANVAS_QUEUE", QUEUE)

    def load(impl: str) -> Any:
        monkeypatch.setenv("IMPL", impl)
        spec = importlib.util.spec_from_file_location(f"cvtasks_{impl}", project / "cvtasks.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        return module

    celery_side, celeriac_side = load("celery"), load("celeriac")
    monkeypatch.delenv("IMPL")
    yield celery_side, celeriac_side
    celery_side.app.close()
    celeriac_side.app.close()


def start(project: Path, impl: str, name: str, *extra: str, vt: float = 3600) -> Process:
    env = {"IMPL": impl, "CANVAS_URL": URL, "CANVAS_QUEUE": QUEUE, "CANVAS_VT": str(vt)}
    common = ["-A", "cvtasks", "worker", "-l", "info", "-Q", QUEUE, "-n", f"{name}@%h"]
    if impl == "celery":
        proc = Process([*common, "-P", "solo", "--without-mingle", "--without-gossip", *extra],
                       project, env, name=f"celery-{name}", program=[sys.executable, "-m", "celery"])
    else:
        proc = Process([*common, "-P", "threads", "-c", "4", *extra], project, env, name=f"celeriac-{name}")
    proc.wait_for_log("ready.", timeout=60)
    return proc


def errbacks(redis_db: Any) -> list[str]:
    return [x.decode() for x in redis_db.lrange("cv:errbacks", 0, -1)]


@pytest.mark.parametrize("direction", ["celery->celeriac", "celeriac->celery"])
def test_canvases_across_implementations(direction: str, redis_db: Any, sides: Any, project: Path,
                                         processes: list[Process]) -> None:
    celery_side, celeriac_side = sides
    client, worker = (celery_side, "celeriac") if direction == "celery->celeriac" else (celeriac_side, "celery")
    canvas = sys.modules["celery"] if client is celery_side else importlib.import_module("celeriac.canvas")
    processes.append(start(project, worker, "w"))
    add, tsum, ident = client.add, client.tsum, client.ident

    result = (add.s(1, 2) | add.s(3) | add.s(4)).apply_async()
    assert result.get(timeout=20) == 10 and result.parent.get(timeout=5) == 6
    assert canvas.group(add.s(i, i) for i in range(10))().get(timeout=20) == [2 * i for i in range(10)]
    assert canvas.chord([add.s(i, i) for i in range(10)], tsum.s())().get(timeout=20) == 90
    assert canvas.chord([add.s(1, 1), add.s(2, 2)])(ident.s()).get(timeout=20) == [2, 4]
    # a chain ending in a chord: the worker that runs add(1, 2) expands the chord itself
    ending = canvas.chain(add.s(1, 2), canvas.chord([add.s(10), add.s(20)], tsum.s())).apply_async()
    assert ending.get(timeout=20) == 36
    # a group followed by a task in a chain (a chord), then a task after the chord's body
    upgraded = (add.s(1, 1) | canvas.group(add.s(1), add.s(2)) | tsum.s() | add.s(100)).apply_async()
    assert upgraded.get(timeout=20) == 107
    assert int(redis_db.get("cv:tsum")) == 3

    # errbacks: the new-style one runs in the failing worker, the old one is sent a task id
    failing = client.fail.s()
    failing.link_error(client.on_error.s())
    failing.link_error(client.on_error_old.s())
    failed = failing.apply_async()
    with pytest.raises(ValueError):
        failed.get(timeout=20)
    wait_for(lambda: {f"new:{failed.id}:ValueError:{worker}", f"old:{failed.id}"} <= set(errbacks(redis_db)),
             20, message="both errbacks")

    # a failing chord member fails the chord and runs the body's errback
    bad = canvas.chord([add.s(1, 1), client.fail.s()], tsum.s().on_error(client.on_error.s()))()
    with pytest.raises(Exception) as info:
        bad.get(timeout=20, follow_parents=False)
    assert type(info.value).__name__ == "ChordError"
    assert f"Dependency {bad.parent.results[1].id} raised" in str(info.value)
    wait_for(lambda: any(e.startswith(f"new:{bad.id}:ChordError") for e in errbacks(redis_db)), 20,
             message="the chord body's errback")


@pytest.mark.parametrize("client_impl", ["celery", "celeriac"])
def test_chord_headers_shared_by_a_mixed_fleet_join_once(client_impl: str, redis_db: Any, sides: Any,
                                                        project: Path, processes: list[Process]) -> None:
    celery_side, celeriac_side = sides
    processes.append(start(project, "celery", "cw"))
    processes.append(start(project, "celeriac", "nw"))
    client = celery_side if client_impl == "celery" else celeriac_side
    canvas = sys.modules["celery"] if client is celery_side else importlib.import_module("celeriac.canvas")
    results = [canvas.chord([client.add.s(i, i) for i in range(100)], client.tsum.s())() for _ in range(5)]
    assert [r.get(timeout=60) for r in results] == [9900] * 5
    time.sleep(0.5)
    assert int(redis_db.get("cv:tsum")) == 5  # each body exactly once


def test_chord_of_1000_survives_a_worker_sigkill(redis_db: Any, sides: Any, project: Path,
                                                 processes: list[Process]) -> None:
    _, celeriac_side = sides
    from celeriac.canvas import chord

    first = start(project, "celeriac", "a", vt=3)
    processes.append(first)
    result = chord([celeriac_side.slow.s(i) for i in range(1000)], celeriac_side.tsum.s())()
    wait_for(lambda: int(redis_db.get("cv:slow") or 0) >= 300, 30, interval=0.01, message="300 parts")
    first.kill()  # SIGKILL mid-way: its prefetched and running (acks_late) tasks are unacked
    ran_before = int(redis_db.get("cv:slow"))
    assert ran_before < 1000
    processes.append(start(project, "celeriac", "b", vt=3))
    assert result.get(timeout=60) == sum(range(1000))
    time.sleep(1)
    assert int(redis_db.get("cv:tsum")) == 1  # the body ran once, despite redelivered parts
    assert result.parent.completed_count() == 1000
    assert int(redis_db.get("cv:slow")) >= 1000  # more when parts in flight ran again


def test_redis_chord_counters(redis_db: Any) -> None:
    from celeriac import Celery
    from celeriac.backends.redis import RedisBackend
    from tests.unit.test_canvas import check_chord_counter, check_chord_counter_threads

    backend = RedisBackend(Celery("cv", broker="memory://", backend=URL), URL)
    check_chord_counter(backend)
    check_chord_counter_threads(backend)
