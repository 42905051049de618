"""Beyond Celery on Redis, through real worker processes: far-off ETAs are kept in Redis (not in
worker memory, not in `unacked`), run exactly once, and survive a worker's death; a SIGKILLed
worker's acks_late task is restored by the live fleet once its heartbeat lapses."""

from __future__ import annotations

import importlib
import time
from pathlib import Path

import pytest

from tests.helpers import Process, require_port, start_worker, wait_for, write_module

pytestmark = pytest.mark.slow
URL = "redis://127.0.0.1:6379/11"


@pytest.fixture
def rdb() -> object:
    require_port("Redis", "127.0.0.1", 6379)
    import redis

    client = redis.Redis.from_url(URL)
    client.flushdb()
    yield client
    client.flushdb()


def _tasks(project: Path) -> object:
    write_module(project, "tasks.py", f"""
        import os, time
        import redis
        from celeriac import Celery

        app = Celery('durable', broker='{URL}', backend='{URL}')
        app.conf.broker_transport_options = {{'visibility_timeout': 2, 'heartbeat_ttl': 2}}
        marks = redis.Redis.from_url('{URL}')

        @app.task(bind=True)
        def mark(self):
            marks.rpush('runs', self.request.id)

        @app.task(bind=True, acks_late=True)
        def slow(self, seconds):
            marks.rpush('started', os.getpid())
            time.sleep(seconds)
            marks.rpush('runs', self.request.id)
    """)
    return importlib.import_module("tasks")


def test_eta_beyond_visibility_timeout_runs_once(project: Path, processes: list[Process], rdb: object) -> None:
    tasks = _tasks(project)
    for name in ("a", "b"):
        processes.append(start_worker(project, "tasks", "-P", "solo", "-n", f"{name}@%h"))
    sent = time.time()
    result = tasks.mark.apply_async(countdown=14)  # 7x the visibility timeout
    wait_for(lambda: rdb.zcard("celery\x06\x16delayed") == 1, 10, message="the ETA deferred to Redis")
    assert rdb.hlen("unacked") == 0
    wait_for(lambda: rdb.llen("runs") >= 1, 30, message="the ETA task ran")
    assert time.time() - sent >= 14
    time.sleep(3)  # past another visibility timeout: nothing restores it a second time
    assert [x.decode() for x in rdb.lrange("runs", 0, -1)] == [result.id]


def test_many_far_etas_stay_in_redis_and_survive_a_kill(project: Path, processes: list[Process],
                                                       rdb: object) -> None:
    tasks = _tasks(project)
    from celeriac.producer import send_many

    n = 100_000  # the figure: an hour ahead, none in worker memory
    send_many(tasks.app, [("tasks.mark", (), {}, {"countdown": 3600}) for _ in range(n)])
    worker = start_worker(project, "tasks", "-P", "solo")
    processes.append(worker)
    wait_for(lambda: rdb.zcard("celery\x06\x16delayed") == n, 600, interval=0.5,
             message=f"{n} ETAs deferred to Redis")
    assert rdb.llen("celery") == 0 and rdb.hlen("unacked") == 0
    rss_kib = int(Path(f"/proc/{worker.pid}/status").read_text().split("VmRSS:")[1].split()[0])
    assert rss_kib < 150_000, f"worker RSS {rss_kib} KiB with {n} far ETAs"
    worker.kill()
    assert rdb.zcard("celery\x06\x16delayed") == n  # nothing lost with the worker


def test_sigkilled_worker_acks_late_task_restored_by_fleet(project: Path, processes: list[Process],
                                                           rdb: object) -> None:
    tasks = _tasks(project)
    result = tasks.slow.delay(3)
    first = start_worker(project, "tasks", "-P", "solo", "-n", "first@%h")
    processes.append(first)
    wait_for(lambda: rdb.llen("started") == 1, 20, message="task started")
    first.kill()
    second = start_worker(project, "tasks", "-P", "solo", "-n", "second@%h")
    processes.append(second)
    wait_for(lambda: rdb.llen("runs") == 1, 40, message="task ran again")
    assert [x.decode() for x in rdb.lrange("runs", 0, -1)] == [result.id]
    assert rdb.llen("started") == 2
    assert int(rdb.lrange("started", 1, 1)[0]) != int(rdb.lrange("started", 0, 0)[0])


def test_worker_survives_a_redis_restart(project: Path, processes: list[Process]) -> None:
    require_port("Redis", "127.0.0.1", 6379)
    from tests.redis_server import RedisServer

    with RedisServer(appendonly=True) as server:
        url = server.url(0)
        write_module(project, "tasks.py", f"""
            from celeriac import Celery

            app = Celery('restart', broker='{url}', backend='{url}')

            @app.task
            def add(a, b):
                return a + b
        """)
        tasks = importlib.import_module("tasks")
        worker = start_worker(project, "tasks", "-P", "solo")
        processes.append(worker)
        assert tasks.add.delay(1, 1).get(timeout=20) == 2
        server.restart()  # the worker's connections break under it
        tasks.app.close()
        before = tasks.add.delay(2, 2)  # the client reconnects too
        assert before.get(timeout=40) == 4
        server.stop()
        time.sleep(2)  # down for a while: the worker keeps retrying with backoff
        server.start()
        assert tasks.add.delay(3, 3).get(timeout=40) == 6
        assert worker.proc.poll() is None, worker.log
