"""A real worker in this process (celeriac.testing.start_worker) on memory:// and SQLite."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery, Task, signals, states
from celeriac.exceptions import MaxRetriesExceededError
from celeriac.testing import start_worker


@pytest.fixture(params=["memory", "sqlite"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Celery:
    if request.param == "memory":
        tag = uuid.uuid4().hex
        return Celery("t", broker=f"memory://{tag}", backend=f"memory://{tag}")
    return Celery("t", broker=f"sqlite:///{tmp_path}/b.db", backend=f"sqlite:///{tmp_path}/r.db")


def test_delay_get_and_request_fields(app: Celery) -> None:
    @app.task(bind=True)
    def info(self: Task, x: Any) -> dict[str, Any]:
        r = self.request
        return {"id": r.id, "args": r.args, "kwargs": r.kwargs, "retries": r.retries,
                "root_id": r.root_id, "parent_id": r.parent_id, "is_eager": r.is_eager,
                "hostname": r.hostname, "queue": r.delivery_info["routing_key"]}

    with start_worker(app):
        result = info.apply_async(("ü",), task_id="my-id")
        out = result.get(timeout=10)
    assert out == {"id": "my-id", "args": ["ü"], "kwargs": {}, "retries": 0, "root_id": "my-id",
                   "parent_id": None, "is_eager": False, "hostname": out["hostname"], "queue": "celery"}


def test_retry_keeps_id_and_counts(app: Celery) -> None:
    attempts: list[int] = []

    @app.task(bind=True, max_retries=2, default_retry_delay=0)
    def flaky(self: Task) -> int:
        attempts.append(self.request.retries)
        if self.request.retries < 2:
            raise self.retry(countdown=0.1)
        return self.request.retries

    @app.task(bind=True, max_retries=1)
    def hopeless(self: Task) -> None:
        raise self.retry(countdown=0)

    with start_worker(app):
        assert flaky.delay().get(timeout=10) == 2
        with pytest.raises(MaxRetriesExceededError):
            hopeless.delay().get(timeout=10)
    assert attempts == [0, 1, 2]


def test_autoretry_for_and_update_state(app: Celery) -> None:
    calls: list[int] = []

    @app.task(autoretry_for=(ConnectionError,), retry_kwargs={"max_retries": 3, "countdown": 0})
    def connect() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "up"

    @app.task(bind=True)
    def progress(self: Task) -> str:
        self.update_state(state="PROGRESS", meta={"current": 1, "total": 2})
        return app.AsyncResult(self.request.id).state

    with start_worker(app):
        assert connect.delay().get(timeout=10) == "up"
        assert progress.delay().get(timeout=10) == "PROGRESS"
    assert len(calls) == 3


def test_signals_and_handlers(app: Celery) -> None:
    seen: list[str] = []

    class Base(Task):
        def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
            seen.append(f"on_success:{retval}")

        def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
            seen.append(f"on_failure:{exc!r}")

    @app.task(base=Base)
    def ok() -> int:
        return 1

    @app.task(base=Base)
    def bad() -> None:
        raise RuntimeError("x")

    def prerun(sender: Any = None, task_id: Any = None, **kw: Any) -> None:
        seen.append(f"prerun:{sender.name}")

    signals.task_prerun.connect(prerun)
    try:
        with start_worker(app):
            assert ok.delay().get(timeout=10) == 1
            assert bad.delay().get(timeout=10, propagate=False).args == ("x",)
    finally:
        signals.task_prerun.disconnect(prerun)
    assert "on_success:1" in seen and "on_failure:RuntimeError('x')" in seen
    assert f"prerun:{ok.name}" in seen


def test_ignore_result_and_expires(app: Celery) -> None:
    @app.task(ignore_result=True)
    def quiet() -> int:
        return 1

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    expired = add.apply_async((1, 1), expires=-1)
    with start_worker(app):
        r = quiet.delay()
        assert add.delay(1, 2).get(timeout=10) == 3
        assert r.state == states.PENDING
        assert expired.get(timeout=10, propagate=False).args == ("expired",)
        assert expired.state == states.REVOKED


def test_link_and_chain_via_embed(app: Celery) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    with start_worker(app, pool="threads", concurrency=2):
        callback_id = "cb-" + uuid.uuid4().hex
        add.apply_async((1, 2), link=add.s(10).set(task_id=callback_id))
        assert app.AsyncResult(callback_id).get(timeout=10) == 13


def test_children_are_recorded_and_collected(app: Celery) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    @app.task
    def parent() -> str:
        add.delay(1, 1)
        return "done"

    with start_worker(app, pool="threads", concurrency=2):
        result = parent.apply_async(link=add.si(5, 5))
        assert result.get(timeout=10) == "done"
        children = result.children
        assert len(children) == 2  # the task it sent and its link
        assert sorted(child.get(timeout=10) for child in children) == [2, 10]
        collected = list(result.collect(timeout=10))
        assert collected[0] == (result, "done") and len(collected) == 3
