"""The tutorial's examples on RabbitMQ (amqp://guest:guest@localhost:5672//), results over
rpc:// and over Redis, through real worker processes."""

from __future__ import annotations

import importlib
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.helpers import Process, require_port, start_worker, write_module

pytestmark = pytest.mark.slow
AMQP = "amqp://guest:guest@localhost:5672//"


@pytest.mark.parametrize("backend", ["rpc://", "redis://127.0.0.1:6379/8"])
def test_tutorial_project_on_rabbitmq(project: Path, processes: list[Process], backend: str) -> None:
    require_port("RabbitMQ", "127.0.0.1", 5672)
    if backend.startswith("redis"):
        require_port("Redis", "127.0.0.1", 6379)
    queue = f"tutorial-{uuid.uuid4().hex[:8]}"
    write_module(project, "proj/__init__.py", "")
    write_module(project, "proj/celery.py", """
        from celeriac import Celery

        app = Celery('demo')
        app.config_from_object('proj.celeryconfig')
        app.autodiscover_tasks(['proj'])
    """)
    write_module(project, "proj/celeryconfig.py", f"""
        from celeriac import Exchange, Queue
        BROKER_URL = '{AMQP}'
        CELERY_RESULT_BACKEND = '{backend}'
        CELERY_DEFAULT_QUEUE = '{queue}'
    """)
    write_module(project, "proj/tasks.py", """
        from proj.celery import app as celery_app

        @celery_app.task
        def my_task(a, b):
            print("任务函数正在执行....")
            return a + b
    """)
    worker = start_worker(project, "proj")
    processes.append(worker)
    assert "amqp://guest:**@localhost:5672//" in worker.log
    write_module(project, "test.py", f"""
        from proj.tasks import my_task
        print("delay:", my_task.delay(2, 2).get(timeout=30))
        r = my_task.apply_async((2, 3), queue='{queue}-my_queue', countdown=2)
        print("queued:", r.id)
    """)
    out = subprocess.run([sys.executable, "test.py"], cwd=project, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    assert "delay: 4" in out.stdout
    worker.wait_for_log("任务函数正在执行....")
    if backend.startswith("redis"):
        task_id = out.stdout.split("queued:")[1].strip()
        other = start_worker(project, "proj", "-Q", f"{queue}-my_queue")
        processes.append(other)
        tasks = importlib.import_module("proj.tasks")
        assert tasks.celery_app.AsyncResult(task_id).get(timeout=30) == 5
