"""Pools through real workers: asyncio (async def tasks on one loop, sync ones beside them),
prefork child recycling by task count and by memory, autoscale, pool_grow/pool_shrink, and
prefetch that does not hold messages hostage behind a long acks_late task (celery#2788)."""

from __future__ import annotations

import inspect
import time

import pytest

from tests.helpers import wait_for
from tests.integration.test_worker_helpers import MARK, Project, project_fixture

pytestmark = pytest.mark.slow

TASKS = MARK + """
import asyncio
from celeriac import Celery

app = Celery('pools', broker=BROKER, backend=BACKEND)

@app.task(bind=True)
async def nap(self, seconds):
    await asyncio.sleep(seconds)
    return self.request.id

@app.task
def sync_nap(seconds):
    time.sleep(seconds)
    return threading.current_thread().name

@app.task
def pid():
    return os.getpid()

@app.task
def hog(megabytes):
    block = bytearray(megabytes * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return os.getpid()

@app.task
def busy(key, seconds):
    mark(key=key, event='start')
    time.sleep(seconds)
    return os.getpid()

@app.task(acks_late=True, bind=True)
def late(self, key, seconds):
    mark(key=key, host=self.request.hostname)
    time.sleep(seconds)
    return self.request.hostname
"""


@pytest.fixture(scope="module")
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Project:
    return project_fixture(request, tmp_path_factory, "wkpools", TASKS)


def test_asyncio_pool_runs_async_tasks_concurrently_beside_sync_ones(project: Project) -> None:
    tasks = project.module
    coroutine = tasks.nap(0)  # calling an async task returns a coroutine, as the function does
    assert inspect.iscoroutine(coroutine)
    coroutine.close()
    worker = project.worker("-P", "asyncio", "-c", "40")
    start = time.monotonic()
    naps = [tasks.nap.delay(1) for _ in range(30)]
    sync = [tasks.sync_nap.delay(1) for _ in range(4)]
    assert [r.get(timeout=20) for r in naps] == [r.id for r in naps]  # each sees its own request
    assert all(name.startswith("celeriac-worker") for name in (r.get(timeout=20) for r in sync))
    assert time.monotonic() - start < 4  # 34 one-second tasks at once, not one after another
    worker.stop()


def test_prefork_recycles_children_by_task_count_and_memory(project: Project) -> None:
    tasks = project.module
    worker = project.worker("-P", "prefork", "-c", "1", "--max-tasks-per-child", "2",
                            "--max-memory-per-child", "300000")
    pids = [tasks.pid.delay().get(timeout=20) for _ in range(4)]
    assert pids[0] == pids[1] != pids[2] == pids[3]
    small = tasks.hog.delay(1).get(timeout=20)  # a fresh child: the 2-task budget starts here
    big = tasks.hog.delay(400).get(timeout=20)  # peaks above 300,000 KiB: replaced after it
    assert small == big
    after = tasks.pid.delay().get(timeout=20)
    assert after != big
    worker.wait_for_log("exceeding memory limit")
    worker.stop()


def test_autoscale_grows_with_load_and_shrinks_when_idle(project: Project) -> None:
    tasks = project.module
    worker = project.worker("-P", "prefork", "--autoscale", "3,1", env={"AUTOSCALE_KEEPALIVE": "0.5"})

    def processes() -> int:
        stats = project.app.control.inspect(timeout=1, limit=1).stats()
        return len(next(iter(stats.values()))["pool"]["processes"])

    assert processes() == 1
    results = [tasks.busy.delay(f"as{n}", 1.5) for n in range(3)]
    assert len({r.get(timeout=20) for r in results}) == 3  # three processes ran them
    starts = sorted(m["t"] for m in project.marks() if m["key"].startswith("as"))
    assert starts[-1] - starts[0] < 1.0  # at the same time
    wait_for(lambda: processes() == 1, 10, interval=0.2, message="shrunk back to 1")
    worker.stop()


def test_pool_grow_and_shrink(project: Project) -> None:
    worker = project.worker("-P", "prefork", "-c", "1", "-n", "grow@%h")
    control = project.app.control

    def processes() -> int:
        stats = control.inspect(timeout=1, limit=1).stats()
        return len(next(iter(stats.values()))["pool"]["processes"])

    assert control.pool_grow(2, reply=True, limit=1) == [{worker_name(project): {"ok": "pool will grow"}}]
    wait_for(lambda: processes() == 3, 10, interval=0.2, message="grown to 3")
    control.pool_shrink(1, reply=True, limit=1)
    wait_for(lambda: processes() == 2, 10, interval=0.2, message="shrunk to 2")
    worker.stop()


def worker_name(project: Project) -> str:
    replies = project.app.control.ping(timeout=1)
    return next(iter(replies[0]))


def test_a_long_acks_late_task_holds_no_messages_back_from_an_idle_worker(project: Project) -> None:
    tasks = project.module
    first = project.worker("-P", "threads", "-c", "1", "-n", "first@%h", "--prefetch-multiplier", "4")
    long = tasks.late.delay("long", 4)
    wait_for(lambda: any(m["key"] == "long" for m in project.marks()), 20, message="long task started")
    shorts = [tasks.late.delay(f"short{n}", 0.1) for n in range(3)]
    time.sleep(0.5)  # time enough for the busy worker to take them, if it would
    second = project.worker("-P", "threads", "-c", "1", "-n", "second@%h")
    hosts = {r.get(timeout=3) for r in shorts}  # done well before the long task ends
    assert all(host.startswith("second@") for host in hosts), hosts
    assert long.get(timeout=20).startswith("first@")
    first.stop()
    second.stop()
