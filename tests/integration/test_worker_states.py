"""States and progress read by a client while tasks run, self.request, result storage
options, Task classes with handlers, and Ignore, through real workers on SQLite and Redis."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.helpers import wait_for
from tests.integration.test_worker_helpers import MARK, Project, project_fixture, wait_state

pytestmark = pytest.mark.slow

TASKS = MARK + """
from celeriac import Celery, Task
from celeriac.exceptions import Ignore

app = Celery('states', broker=BROKER, backend=BACKEND)

def wait_go(key, timeout=20):
    path = os.path.join(HERE, 'go-' + key)
    deadline = time.time() + timeout
    while not os.path.exists(path) and time.time() < deadline:
        time.sleep(0.01)

@app.task(track_started=True)
def tracked(key):
    wait_go(key)
    return key

@app.task(bind=True)
def progress(self, key):
    self.update_state(state='PROGRESS', meta={'step': 1, 'of': 2})
    wait_go(key)
    return 'done'

@app.task(ignore_result=True)
def ignored(key, fail=False):
    mark(key=key)
    if fail:
        raise ValueError(key)
    return key

@app.task(ignore_result=True, store_errors_even_if_ignored=True)
def ignored_keeps_errors(key):
    mark(key=key)
    raise ValueError(key)

@app.task
def plain(key):
    mark(key=key)
    return key

@app.task(bind=True)
def fields(self, *args, **kwargs):
    r = self.request
    return {'id': r.id, 'args': r.args, 'kwargs': r.kwargs, 'retries': r.retries,
            'delivery_info': r.delivery_info, 'hostname': r.hostname, 'root_id': r.root_id,
            'parent_id': r.parent_id, 'eta': r.eta, 'expires': r.expires, 'is_eager': r.is_eager,
            'task': r.task}

@app.task(bind=True)
def parent(self):
    return fields.delay('child').id

class Hooked(Task):
    def before_start(self, task_id, args, kwargs):
        mark(_file='hooks', hook='before_start', id=task_id, args=args)
    def on_success(self, retval, task_id, args, kwargs):
        mark(_file='hooks', hook='on_success', id=task_id, retval=retval)
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        mark(_file='hooks', hook='on_failure', id=task_id, exc=repr(exc),
             einfo='ValueError' in str(einfo) and einfo.type is ValueError)
    def on_retry(self, exc, task_id, args, kwargs, einfo):
        mark(_file='hooks', hook='on_retry', id=task_id, exc=repr(exc))
    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        mark(_file='hooks', hook='after_return', id=task_id, status=status)

@app.task(base=Hooked, bind=True, max_retries=1)
def hooked(self, kind):
    if kind == 'fail':
        raise ValueError('hooked failure')
    if kind == 'retry' and not self.request.retries:
        raise self.retry(exc=KeyError('again'), countdown=0)
    if kind == 'ignore':
        raise Ignore()
    return kind
"""


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Project:
    proj = project_fixture(request, tmp_path_factory, "wkstates", TASKS, request.param)
    proj.worker("-P", "threads", "-c", "4", "-n", "states@%h")
    return proj


def _go(project: Project, key: str) -> None:
    (project.root / f"go-{key}").write_text("")


def test_started_and_custom_states_are_read_while_the_task_runs(project: Project) -> None:
    tasks = project.module
    tracked = tasks.tracked.delay("t")
    wait_state(tracked, "STARTED")
    assert set(tracked.info) == {"pid", "hostname"} and tracked.info["hostname"].startswith("states@")
    running = tasks.progress.delay("p")
    wait_state(running, "PROGRESS")
    assert running.info == {"step": 1, "of": 2}
    _go(project, "t")
    _go(project, "p")
    assert tracked.get(timeout=20) == "t" and running.get(timeout=20) == "done"


def test_ignore_result_and_store_errors_even_if_ignored(project: Project) -> None:
    tasks = project.module
    quiet = tasks.ignored.delay("i")
    quiet_failure = tasks.ignored.delay("if", True)
    per_call = tasks.plain.apply_async(("pc",), ignore_result=True)
    kept = tasks.ignored_keeps_errors.delay("ik")
    with pytest.raises(ValueError):
        kept.get(timeout=20)
    wait_for(lambda: {"i", "if", "pc", "ik"} <= {m["key"] for m in project.marks()}, 20)
    time.sleep(0.3)
    assert quiet.state == quiet_failure.state == per_call.state == "PENDING"


def test_request_fields(project: Project) -> None:
    tasks = project.module
    from datetime import UTC, datetime, timedelta

    eta = datetime.now(UTC) + timedelta(seconds=0.3)
    result = tasks.fields.apply_async((1, "two"), {"k": [3]}, eta=eta, expires=60)
    fields: dict[str, Any] = result.get(timeout=20)
    assert fields["id"] == result.id == fields["root_id"] and fields["parent_id"] is None
    assert fields["args"] == [1, "two"] and fields["kwargs"] == {"k": [3]} and fields["retries"] == 0
    assert fields["eta"] and fields["expires"] and fields["is_eager"] is False
    assert fields["hostname"].startswith("states@") and fields["task"] == tasks.fields.name
    assert fields["delivery_info"]["routing_key"] == "celery"
    parent = tasks.parent.delay()
    child = project.app.AsyncResult(parent.get(timeout=20)).get(timeout=20)
    assert child["parent_id"] == parent.id and child["root_id"] == parent.id


def test_task_class_handlers_and_ignore(project: Project) -> None:
    tasks = project.module
    ok = tasks.hooked.delay("ok")
    failed = tasks.hooked.delay("fail")
    retried = tasks.hooked.delay("retry")
    ignored = tasks.hooked.delay("ignore")
    assert ok.get(timeout=20) == "ok" and retried.get(timeout=20) == "retry"
    with pytest.raises(ValueError):
        failed.get(timeout=20)
    wait_for(lambda: any(m["id"] == ignored.id for m in project.marks("hooks")), 20)
    time.sleep(0.3)

    def hooks(result: Any) -> list[str]:
        return [m["hook"] for m in project.marks("hooks") if m["id"] == result.id]

    assert hooks(ok) == ["before_start", "on_success", "after_return"]
    assert hooks(failed) == ["before_start", "on_failure", "after_return"]
    # the retried message may start before on_retry of the first run has returned
    assert sorted(hooks(retried)) == sorted(["before_start", "on_retry", "before_start", "on_success",
                                             "after_return"])
    assert hooks(ignored) == ["before_start"]  # Ignore: no handler, no state
    failure = next(m for m in project.marks("hooks") if m["id"] == failed.id and m["hook"] == "on_failure")
    assert failure["einfo"] is True and "hooked failure" in failure["exc"]
    assert ignored.state == "PENDING"
