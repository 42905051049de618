"""Time limits through real workers: hard (prefork kills and replaces the child) and soft
(SoftTimeLimitExceeded inside the task), per task, per call and as settings, in the
prefork, solo, threads and asyncio pools."""

from __future__ import annotations

import pytest

from celeriac.exceptions import TimeLimitExceeded
from tests.integration.test_worker_helpers import MARK, Project, project_fixture

pytestmark = pytest.mark.slow

TASKS = MARK + """
import asyncio, os, time
from celeriac import Celery
from celeriac.exceptions import SoftTimeLimitExceeded

app = Celery('limits', broker=BROKER, backend=BACKEND)
if os.environ.get('SOFT_SETTING'):
    app.conf.task_soft_time_limit = float(os.environ['SOFT_SETTING'])

@app.task
def pid():
    return os.getpid()

@app.task(time_limit=1)
def stuck(seconds):
    time.sleep(seconds)
    return 'not killed'

@app.task
def sleeper(seconds):
    time.sleep(seconds)
    return 'slept'

@app.task(soft_time_limit=0.5, time_limit=5)
def cleans_up(seconds):
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return 'cleaned up'
    return 'finished'

@app.task
def catcher(seconds):
    # Python-level waiting, so the threads pool's asynchronous exception lands promptly.
    deadline = time.time() + seconds
    try:
        while time.time() < deadline:
            time.sleep(0.01)
    except SoftTimeLimitExceeded:
        return 'soft limit caught'
    return 'no limit'

@app.task(time_limit=0.5)
async def async_stuck():
    await asyncio.sleep(10)
    return 'not cancelled'
"""


@pytest.fixture(scope="module")
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Project:
    return project_fixture(request, tmp_path_factory, "wklimits", TASKS)


def test_prefork_hard_limit_replaces_the_child_and_goes_on(project: Project) -> None:
    tasks = project.module
    worker = project.worker("-P", "prefork", "-c", "1")
    before = tasks.pid.delay().get(timeout=20)
    with pytest.raises(TimeLimitExceeded):
        tasks.stuck.delay(10).get(timeout=20)
    after = tasks.pid.delay().get(timeout=20)
    assert after != before  # the killed child was replaced
    worker.wait_for_log("Hard time limit (1s) exceeded")
    # soft limit inside the task, and limits given per call
    assert tasks.cleans_up.delay(3).get(timeout=20) == "cleaned up"
    with pytest.raises(TimeLimitExceeded):
        tasks.sleeper.apply_async((10,), time_limit=0.5).get(timeout=20)
    assert tasks.catcher.apply_async((5,), soft_time_limit=0.3).get(timeout=20) == "soft limit caught"
    assert tasks.sleeper.apply_async((0.1,), time_limit=5).get(timeout=20) == "slept"
    worker.stop()


def test_solo_soft_limit_from_the_setting(project: Project) -> None:
    worker = project.worker("-P", "solo", env={"SOFT_SETTING": "0.3"})
    assert project.module.catcher.delay(5).get(timeout=20) == "soft limit caught"
    with pytest.raises(TimeLimitExceeded):  # solo raises the hard limit inside the task too
        project.module.sleeper.apply_async((10,), time_limit=0.5, soft_time_limit=5).get(timeout=20)
    assert project.module.sleeper.delay(0.05).get(timeout=20) == "slept"
    worker.stop()


def test_threads_soft_and_hard_limits_are_raised_in_the_thread(project: Project) -> None:
    worker = project.worker("-P", "threads", "-c", "2", "--soft-time-limit", "0.3")
    tasks = project.module
    assert tasks.catcher.delay(5).get(timeout=20) == "soft limit caught"
    with pytest.raises(TimeLimitExceeded):
        tasks.catcher.apply_async((5,), time_limit=0.4, soft_time_limit=10).get(timeout=20)
    worker.stop()


def test_asyncio_limit_cancels_the_coroutine(project: Project) -> None:
    worker = project.worker("-P", "asyncio", "-c", "4")
    with pytest.raises(TimeLimitExceeded):
        project.module.async_stuck.delay().get(timeout=20)
    assert project.module.sleeper.delay(0.05).get(timeout=20) == "slept"
    worker.stop()
