"""The app and tasks without a worker: registry, names, settings, eager calls, results."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from celeriac import AsyncResult, Celery, EagerResult, Task, shared_task, states
from celeriac.exceptions import ImproperlyConfigured, NotRegistered


def make_app(**settings: Any) -> Celery:
    return Celery("t", broker=f"memory://{uuid.uuid4().hex}", backend=f"memory://{uuid.uuid4().hex}", **settings)


def test_task_names_registry_and_direct_call() -> None:
    app = make_app()

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="custom.name", bind=True, max_retries=7)
    def bound(self: Task, x: int) -> str:
        return f"{self.name}:{x}:{self.request.called_directly}"

    assert add.name == f"{__name__}.add"
    assert app.tasks[add.name] is add
    assert add(2, 3) == 5
    assert bound(1) == "custom.name:1:True"
    assert bound.max_retries == 7
    with pytest.raises(NotRegistered):
        app.tasks["nope"]


def test_main_module_tasks_are_named_after_main() -> None:
    app = Celery("demo", broker="memory://")
    assert app.gen_task_name("my_task", "__main__") == "demo.my_task"
    assert app.gen_task_name("my_task", "tasks") == "tasks.my_task"


def test_settings_update_attribute_and_old_names() -> None:
    app = make_app()
    app.conf.update(task_serializer="json", CELERY_ALWAYS_EAGER=False)
    assert app.conf.task_serializer == "json"
    app.conf.result_expires = 60
    assert app.conf["result_expires"] == 60

    class Config:
        BROKER_URL = "sqlite:///x.db"
        CELERY_RESULT_BACKEND = "sqlite:///y.db"

    app2 = Celery("demo")
    app2.config_from_object(Config)
    assert app2.conf.broker_url == "sqlite:///x.db"
    assert app2.conf.result_backend == "sqlite:///y.db"
    assert app2.broker_url == "sqlite:///x.db"


def test_unknown_broker_scheme_is_a_clear_error() -> None:
    app = Celery("t", broker="kafka://user:secret@host/1")
    with pytest.raises(ImproperlyConfigured) as info:
        app.broker.declare([])
    assert "kafka" in str(info.value) and "secret" not in str(info.value)


def test_apply_runs_eagerly_and_round_trips_through_the_serializer() -> None:
    app = make_app()

    @app.task
    def echo(value: Any) -> Any:
        return value

    @app.task
    def fail() -> None:
        raise KeyError("missing")

    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    result = echo.apply(([[1, (2, 3)], when, Decimal("1.10")],))
    assert isinstance(result, EagerResult)
    assert result.get() == [[1, [2, 3]], when, Decimal("1.10")]  # tuples become lists, as on the wire
    assert result.successful() and result.state == states.SUCCESS
    failed = fail.apply()
    assert failed.failed()
    with pytest.raises(KeyError):
        failed.get()
    with pytest.raises(TypeError):  # not JSON-serializable: fails here as it would on a worker
        echo.apply((object(),))


def test_task_always_eager() -> None:
    app = make_app(task_always_eager=True)

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    result = add.delay(2, 2)
    assert result.get() == 4
    assert app._broker is None  # nothing was sent


@pytest.mark.parametrize("store", [True, False])
def test_task_store_eager_result(tmp_path: Any, store: bool) -> None:
    """With `task_store_eager_result`, an eager run stores its outcome as a worker would
    (not for a task that ignores its result); without, the backend never hears of it."""
    app = Celery("eager", broker="memory://", backend=f"sqlite:///{tmp_path}/results.db", set_as_current=False)
    app.conf.update(task_always_eager=True, task_store_eager_result=store)

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    @app.task
    def boom() -> None:
        raise KeyError("boom")

    @app.task(ignore_result=True)
    def quiet() -> int:
        return 1

    ok, failed, ignored = add.delay(2, 2), boom.delay(), quiet.delay()
    stored = [AsyncResult(r.id, app=app).state for r in (ok, failed, ignored)]
    if store:
        assert stored == [states.SUCCESS, states.FAILURE, states.PENDING]
        assert AsyncResult(ok.id, app=app).get() == 4
        assert isinstance(AsyncResult(failed.id, app=app).result, KeyError)
    else:
        assert stored == [states.PENDING] * 3
    app.close()


def test_shared_task_is_added_to_every_app() -> None:
    @shared_task
    def shared_ping() -> str:
        return "pong"

    later = make_app()
    assert shared_ping.name in later.tasks
    assert shared_ping() == "pong"


def test_async_result_reads_backend_states_and_rebuilds_exceptions() -> None:
    app = make_app()
    backend = app.backend
    res = AsyncResult("r1", app=app)
    assert res.state == states.PENDING and not res.ready() and res.result is None
    backend.store_result("r1", {"current": 1}, "PROGRESS")
    assert res.state == "PROGRESS" and res.info == {"current": 1}
    backend.mark_as_failure("r1", ValueError("bad value"), "Traceback ...")
    assert res.failed() and res.traceback == "Traceback ..."
    with pytest.raises(ValueError, match="bad value"):
        res.get(timeout=1)
    assert isinstance(res.get(propagate=False), ValueError)
    backend.store_result("r2", {"exc_type": "QuotaExceeded", "exc_message": ["over", 42],
                                "exc_module": "not.importable.module"}, states.FAILURE)
    with pytest.raises(Exception) as info:
        AsyncResult("r2", app=app).get(timeout=1)
    assert type(info.value).__name__ == "QuotaExceeded" and info.value.args == ("over", 42)
    backend.mark_as_done("r3", 5)
    done = AsyncResult("r3", app=app)
    assert done.get() == 5 and done.date_done is not None
    done.forget()
    assert AsyncResult("r3", app=app).state == states.PENDING


def test_get_timeout() -> None:
    from celeriac.exceptions import TimeoutError

    app = make_app()
    with pytest.raises(TimeoutError):
        AsyncResult("never", app=app).get(timeout=0.1)


def test_meta_shape_matches_celery() -> None:
    app = make_app(result_extended=True)
    backend = app.backend

    class Req:
        task = "tasks.add"
        args = [2, 3]
        kwargs: dict[str, Any] = {}
        hostname = "w1@vm"
        retries = 0
        delivery_info = {"routing_key": "celery"}
        group = "g1"
        parent_id = None

    meta = backend.store_result("w-add", 5, states.SUCCESS, request=Req())
    assert list(meta) == ["status", "result", "traceback", "children", "date_done", "group_id",
                          "name", "args", "kwargs", "worker", "retries", "queue", "task_id"]


def test_environment_broker_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    app = Celery("t", broker="sqlite:///a.db")
    assert app.broker_url == "sqlite:///a.db"
    assert app.result_backend_url is None  # a broker but no backend: results disabled
    monkeypatch.setenv("CELERY_BROKER_URL", "memory://env")
    assert app.broker_url == "memory://env"
    monkeypatch.setenv("CELERIAC_RESULT_BACKEND", "memory://res")
    assert app.result_backend_url == "memory://res"
    monkeypatch.delenv("CELERY_BROKER_URL")
    monkeypatch.delenv("CELERIAC_RESULT_BACKEND")
    zero = Celery("t")
    assert zero.broker_url == zero.result_backend_url == "sqlite:///celeriac.db"
