"""Retries through real worker processes, on SQLite and Redis: self.retry, autoretry_for,
backoff, jitter, max retries, the RETRY state, the same task id and the retries count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from celeriac.exceptions import MaxRetriesExceededError
from tests.integration.test_worker_helpers import MARK, Project, project_fixture, wait_state

pytestmark = pytest.mark.slow

TASKS = MARK + """
from celeriac import Celery

app = Celery('retries', broker=BROKER, backend=BACKEND)

class Flaky(Exception):
    pass

@app.task(bind=True, max_retries=3)
def flaky(self, key, fail_times):
    mark(key=key, id=self.request.id, retries=self.request.retries, args=self.request.args)
    if self.request.retries < fail_times:
        raise self.retry(countdown=0.1)
    return {'id': self.request.id, 'retries': self.request.retries}

@app.task(bind=True, max_retries=2)
def new_arguments(self, n):
    if self.request.retries < 2:
        raise self.retry(args=(n + 1,), eta=datetime.now(UTC) + timedelta(seconds=0.1))
    return n

@app.task(bind=True, max_retries=1)
def hopeless(self):
    raise self.retry(countdown=0)

@app.task(bind=True, max_retries=1)
def hopeless_exc(self):
    raise self.retry(exc=Flaky('gave up'), countdown=0)

@app.task(bind=True)
def slow_retry(self):
    if self.request.retries == 0:
        raise self.retry(countdown=1.5, exc=Flaky('once'))
    return 'second try'

@app.task(bind=True, autoretry_for=(Flaky,), retry_backoff=0.2, retry_backoff_max=0.35,
          retry_jitter=False, retry_kwargs={'max_retries': 3})
def backoff(self, key):
    mark(key=key, retries=self.request.retries)
    raise Flaky('always')

@app.task(bind=True, autoretry_for=(Exception,), dont_autoretry_for=(ValueError,),
          retry_kwargs={'max_retries': 5, 'countdown': 0})
def picky(self, key, kind):
    mark(key=key, retries=self.request.retries)
    if kind == 'value':
        raise ValueError('not retried')
    if self.request.retries < 2:
        raise KeyError('retried')
    return self.request.retries

@app.task(bind=True, autoretry_for=(Flaky,), retry_backoff=True, retry_backoff_max=1,
          retry_kwargs={'max_retries': 2})
def jittery(self, key):
    mark(key=key, retries=self.request.retries)
    raise Flaky('jitter')
""".replace("from celeriac import Celery", "from datetime import UTC, datetime, timedelta\nfrom celeriac import Celery")


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Project:
    proj = project_fixture(request, tmp_path_factory, "wkretry", TASKS, request.param)
    proj.worker("-P", "threads", "-c", "4")
    return proj


def _runs(project: Project, key: str) -> list[dict[str, Any]]:
    return [m for m in project.marks() if m.get("key") == key]


def test_retry_keeps_the_id_counts_retries_and_can_change_arguments(project: Project) -> None:
    tasks = project.module
    result = tasks.flaky.delay("f", 2)
    assert result.get(timeout=20) == {"id": result.id, "retries": 2}
    runs = _runs(project, "f")
    assert [r["retries"] for r in runs] == [0, 1, 2]
    assert {r["id"] for r in runs} == {result.id}
    assert tasks.new_arguments.delay(10).get(timeout=20) == 12  # args= and eta= on retry


def test_max_retries_exceeded(project: Project) -> None:
    tasks = project.module
    with pytest.raises(MaxRetriesExceededError):
        tasks.hopeless.delay().get(timeout=20)
    with pytest.raises(Exception) as info:  # retry(exc=...) re-raises exc once retries run out
        tasks.hopeless_exc.delay().get(timeout=20)
    assert type(info.value).__name__ == "Flaky" and info.value.args == ("gave up",)


def test_retry_state_is_visible_between_attempts(project: Project) -> None:
    result = project.module.slow_retry.delay()
    wait_state(result, "RETRY")
    assert type(result.info).__name__ == "Flaky"
    assert result.get(timeout=20) == "second try"


def test_autoretry_backoff_capped_and_without_jitter(project: Project) -> None:
    result = project.module.backoff.delay("b")
    with pytest.raises(Exception) as info:
        result.get(timeout=20)
    assert type(info.value).__name__ == "Flaky"
    runs = _runs(project, "b")
    assert [r["retries"] for r in runs] == [0, 1, 2, 3]
    gaps = [later["t"] - earlier["t"] for earlier, later in zip(runs, runs[1:], strict=False)]
    # backoff 0.2 * 2**n capped at 0.35: 0.2, 0.35, 0.35 (plus scheduling slack)
    assert gaps[0] >= 0.18 and gaps[1] >= 0.33 and gaps[2] >= 0.33, gaps
    assert all(gap < 1.5 for gap in gaps), gaps


def test_autoretry_jitter_stays_under_the_cap(project: Project) -> None:
    result = project.module.jittery.delay("j")
    with pytest.raises(Exception, match="jitter"):
        result.get(timeout=20)
    runs = _runs(project, "j")
    gaps = [later["t"] - earlier["t"] for earlier, later in zip(runs, runs[1:], strict=False)]
    assert len(runs) == 3 and all(gap < 1.6 for gap in gaps), gaps  # full jitter in [0, 1]


def test_dont_autoretry_for(project: Project) -> None:
    tasks = project.module
    with pytest.raises(ValueError, match="not retried"):
        tasks.picky.delay("v", "value").get(timeout=20)
    assert len(_runs(project, "v")) == 1
    assert tasks.picky.delay("k", "key").get(timeout=20) == 2
    assert len(_runs(project, "k")) == 3


def test_retry_with_eta_in_the_past_runs_at_once(project: Project) -> None:
    tasks = project.module
    start = datetime.now(UTC) - timedelta(seconds=5)
    assert tasks.flaky.apply_async(("past", 0), eta=start).get(timeout=20)["retries"] == 0
