"""The SQLAlchemy result backend (Celery's table layout) on SQLite, PostgreSQL and MariaDB.

Each server test works in a schema (PostgreSQL) or database (MariaDB) of its own, dropped at
the end, so runs on one machine don't meet.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

sa = pytest.importorskip("sqlalchemy")

from celeriac import Celery, states  # noqa: E402
from celeriac.backends.database import DatabaseBackend, engine_url  # noqa: E402
from celeriac.exceptions import TimeoutError  # noqa: E402
from celeriac.result import AsyncResult  # noqa: E402
from celeriac.task import Context  # noqa: E402
from tests.services import require_service  # noqa: E402

PG_URL = "db+postgresql://postgres@127.0.0.1:5432/test"
MYSQL_ADMIN_URL = "mysql+pymysql://root@127.0.0.1:3306/test"
TABLE_KEYS = ("task", "group", "chord", "chordpart")


def tid() -> str:
    return str(uuid.uuid4())


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(backend URL, settings) for a fresh, private place in each database."""
    name = f"celeriac_t_{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        yield f"db+sqlite:///{tmp_path / 'results.db'}", {}
    elif request.param == "postgresql":
        require_service("PostgreSQL", "127.0.0.1", 5432)
        admin = sa.create_engine(engine_url(PG_URL), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {name}"))
        yield PG_URL, {"database_table_schemas": dict.fromkeys(TABLE_KEYS, name)}
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {name} CASCADE"))
        admin.dispose()
    else:
        require_service("MariaDB", "127.0.0.1", 3306)
        admin = sa.create_engine(MYSQL_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        # plain mysql://: the PyMySQL fallback is part of what is tested
        yield f"db+mysql://root@127.0.0.1:3306/{name}", {}
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE {name}"))
        admin.dispose()


@pytest.fixture
def make_backend(database: tuple[str, dict[str, Any]]) -> Iterator[Callable[..., DatabaseBackend]]:
    url, base_settings = database
    made: list[tuple[Celery, DatabaseBackend]] = []

    def make(**settings: Any) -> DatabaseBackend:
        app = Celery("dbtests", broker="memory://", backend="memory://", set_as_current=False,
                     **{**base_settings, **settings})
        backend = DatabaseBackend(app, url)
        made.append((app, backend))
        return backend

    yield make
    for app, backend in made:
        backend.close()
        app.close()


@pytest.fixture
def backend(make_backend: Callable[..., DatabaseBackend]) -> DatabaseBackend:
    return make_backend()


def request_for(task_id: str) -> Context:
    return Context(id=task_id, task="proj.tasks.add", args=[2, 3], kwargs={"z": 1},
                   hostname="w1@host", retries=2, delivery_info={"routing_key": "high"},
                   called_directly=False)


# -- unit: no database server ---------------------------------------------------------------------

def test_engine_url_picks_an_installed_driver() -> None:
    import importlib.util

    pg = engine_url("db+postgresql://u@h/db")
    expected = "postgresql" if importlib.util.find_spec("psycopg2") else "postgresql+psycopg"
    assert pg.drivername == expected and pg.database == "db"
    my = engine_url("db+mysql://root@h/db")
    assert my.drivername == ("mysql" if importlib.util.find_spec("MySQLdb") else "mysql+pymysql")
    assert engine_url("db+postgresql+psycopg://h/db").drivername == "postgresql+psycopg"
    assert engine_url("sqlite:///x.db").drivername == "sqlite"


def test_short_lived_sessions_keep_no_pool(tmp_path: Path) -> None:
    from sqlalchemy.pool import NullPool

    app = Celery("x", broker="memory://", backend="memory://", set_as_current=False,
                 database_short_lived_sessions=True)
    backend = DatabaseBackend(app, f"db+sqlite:///{tmp_path / 'r.db'}")
    assert isinstance(backend.engine.pool, NullPool)
    backend.close()


# -- every database ---------------------------------------------------------------------------------

def test_layout_is_celerys(backend: DatabaseBackend) -> None:
    from celery.backends.database.models import TaskExtended, TaskSet

    inspector = sa.inspect(backend.engine)
    task = backend.task_table
    columns = {c["name"] for c in inspector.get_columns(task.name, schema=task.schema)}
    assert task.name == "celery_taskmeta"
    assert columns == {c.name for c in TaskExtended.__table__.columns}
    group = backend.group_table
    assert group.name == "celery_tasksetmeta"
    assert {c["name"] for c in inspector.get_columns(group.name, schema=group.schema)} == {
        c.name for c in TaskSet.__table__.columns}


def test_states_round_trip(backend: DatabaseBackend) -> None:
    app = backend.app
    task_id = tid()
    assert backend.get_task_meta(task_id)["status"] == states.PENDING
    backend.mark_as_started(task_id, pid=1)
    meta = backend.get_task_meta(task_id)
    assert (meta["status"], meta["result"], meta["date_done"]) == ("STARTED", {"pid": 1}, None)
    backend.mark_as_done(task_id, {"total": [1, 2]})
    result = AsyncResult(task_id, backend=backend, app=app)
    assert result.get(timeout=1) == {"total": [1, 2]}
    assert result.date_done is not None and result.date_done.tzinfo is not None
    failed = tid()
    backend.mark_as_failure(failed, ValueError("bad", 3), traceback="Traceback ...")
    with pytest.raises(ValueError, match="bad"):
        AsyncResult(failed, backend=backend, app=app).get(timeout=1)
    assert backend.get_task_meta(failed)["traceback"] == "Traceback ..."


def test_the_result_column_holds_the_value_alone(backend: DatabaseBackend) -> None:
    task_id = tid()
    backend.mark_as_done(task_id, [1, "two"], request=None)
    table = backend.task_table
    with backend.engine.connect() as conn:
        row = conn.execute(sa.select(table).where(table.c.task_id == task_id)).one()
    assert bytes(row.result) == b'[1, "two"]'
    assert row.status == "SUCCESS" and row.date_done.tzinfo is None


def test_a_success_is_not_overwritten(backend: DatabaseBackend) -> None:
    task_id = tid()
    backend.mark_as_done(task_id, 1)
    backend.mark_as_failure(task_id, ValueError("second run"))
    assert backend.get_task_meta(task_id)["result"] == 1


def test_extended_fields_and_children(make_backend: Callable[..., DatabaseBackend]) -> None:
    backend = make_backend(result_extended=True)
    task_id = tid()
    backend.store_result(task_id, 5, states.SUCCESS, request=request_for(task_id),
                         children=[[["child", None], None]])
    meta = backend.get_task_meta(task_id)
    assert (meta["name"], meta["args"], meta["kwargs"]) == ("proj.tasks.add", [2, 3], {"z": 1})
    assert (meta["worker"], meta["retries"], meta["queue"]) == ("w1@host", 2, "high")
    assert meta["children"] == [[["child", None], None]]


def test_pickle_serializer(make_backend: Callable[..., DatabaseBackend]) -> None:
    backend = make_backend(result_serializer="pickle", accept_content=["json", "pickle"])
    task_id = tid()
    backend.mark_as_done(task_id, {1, 2})
    assert backend.get_task_meta(task_id)["result"] == {1, 2}


def test_many_metas_forget_and_cleanup(make_backend: Callable[..., DatabaseBackend]) -> None:
    backend = make_backend(result_expires=60)
    ids = [tid() for _ in range(3)]
    backend.store_many([backend.make_meta(ids[0], "a", states.SUCCESS),
                        backend.make_meta(ids[1], "b", states.SUCCESS)])
    metas = backend.get_many_metas(ids)
    assert [(m["task_id"], m["status"]) for m in metas] == [
        (ids[0], "SUCCESS"), (ids[1], "SUCCESS"), (ids[2], "PENDING")]
    backend.forget(ids[0])
    assert not backend.task_result_exists(ids[0]) and backend.task_result_exists(ids[1])
    group_id = tid()
    backend.save_group(group_id, [[group_id, None], []])
    started = tid()
    backend.mark_as_started(started)
    task, group = backend.task_table, backend.group_table
    old = datetime(2000, 1, 1)
    with backend.engine.begin() as conn:
        conn.execute(sa.update(task).where(task.c.task_id == ids[1]).values(date_done=old))
        conn.execute(sa.update(group).where(group.c.taskset_id == group_id).values(date_done=old))
    backend.chord_init("old-chord", 2)
    chord = backend.chord_table
    with backend.engine.begin() as conn:
        conn.execute(sa.update(chord).values(date_created=old))
    kept = tid()
    backend.mark_as_done(kept, "fresh")
    assert backend.cleanup() == 2
    assert backend.get_task_meta(ids[1])["status"] == states.PENDING
    assert backend.get_group(group_id) is None
    assert backend.get_task_meta(kept)["result"] == "fresh"
    assert backend.get_task_meta(started)["status"] == states.STARTED  # unfinished rows stay
    assert backend.chord_part_done("old-chord", "t", 0, states.SUCCESS, 1) is None


def test_groups(backend: DatabaseBackend) -> None:
    group_id = tid()
    saved = [[group_id, None], [[[tid(), None], None], [[tid(), None], None]]]
    backend.save_group(group_id, saved)
    backend.save_group(group_id, saved)  # saving again replaces
    assert backend.get_group(group_id) == saved
    backend.delete_group(group_id)
    assert backend.get_group(group_id) is None


def test_table_names_setting(make_backend: Callable[..., DatabaseBackend]) -> None:
    names = {"task": "my_tasks", "group": "my_groups", "chord": "my_chords", "chordpart": "my_parts"}
    backend = make_backend(database_table_names=names)
    backend.mark_as_done(tid(), 1)
    inspector = sa.inspect(backend.engine)
    present = set(inspector.get_table_names(schema=backend.task_table.schema))
    assert set(names.values()) <= present


def test_wait_for(backend: DatabaseBackend) -> None:
    task_id = tid()
    timer = threading.Timer(0.2, backend.mark_as_done, (task_id, "late"))
    timer.start()
    assert backend.wait_for(task_id, timeout=10, interval=0.05)["result"] == "late"
    with pytest.raises(TimeoutError):
        backend.wait_for(tid(), timeout=0.2, interval=0.05)


def test_missing_columns_are_added_to_an_old_table(database: tuple[str, dict[str, Any]]) -> None:
    url, settings = database
    schema = (settings.get("database_table_schemas") or {}).get("task")
    engine = sa.create_engine(engine_url(url))
    old = sa.MetaData()
    # as an older Celery made it: no children, stamps or extended columns
    sa.Table("celery_taskmeta", old,
             sa.Column("id", sa.Integer, sa.Sequence("task_id_sequence", schema=schema),
                       primary_key=True, autoincrement=True),
             sa.Column("task_id", sa.String(155), unique=True),
             sa.Column("status", sa.String(50)),
             sa.Column("result", sa.LargeBinary),
             sa.Column("date_done", sa.DateTime),
             sa.Column("traceback", sa.Text),
             schema=schema)
    old.create_all(engine)
    engine.dispose()
    app = Celery("x", broker="memory://", backend="memory://", set_as_current=False, **settings)
    backend = DatabaseBackend(app, url)
    task_id = tid()
    backend.store_result(task_id, 1, states.SUCCESS, children=[[["c", None], None]])
    assert backend.get_task_meta(task_id)["children"] == [[["c", None], None]]
    backend.close()


# -- chords -------------------------------------------------------------------------------------

def test_chord_counts_each_part_once_in_group_order(backend: DatabaseBackend) -> None:
    group_id = tid()
    backend.chord_init(group_id, 3)
    assert backend.chord_part_done(group_id, "c", 2, states.SUCCESS, "C") is None
    assert backend.chord_part_done(group_id, "a", 0, states.FAILURE, KeyError("k")) is None
    assert backend.chord_part_done(group_id, "a", 0, states.FAILURE, KeyError("k")) is None  # redelivered
    parts = backend.chord_part_done(group_id, "b", 1, states.SUCCESS, "B")
    assert parts == [("a", "FAILURE", {"exc_type": "KeyError", "exc_message": ["k"], "exc_module": "builtins"}),
                     ("b", "SUCCESS", "B"), ("c", "SUCCESS", "C")]
    assert backend.chord_part_done(group_id, "b", 1, states.SUCCESS, "B") is None  # claimed
    assert backend.chord_complete(group_id) is True
    assert backend.chord_part_done(group_id, "b", 1, states.SUCCESS, "B") is None  # gone
    assert backend.chord_complete(group_id) is False


def test_chord_add_and_a_lapsed_claim(backend: DatabaseBackend) -> None:
    group_id = tid()
    backend.chord_init(group_id, 1)
    backend.chord_add(group_id, 1)
    assert backend.chord_part_done(group_id, "a", 0, states.SUCCESS, 1) is None
    assert backend.chord_part_done(group_id, "b", 1, states.SUCCESS, 2) is not None
    # the claimer died before sending the body: once the claim lapses, a redelivery takes over
    backend._claims.clear()
    chord = backend.chord_table
    with backend.engine.begin() as conn:
        conn.execute(sa.update(chord).where(chord.c.group_id == group_id)
                     .values(claimed_until=datetime(2000, 1, 1)))
    assert backend.chord_part_done(group_id, "b", 1, states.SUCCESS, 2) == [
        ("a", "SUCCESS", 1), ("b", "SUCCESS", 2)]
    assert backend.chord_complete(group_id)


def test_chord_parts_in_parallel_complete_once(backend: DatabaseBackend) -> None:
    group_id = tid()
    size = 10
    backend.chord_init(group_id, size)
    barrier = threading.Barrier(size)
    winners: list[Any] = []
    errors: list[BaseException] = []

    def part(index: int) -> None:
        try:
            barrier.wait()
            out = backend.chord_part_done(group_id, f"t{index}", index, states.SUCCESS, index)
            if out is not None:
                winners.append(out)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=part, args=(i,)) for i in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert len(winners) == 1
    assert [value for _, _, value in winners[0]] == list(range(size))


def test_a_chord_through_a_real_worker(make_backend: Callable[..., DatabaseBackend]) -> None:
    from celeriac.canvas import chord
    from celeriac.testing import start_worker

    backend = make_backend()
    app = Celery("dbchord", broker=f"memory://{uuid.uuid4().hex}", set_as_current=False)
    app._backend = backend  # the scheme -> class line is the lead's; use this backend directly

    @app.task
    def square(x: int) -> int:
        return x * x

    @app.task
    def total(values: list[int]) -> int:
        return sum(values)

    with start_worker(app, pool="threads", concurrency=4):
        result = chord([square.s(i) for i in range(6)])(total.s())
        assert result.get(timeout=20) == sum(i * i for i in range(6))
        assert square.delay(7).get(timeout=10) == 49
    app.close()


# -- interop with Celery's own DatabaseBackend ------------------------------------------------

@pytest.fixture
def pg_schema() -> Iterator[str]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"celeriac_t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(engine_url(PG_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {name}"))
    yield name
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {name} CASCADE"))
    admin.dispose()


def test_celery_reads_our_rows_and_we_read_celerys(pg_schema: str) -> None:
    import celery
    from celery.backends.database import DatabaseBackend as CeleryDatabaseBackend

    schemas = {"task": pg_schema, "group": pg_schema}
    ours_app = Celery("ours", broker="memory://", backend="memory://", set_as_current=False,
                      result_extended=True, database_table_schemas=dict.fromkeys(TABLE_KEYS, pg_schema))
    ours = DatabaseBackend(ours_app, PG_URL)
    their_app = celery.Celery("theirs", set_as_default=False)
    their_app.conf.update(result_extended=True, database_table_schemas=schemas)
    theirs = CeleryDatabaseBackend(app=their_app, url="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    try:
        # ours -> Celery
        done, failed = tid(), tid()
        ours.store_result(done, {"a": [1, 2]}, states.SUCCESS, request=request_for(done))
        ours.mark_as_failure(failed, KeyError("missing"), traceback="tb")
        meta = theirs.get_task_meta(done)
        assert (meta["status"], meta["result"]) == ("SUCCESS", {"a": [1, 2]})
        assert (meta["name"], meta["args"], meta["kwargs"], meta["queue"]) == (
            "proj.tasks.add", [2, 3], {"z": 1}, "high")
        bad = theirs.get_task_meta(failed)
        assert isinstance(bad["result"], KeyError) and bad["traceback"] == "tb"
        group_id = tid()
        ours.save_group(group_id, [[group_id, None], [[[done, None], None]]])
        assert [r.id for r in theirs.restore_group(group_id).results] == [done]

        # Celery -> ours
        theirs_done, theirs_failed = tid(), tid()
        theirs.store_result(theirs_done, [1, "x"], "SUCCESS")
        theirs.mark_as_failure(theirs_failed, ValueError("v"), traceback="their tb")
        assert ours.get_task_meta(theirs_done)["result"] == [1, "x"]
        with pytest.raises(ValueError, match="v"):
            AsyncResult(theirs_failed, backend=ours, app=ours_app).get(timeout=1)
        their_group = tid()
        theirs.save_group(their_group, their_app.GroupResult(their_group, [their_app.AsyncResult(theirs_done)]))
        assert ours.get_group(their_group) == [[their_group, None], [[[theirs_done, None], None]]]
        ours.mark_as_done(theirs_done, "again")  # a SUCCESS written by Celery is kept too
        assert theirs.get_task_meta(theirs_done)["result"] == [1, "x"]
    finally:
        ours.close()
        theirs.session_manager.invalidate(theirs.url)
        their_app.close()
        ours_app.close()


def test_purge_results_command_and_backend_cleanup_task(tmp_path: Path) -> None:
    """`celeriac -A app purge-results` and the `celery.backend_cleanup` task delete expired rows."""
    import subprocess
    import sys
    import textwrap

    (tmp_path / "cleanapp.py").write_text(textwrap.dedent(f"""
        from celeriac import Celery
        app = Celery('clean', broker='memory://', backend='db+sqlite:///{tmp_path}/r.db',
                     result_expires=1)
    """))
    sys.path.insert(0, str(tmp_path))
    try:
        import cleanapp
    finally:
        sys.path.remove(str(tmp_path))
    backend = cleanapp.app.backend
    backend.mark_as_done("old-1", 1)
    backend.mark_as_done("old-2", 2)
    time.sleep(2.1)
    backend.mark_as_done("fresh", 3)
    celeriac = str(Path(sys.executable).with_name("celeriac"))
    out = subprocess.run([celeriac, "-A", "cleanapp", "purge-results"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "Deleted 2 expired results." in out.stdout
    assert backend.get_task_meta("fresh")["status"] == "SUCCESS"
    assert backend.get_task_meta("old-1")["status"] == "PENDING"
    backend.mark_as_done("old-3", 4)
    time.sleep(2.1)
    assert cleanapp.app.tasks["celery.backend_cleanup"].apply().get() == 2  # old-3 and fresh
