"""Shutdown through real workers: soft shutdown (worker_soft_shutdown_timeout, SIGTERM
remapped to SIGQUIT as on Kubernetes), and SIGTERM, a grace period, then SIGKILL: acks_late
tasks that did not finish run again elsewhere, nothing is lost."""

from __future__ import annotations

import signal
import time

import pytest

from tests.helpers import wait_for
from tests.integration.test_worker_helpers import MARK, Project, project_fixture

pytestmark = pytest.mark.slow

TASKS = MARK + """
from celeriac import Celery

app = Celery('shutdown', broker=BROKER, backend=BACKEND)
app.conf.broker_transport_options = {'visibility_timeout': 2, 'heartbeat_ttl': 2}
app.conf.worker_soft_shutdown_timeout = float(os.environ.get('SOFT_TIMEOUT', 0))

def _runs(key):
    path = os.path.join(HERE, 'marks.jsonl')
    return [line for line in open(path) if f'"{key}"' in line] if os.path.exists(path) else []

@app.task(acks_late=True)
def long_once(key):
    first = not _runs(key)
    mark(key=key)
    if first:
        time.sleep(30)
        return 'first run'
    return 'second run'

@app.task(acks_late=True)
def short(key, seconds):
    mark(key=key)
    time.sleep(seconds)
    return key
"""


@pytest.fixture(params=["sqlite", "redis"])
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Project:
    return project_fixture(request, tmp_path_factory, "wkshutdown", TASKS, request.param)


def _started(project: Project, key: str) -> bool:
    return any(m["key"] == key for m in project.marks())


def test_soft_shutdown_finishes_short_tasks_and_requeues_long_ones(project: Project) -> None:
    tasks = project.module
    env = {"REMAP_SIGTERM": "SIGQUIT", "SOFT_TIMEOUT": "1.5"}
    worker = project.worker("-P", "prefork", "-c", "2", env=env)
    long = tasks.long_once.delay("soft-long")
    short = tasks.short.delay("soft-short", 0.8)
    wait_for(lambda: _started(project, "soft-long") and _started(project, "soft-short"), 20)
    sent = time.monotonic()
    assert worker.stop(signal.SIGTERM, timeout=15) == 1  # a cold (soft) shutdown
    assert 1.2 < time.monotonic() - sent < 6
    worker.wait_for_log("Initiating Soft Shutdown")
    assert short.get(timeout=5) == "soft-short"  # finished within the soft timeout
    project.worker("-P", "threads")
    assert long.get(timeout=30) == "second run"  # given back at once, run again


def test_sigterm_grace_period_then_sigkill_loses_nothing(project: Project) -> None:
    tasks = project.module
    worker = project.worker("-P", "prefork", "-c", "1", "--prefetch-multiplier", "1")
    long = tasks.long_once.delay("k8s-long")
    queued = [tasks.short.delay(f"k8s-{n}", 0.01) for n in range(5)]
    wait_for(lambda: _started(project, "k8s-long"), 20)
    worker.send_signal(signal.SIGTERM)  # warm: finish running tasks...
    time.sleep(1.0)  # ...but the grace period ends first
    worker.kill()  # SIGKILL, as the kubelet does
    project.worker("-P", "threads", "-c", "2")
    assert [r.get(timeout=30) for r in queued] == [f"k8s-{n}" for n in range(5)]
    assert long.get(timeout=30) == "second run"
