"""Rate limits per task type, per worker: jobs are spaced (delayed, never dropped), other
task types are not held up, and `app.control.rate_limit` changes the limit at run time."""

from __future__ import annotations

import pytest

from tests.integration.test_worker_helpers import MARK, Project, project_fixture

pytestmark = pytest.mark.slow

TASKS = MARK + """
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
"""


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Project:
    proj = project_fixture(request, tmp_path_factory, "wkrate", TASKS, request.param)
    proj.worker("-P", "threads", "-c", "4")
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
    # one start slot every 0.25 s: the k-th start is never before its slot (a late start may
    # bring the next gap under 0.25 s; the slots themselves stay put)
    offsets = [start - starts[0] for start in starts]
    assert all(offset >= k * 0.25 - 0.03 for k, offset in enumerate(offsets)), offsets
    bad = project.app.control.rate_limit(tasks.limited.name, "fast", reply=True, limit=1)
    assert "error" in list(bad[0].values())[0]
    project.app.control.rate_limit(tasks.limited.name, "10/s", reply=True, limit=1)
