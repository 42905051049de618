"""Rate limits per task type, per worker: jobs are spaced (delayed, never dropped), other
task types are not held up, and `app.control.rate_limit` changes the limit at run time."""

from __future__ import annotations

import pytest

from tests.integration.test_worker_helpers import MARK, Project, project_fixture

pytestmark = pytest.mark.slow

TASKS = MARK + """
import time

from celeriac import Celery

app = Celery('rates', broker=BROKER, backend=BACKEND)

@app.task(rate_limit='10/s')
def limited(key, n):
    mark(key=key, n=n)
    return n

@app.task
def free(key, n):
    mark(key=key, n=n)
    return n

@app.task
def busy(key, seconds):
    mark(key=key)
    time.sleep(seconds)
"""


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Project:
    proj = project_fixture(request, tmp_path_factory, "wkrate", TASKS, request.param)
    proj.worker("-P", "threads", "-c", "4")
    proj.worker("-P", "solo", "-Q", "solo", "-n", "solo@%h")
    return proj


def _starts(project: Project, key: str) -> list[float]:
    return sorted(m["t"] for m in project.marks() if m["key"] == key)


def test_rate_limit_spaces_jobs_and_leaves_others_alone(project: Project) -> None:
    tasks = project.module
    limited = [tasks.limited.delay("ten", n) for n in range(6)]
    free = [tasks.free.delay("free", n) for n in range(6)]
    assert [r.get(timeout=20) for r in free] == list(range(6))
    assert [r.get(timeout=20) for r in limited] == list(range(6))  # none dropped
    starts = _starts(project, "ten")
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.08, gaps  # 10/s: one start every 0.1 s
    assert max(_starts(project, "free")) < starts[-1]  # free tasks did not wait behind them


def test_rate_limit_changed_at_run_time(project: Project) -> None:
    tasks = project.module
    replies = project.app.control.rate_limit(tasks.limited.name, "4/s", reply=True, limit=1)
    assert list(replies[0].values()) == [{"ok": "new rate limit set successfully"}]
    results = [tasks.limited.delay("four", n) for n in range(4)]
    assert [r.get(timeout=20) for r in results] == list(range(4))
    starts = _starts(project, "four")
    # one start every 0.25 s, counted from each real start: a late start never lets the
    # next one in sooner (Celery's token bucket is taken when a task starts)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.22, gaps
    bad = project.app.control.rate_limit(tasks.limited.name, "fast", reply=True, limit=1)
    assert "error" in list(bad[0].values())[0]
    project.app.control.rate_limit(tasks.limited.name, "10/s", reply=True, limit=1)


def test_a_late_start_pushes_the_next_slot_back(project: Project) -> None:
    """One slot (solo): the second limited job's slot comes while a busy task runs, so it
    starts ~0.3 s late; the third must still wait 0.1 s after it (booking slots ahead, at
    receipt, let it start at once)."""
    tasks = project.module
    first = tasks.limited.apply_async(("late", 0), queue="solo")
    second = tasks.limited.apply_async(("late", 1), queue="solo")
    blocker = tasks.busy.apply_async(("late-busy", 0.3), queue="solo")
    third = tasks.limited.apply_async(("late", 2), queue="solo")
    assert [r.get(timeout=20) for r in (first, second, third)] == [0, 1, 2]
    blocker.get(timeout=20)
    starts = _starts(project, "late")
    assert starts[1] - starts[0] >= 0.25, starts  # it did wait behind the busy task
    assert starts[2] - starts[1] >= 0.08, starts
