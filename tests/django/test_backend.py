"""The django-db result backend, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.db import connections

from celeriac import Celery, states
from celeriac.contrib.django.backend import DatabaseBackend
from celeriac.contrib.django.models import ChordCounter, GroupResult, TaskResult
from celeriac.result import AsyncResult
from celeriac.task import Context

from . import settings as test_settings


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("djtests", broker="memory://", backend="memory://", set_as_current=False)
    yield app
    app.close()


@pytest.fixture
def backend(app: Celery, alias: str) -> DatabaseBackend:
    return DatabaseBackend(app)


def tid() -> str:
    return str(uuid.uuid4())


def request_for(task_id: str, **fields: object) -> Context:
    headers = {"argsrepr": "(2, 3)", "kwargsrepr": "{'z': 1}", "periodic_task_name": "every-minute"}
    return Context(id=task_id, task="proj.tasks.add", args=[2, 3], kwargs={"z": 1},
                   hostname="w1@host", retries=0, delivery_info={"routing_key": "celery"},
                   headers=headers, called_directly=False, **fields)


def test_unknown_task_is_pending(backend: DatabaseBackend) -> None:
    meta = backend.get_task_meta("nope")
    assert meta["status"] == states.PENDING and meta["result"] is None


def test_success_round_trip(backend: DatabaseBackend, app: Celery) -> None:
    task_id = tid()
    backend.mark_as_started(task_id)
    row = TaskResult.objects.get(task_id=task_id)
    assert row.status == states.STARTED and row.date_started is not None
    backend.mark_as_done(task_id, {"sum": [1, 2]})
    row.refresh_from_db()
    assert (row.status, row.content_type, row.content_encoding) == ("SUCCESS", "application/json", "utf-8")
    assert json.loads(row.result) == {"sum": [1, 2]}
    result = AsyncResult(task_id, backend=backend, app=app)
    assert result.get(timeout=1) == {"sum": [1, 2]}
    assert result.date_done is not None


def test_failure_is_rebuilt_as_the_exception(backend: DatabaseBackend, app: Celery) -> None:
    task_id = tid()
    backend.mark_as_failure(task_id, KeyError("missing"), traceback="Traceback: ...")
    result = AsyncResult(task_id, backend=backend, app=app)
    with pytest.raises(KeyError):
        result.get(timeout=1)
    assert result.traceback == "Traceback: ..."
    assert json.loads(TaskResult.objects.get(task_id=task_id).result)["exc_type"] == "KeyError"


def test_a_success_is_not_overwritten(backend: DatabaseBackend) -> None:
    task_id = tid()
    backend.mark_as_done(task_id, 1)
    backend.mark_as_failure(task_id, ValueError("late"))
    assert backend.get_task_meta(task_id)["result"] == 1


def test_extended_fields(app: Celery, alias: str) -> None:
    app.conf.result_extended = True
    backend = DatabaseBackend(app)
    task_id = tid()
    backend.mark_as_done(task_id, 5, request=request_for(task_id, group="g1"))
    row = TaskResult.objects.get(task_id=task_id)
    assert row.task_name == "proj.tasks.add"
    assert row.worker == "w1@host"
    assert row.periodic_task_name == "every-minute"
    assert json.loads(row.task_args) == "(2, 3)"  # argsrepr, as django-celery-results stores it
    assert json.loads(row.meta) == {"children": [], "group_id": "g1"}
    meta = backend.get_task_meta(task_id)
    assert (meta["name"], meta["args"], meta["worker"], meta["group_id"]) == (
        "proj.tasks.add", "(2, 3)", "w1@host", "g1")


def test_pickle_results_are_base64_text(app: Celery, alias: str) -> None:
    app.conf.update(result_serializer="pickle", accept_content=["json", "pickle"])
    backend = DatabaseBackend(app)
    task_id = tid()
    backend.mark_as_done(task_id, {1, 2})
    row = TaskResult.objects.get(task_id=task_id)
    assert (row.content_type, row.content_encoding) == ("application/x-python-serialize", "binary")
    assert backend.get_task_meta(task_id)["result"] == {1, 2}


def test_many_metas_forget_and_cleanup(backend: DatabaseBackend) -> None:
    ids = [tid() for _ in range(3)]
    for number, task_id in enumerate(ids[:2]):
        backend.mark_as_done(task_id, number)
    metas = backend.get_many_metas(ids)
    assert [m["status"] for m in metas] == ["SUCCESS", "SUCCESS", "PENDING"]
    assert [m["task_id"] for m in metas] == ids
    backend.forget(ids[0])
    assert backend.get_task_meta(ids[0])["status"] == states.PENDING
    from django.utils import timezone

    TaskResult.objects.filter(task_id=ids[1]).update(date_done=timezone.now() - timedelta(days=2))
    keep = tid()
    backend.mark_as_done(keep, "fresh")
    assert backend.cleanup() == 1
    assert backend.get_task_meta(ids[1])["status"] == states.PENDING
    assert backend.get_task_meta(keep)["result"] == "fresh"


def test_groups(backend: DatabaseBackend) -> None:
    group_id = tid()
    saved = [[group_id, None], [[[tid(), None], None]]]
    backend.save_group(group_id, saved)
    assert backend.get_group(group_id) == saved
    assert GroupResult.objects.get(group_id=group_id).content_type == "application/json"
    backend.delete_group(group_id)
    assert backend.get_group(group_id) is None


def test_chord_counts_each_part_once_and_returns_ordered_results(backend: DatabaseBackend) -> None:
    group_id = tid()
    ids = [tid() for _ in range(3)]
    backend.chord_init(group_id, 3)
    assert ChordCounter.objects.get(group_id=group_id).count == 3
    for index in (2, 0):
        backend.mark_as_done(ids[index], index * 10)
        assert backend.chord_part_done(group_id, ids[index], index, states.SUCCESS, index * 10) is None
    # a redelivered part is not counted again
    assert backend.chord_part_done(group_id, ids[0], 0, states.SUCCESS, 0) is None
    backend.mark_as_done(ids[1], 10)
    parts = backend.chord_part_done(group_id, ids[1], 1, states.SUCCESS, 10)
    assert parts == [(ids[0], "SUCCESS", 0), (ids[1], "SUCCESS", 10), (ids[2], "SUCCESS", 20)]
    assert not ChordCounter.objects.filter(group_id=group_id).exists()
    assert backend.chord_part_done(group_id, ids[1], 1, states.SUCCESS, 10) is None
    assert backend.chord_complete(group_id)


def test_chord_parts_in_parallel_complete_once(backend: DatabaseBackend, alias: str) -> None:
    group_id = tid()
    size = 8
    ids = [tid() for _ in range(size)]
    backend.chord_init(group_id, size)
    winners: list[object] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(size)

    def part(index: int) -> None:
        try:
            backend.mark_as_done(ids[index], index)
            barrier.wait()
            out = backend.chord_part_done(group_id, ids[index], index, states.SUCCESS, index)
            if out is not None:
                winners.append(out)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=part, args=(i,)) for i in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert len(winners) == 1
    assert [value for _, _, value in winners[0]] == list(range(size))  # type: ignore[attr-defined]


def test_chord_add_grows_the_header(backend: DatabaseBackend) -> None:
    group_id = tid()
    backend.chord_init(group_id, 1)
    backend.chord_add(group_id, 1)
    first, second = tid(), tid()
    backend.mark_as_done(first, "a")
    assert backend.chord_part_done(group_id, first, 0, states.SUCCESS, "a") is None
    backend.mark_as_done(second, "b")
    assert backend.chord_part_done(group_id, second, 1, states.SUCCESS, "b") == [
        (first, "SUCCESS", "a"), (second, "SUCCESS", "b")]


# -- the same rows as django-celery-results -------------------------------------------------------

needs_dcr = pytest.mark.skipif(not test_settings.HAS_DJANGO_CELERY_RESULTS,
                               reason="django-celery-results is not installed")


@needs_dcr
def test_model_layout_matches_django_celery_results() -> None:
    from django.db import connection
    from django_celery_results import models as theirs

    from celeriac.contrib.django import models as ours

    def layout(model: type) -> tuple:
        meta = model._meta  # type: ignore[attr-defined]
        fields = sorted((f.column, f.db_type(connection), f.null, f.unique, f.primary_key)
                        for f in meta.local_fields)
        indexes = sorted((i.name, tuple(i.fields)) for i in meta.indexes)
        return meta.db_table, fields, indexes

    for name in ("TaskResult", "GroupResult", "ChordCounter"):
        assert layout(getattr(ours, name)) == layout(getattr(theirs, name)), name


@needs_dcr
def test_django_celery_results_reads_our_rows_and_we_read_theirs(alias: str) -> None:
    import celery
    from django_celery_results.backends.database import DatabaseBackend as TheirBackend

    ours_app = Celery("ours", broker="memory://", backend="memory://", set_as_current=False,
                      result_extended=True)
    ours = DatabaseBackend(ours_app)
    their_app = celery.Celery("theirs", set_as_default=False)
    their_app.conf.result_extended = True
    theirs = TheirBackend(app=their_app, url="django-db")

    mine = tid()
    ours.mark_as_failure(mine, ValueError("bad", 1), traceback="tb", request=request_for(mine))
    read = theirs.get_task_meta(mine)
    assert read["status"] == "FAILURE"
    assert isinstance(read["result"], ValueError) and read["result"].args == ("bad", 1)
    assert read["task_name"] == "proj.tasks.add" and read["args"] == "(2, 3)"

    their_id = tid()
    theirs.store_result(their_id, {"x": [1]}, "SUCCESS")
    meta = ours.get_task_meta(their_id)
    assert (meta["status"], meta["result"]) == ("SUCCESS", {"x": [1]})

    group_id = tid()
    ours.save_group(group_id, [[group_id, None], [[[mine, None], None]]])
    restored = theirs.restore_group(group_id)
    assert [r.id for r in restored.results] == [mine]
    their_app.close()
    ours_app.close()


@needs_dcr
def test_a_chord_counter_made_by_django_celery_results_is_counted(backend: DatabaseBackend) -> None:
    group_id, first, second = tid(), tid(), tid()
    ChordCounter.objects.create(group_id=group_id, count=2, sub_tasks=json.dumps(
        [[[first, None], None], [[second, None], None]]))
    backend.mark_as_done(first, 1)
    assert backend.chord_part_done(group_id, first, 0, states.SUCCESS, 1) is None
    backend.mark_as_done(second, 2)
    assert backend.chord_part_done(group_id, second, 1, states.SUCCESS, 2) == [
        (first, "SUCCESS", 1), (second, "SUCCESS", 2)]
