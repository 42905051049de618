"""Every example of the tutorial (shared/seed/celery-tutorial-zh.txt), with only
celery -> celeriac changed, run against real worker processes on the embedded SQLite broker.
(The tutorial's Redis URLs are exercised in test_tutorial_redis.py.)
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import CELERIAC, Process, start_worker, wait_for, write_module

pytestmark = pytest.mark.slow


def test_first_example_worker_runs_print_task(project: Path, processes: list[Process]) -> None:
    # 1. 创建应用 / 2. 调用任务: Celery('demo', broker=...) + @app.task + my_task.delay()
    write_module(project, "tasks.py", """
        from celeriac import Celery

        app = Celery('demo', broker='sqlite:///broker.db')

        @app.task
        def my_task():
            print("任务函数正在执行....")
    """)
    worker = start_worker(project, "tasks")
    processes.append(worker)
    assert "tasks.my_task" in worker.log  # the banner lists registered tasks
    assert "sqlite:///broker.db" in worker.log
    tasks = importlib.import_module("tasks")
    result = tasks.my_task.delay()
    assert len(result.id) == 36  # every call gets a task id
    worker.wait_for_log("任务函数正在执行....")
    worker.wait_for_log(f"Task tasks.my_task[{result.id}] succeeded")
    assert worker.stop() == 0
    # no backend configured: asking for the result says so clearly, as Celery does
    with pytest.raises(NotImplementedError, match="No result backend is configured"):
        result.get(timeout=1)


def test_result_backend_example(project: Path, processes: list[Process]) -> None:
    # 3. 存储结果: Celery('demo', backend=..., broker=...), my_task(a, b) returns a + b
    write_module(project, "tasks.py", """
        from celeriac import Celery

        app = Celery('demo', backend='sqlite:///results.db', broker='sqlite:///broker.db')

        @app.task
        def my_task(a, b):
            print("任务函数正在执行....")
            return a + b
    """)
    processes.append(start_worker(project, "tasks"))
    tasks = importlib.import_module("tasks")
    result = tasks.my_task.delay(2, 2)
    assert result.get(timeout=20) == 4
    assert result.state == "SUCCESS" and result.status == "SUCCESS"
    assert result.ready() and result.successful() and not result.failed()
    assert result.date_done is not None
    # the direct call runs here and now, with no broker involved
    assert tasks.my_task(2, 3) == 5


def test_zero_configuration_uses_one_sqlite_file(project: Path, processes: list[Process]) -> None:
    write_module(project, "tasks.py", """
        from celeriac import Celery

        app = Celery('demo')

        @app.task
        def add(a, b):
            return a + b
    """)
    worker = start_worker(project, "tasks")
    processes.append(worker)
    assert f"file {project / 'celeriac.db'}" in worker.log
    tasks = importlib.import_module("tasks")
    assert tasks.add.delay(20, 22).get(timeout=20) == 42
    assert (project / "celeriac.db").exists()


def test_conf_update_example(project: Path, processes: list[Process]) -> None:
    # 配置 1. 直接通过app来配置: app.conf.update(result_backend=..., broker_url=...)
    write_module(project, "tasks.py", """
        from celeriac import Celery

        app = Celery('demo')
        app.conf.update(
            result_backend='sqlite:///results.db',
            broker_url='sqlite:///broker.db',
        )

        @app.task
        def my_task(a, b):
            return a + b
    """)
    worker = start_worker(project, "tasks")
    processes.append(worker)
    assert "sqlite:///broker.db" in worker.log and "sqlite:///results.db" in worker.log
    tasks = importlib.import_module("tasks")
    assert tasks.my_task.delay(1, 2).get(timeout=20) == 3


def test_config_module_example(project: Path, processes: list[Process]) -> None:
    # 配置 2. 专有配置文件: celeryconfig.py + app.config_from_object('celeryconfig')
    write_module(project, "celeryconfig.py", """
        result_backend = 'sqlite:///results.db'
        broker_url = 'sqlite:///broker.db'
    """)
    write_module(project, "tasks.py", """
        from celeriac import Celery
        import celeryconfig

        app = Celery('demo')
        app.config_from_object('celeryconfig')

        @app.task
        def my_task(a, b):
            return a + b
    """)
    processes.append(start_worker(project, "tasks"))
    tasks = importlib.import_module("tasks")
    assert tasks.app.conf.broker_url == "sqlite:///broker.db"
    assert tasks.my_task.delay(5, 6).get(timeout=20) == 11


def _write_proj(project: Path) -> None:
    # 项目中使用Celery: proj/{__init__,celery,celeryconfig,tasks}.py, old UPPERCASE names
    write_module(project, "proj/__init__.py", "")
    write_module(project, "proj/celery.py", """
        from celeriac import Celery

        # 创建celery实例
        app = Celery('demo')
        app.config_from_object('proj.celeryconfig')

        # 自动搜索任务
        app.autodiscover_tasks(['proj'])
    """)
    write_module(project, "proj/celeryconfig.py", """
        from celeriac import Exchange, Queue
        BROKER_URL = 'sqlite:///broker.db'
        CELERY_RESULT_BACKEND = 'sqlite:///results.db'
    """)
    write_module(project, "proj/tasks.py", """
        from proj.celery import app as celery_app

        # 创建任务函数
        @celery_app.task
        def my_task1():
            print("任务函数(my_task1)正在执行....")

        @celery_app.task
        def my_task2():
            print("任务函数(my_task2)正在执行....")

        @celery_app.task
        def my_task3():
            print("任务函数(my_task3)正在执行....")
            return 3
    """)


def test_project_layout_with_old_setting_names(project: Path, processes: list[Process]) -> None:
    _write_proj(project)
    worker = start_worker(project, "proj")  # celeriac -A proj worker -l info
    processes.append(worker)
    for name in ("proj.tasks.my_task1", "proj.tasks.my_task2", "proj.tasks.my_task3"):
        assert name in worker.log  # found by autodiscover_tasks(['proj'])
    assert "sqlite:///broker.db" in worker.log and "sqlite:///results.db" in worker.log
    # test.py, as in the tutorial's tree
    write_module(project, "test.py", """
        from proj.tasks import my_task1, my_task2, my_task3
        my_task1.delay()
        my_task2.delay()
        print("result:", my_task3.delay().get(timeout=20))
    """)
    out = subprocess.run([sys.executable, "test.py"], cwd=project, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "result: 3" in out.stdout
    worker.wait_for_log("任务函数(my_task1)正在执行....")
    worker.wait_for_log("任务函数(my_task2)正在执行....")
    # 键入ctrl+c可关闭worker
    assert worker.stop(sig=2) == 0
    assert "Warm shutdown" in worker.log


def test_calling_apply_async_queue_and_countdown(project: Path, processes: list[Process]) -> None:
    # 调用任务: my_task.delay(2, 2); my_task.apply_async((2, 2), queue='my_queue', countdown=10)
    write_module(project, "tasks.py", """
        from celeriac import Celery

        app = Celery('demo', backend='sqlite:///results.db', broker='sqlite:///broker.db')

        @app.task
        def my_task(a, b):
            return a + b
    """)
    tasks = importlib.import_module("tasks")
    sent = time.time()
    delayed = tasks.my_task.apply_async((2, 2), queue="my_queue", countdown=10)
    plain = tasks.my_task.delay(2, 2)
    # a worker of the default queue only does not take my_queue's task
    default_worker = start_worker(project, "tasks")
    processes.append(default_worker)
    assert plain.get(timeout=20) == 4
    assert delayed.state == "PENDING"
    default_worker.stop()
    worker = start_worker(project, "tasks", "-Q", "my_queue")
    processes.append(worker)
    assert delayed.get(timeout=30) == 4
    ran_at = delayed.date_done.timestamp()
    assert ran_at - sent >= 10, "the countdown was not honoured"
    assert ran_at - sent < 20
    assert f"Task tasks.my_task[{delayed.id}] received" in worker.log


def test_direct_call_touches_no_broker(project: Path) -> None:
    # 如果我们直接执行任务函数，将会直接执行此函数在当前进程中，并不会向broker发送任何消息
    write_module(project, "tasks.py", """
        from celeriac import Celery

        app = Celery('demo', broker='redis://:332572@127.0.0.1:1/1')

        @app.task
        def my_task(a, b):
            return a + b
    """)
    tasks = importlib.import_module("tasks")
    assert tasks.my_task(2, 2) == 4
    assert tasks.app._broker is None


def test_command_line_call_result_purge_version(project: Path, processes: list[Process]) -> None:
    write_module(project, "tasks.py", """
        from celeriac import Celery

        app = Celery('demo')

        @app.task
        def add(a, b):
            return a + b
    """)

    def run(*args: str) -> str:
        out = subprocess.run([CELERIAC, *args], cwd=project, capture_output=True, text=True, timeout=60,
                             env={"PYTHONPATH": str(project), "PATH": "/usr/bin:/bin"})
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout.strip()

    assert run("--version") == "celeriac, version 0.1.0"
    assert "worker" in run("--help") and "--concurrency" in run("worker", "--help")
    queued = run("-A", "tasks", "call", "tasks.add", "--args", "[2, 2]")
    assert "Purged 1 message" in run("-A", "tasks", "purge", "-f")
    task_id = run("-A", "tasks", "call", "tasks.add", "--args", "[2, 2]")
    assert task_id != queued
    assert run("-A", "tasks", "result", task_id).startswith("PENDING")
    processes.append(start_worker(project, "tasks"))
    assert run("-A", "tasks", "result", task_id, "--timeout", "20") == "4"


def test_app_flag_forms(project: Path) -> None:
    write_module(project, "mymod.py", """
        from celeriac import Celery
        application = Celery('m')

        @application.task
        def ping():
            return 'pong'
    """)
    out = subprocess.run([CELERIAC, "-A", "mymod:application", "call", "mymod.ping"], cwd=project,
                         capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(project)})
    assert out.returncode == 0, out.stderr
    out = subprocess.run([CELERIAC, "-A", "nosuchmodule", "call", "x"], cwd=project,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "nosuchmodule" in out.stderr
    wait_for(lambda: True)
