"""The tutorial's Redis examples as written (password 332572, db 1 broker, db 2 results),
against a Redis started with --requirepass, through real worker processes."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Process, require_port, start_worker, write_module
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def password_redis() -> Iterator[RedisServer]:
    require_port("Redis", "127.0.0.1", 6379)  # the binary is the service's
    with RedisServer(password="332572") as server:
        yield server


def test_tutorial_redis_backend_example(project: Path, processes: list[Process],
                                        password_redis: RedisServer) -> None:
    port = password_redis.port
    write_module(project, "tasks.py", f"""
        from celeriac import Celery

        # 我们这里案例使用redis作为broker
        app = Celery('demo',
                     backend='redis://:332572@127.0.0.1:{port}/2',
                     broker='redis://:332572@127.0.0.1:{port}/1')

        # 创建任务函数
        @app.task
        def my_task(a, b):
            print("任务函数正在执行....")
            return a + b
    """)
    worker = start_worker(project, "tasks")
    processes.append(worker)
    # the password never shows: redis://:**@host
    assert f"redis://:**@127.0.0.1:{port}/1" in worker.log
    assert f"redis://:**@127.0.0.1:{port}/2" in worker.log
    assert "332572" not in worker.log
    tasks = importlib.import_module("tasks")
    assert tasks.my_task.delay(2, 2).get(timeout=20) == 4
    worker.wait_for_log("任务函数正在执行....")
    delayed = tasks.my_task.apply_async((2, 2), queue="my_queue", countdown=1)
    processes.append(start_worker(project, "tasks", "-Q", "my_queue"))
    assert delayed.get(timeout=20) == 4


def test_tutorial_project_on_redis(project: Path, processes: list[Process], password_redis: RedisServer) -> None:
    port = password_redis.port
    write_module(project, "proj/__init__.py", "")
    write_module(project, "proj/celery.py", """
        from celeriac import Celery

        app = Celery('demo')
        app.config_from_object('proj.celeryconfig')
        app.autodiscover_tasks(['proj'])
    """)
    write_module(project, "proj/celeryconfig.py", f"""
        from celeriac import Exchange, Queue
        BROKER_URL = 'redis://:332572@127.0.0.1:{port}/1'
        CELERY_RESULT_BACKEND = 'redis://:332572@127.0.0.1:{port}/2'
    """)
    write_module(project, "proj/tasks.py", """
        from proj.celery import app as celery_app

        @celery_app.task
        def my_task1():
            print("任务函数(my_task1)正在执行....")
            return 1
    """)
    worker = start_worker(project, "proj")
    processes.append(worker)
    write_module(project, "test.py", """
        from proj.tasks import my_task1
        print("result:", my_task1.delay().get(timeout=20))
    """)
    out = subprocess.run([sys.executable, "test.py"], cwd=project, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "result: 1" in out.stdout
    worker.wait_for_log("任务函数(my_task1)正在执行....")


def test_wrong_password_and_unreachable_broker_are_clear(project: Path, password_redis: RedisServer) -> None:
    port = password_redis.port
    write_module(project, "tasks.py", f"""
        from celeriac import Celery
        app = Celery('demo', broker='redis://:wrongpass@127.0.0.1:{port}/1')
        app.conf.broker_connection_max_retries = 1
        app.conf.broker_connection_retry_on_startup = False

        @app.task
        def my_task():
            pass
    """)
    worker = Process(["-A", "tasks", "worker", "-l", "info"], project, name="worker")
    code = worker.proc.wait(60)
    assert code != 0
    assert "wrongpass" not in worker.log
    assert f"redis://:**@127.0.0.1:{port}/1" in worker.log
    tasks = importlib.import_module("tasks")
    tasks.app.conf.broker_url = "redis://:secret@127.0.0.1:1/0"
    tasks.app.close()
    with pytest.raises(Exception) as info:
        tasks.my_task.delay()
    assert "127.0.0.1:1" in str(info.value) and "secret" not in str(info.value)
