"""Canvases through a real worker process (`celeriac -A ... worker -P threads -c 4`) on SQLite:
chains, groups, chords (1,000 members), failing chord members, nested canvases, errbacks."""

from __future__ import annotations

import importlib.util
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac.canvas import chain, chord, group
from celeriac.exceptions import ChordError
from celeriac.result import GroupResult
from tests.helpers import Process, start_worker, wait_for, write_module

pytestmark = pytest.mark.slow

TASKS = """
    from pathlib import Path

    from celeriac import Celery
    from celeriac.canvas import register_builtin_tasks

    HERE = Path(__file__).resolve().parent
    app = Celery("canvas", broker=f"sqlite:///{HERE}/canvas.db", backend=f"sqlite:///{HERE}/canvas.db")
    register_builtin_tasks(app)  # harmless once the app registers them itself


    def mark(name):
        (HERE / "marks").mkdir(exist_ok=True)
        with open(HERE / "marks" / name, "a") as f:
            f.write("x")


    @app.task(name="ct.add")
    def add(x, y):
        return x + y


    @app.task(name="ct.tsum")
    def tsum(values):
        mark("tsum")
        return sum(values)


    @app.task(name="ct.ident")
    def ident(value):
        return value


    @app.task(name="ct.fail")
    def fail(*args):
        raise ValueError("boom")


    @app.task(name="ct.on_error")
    def on_error(request, exc, traceback):
        mark(f"new-{request.id}-{type(exc).__name__}")


    @app.task(name="ct.on_error_old")
    def on_error_old(task_id):
        mark(f"old-{task_id}")
"""


@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The task module, imported here as a client, with one worker running it."""
    directory = tmp_path_factory.mktemp("canvas")
    path = write_module(directory, "canvas_tasks.py", TASKS)
    spec = importlib.util.spec_from_file_location("canvas_tasks_client", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    worker: Process = start_worker(directory, "canvas_tasks", "-P", "threads", "-c", "4")
    module.directory = directory
    try:
        yield module
    finally:
        code = worker.stop(signal.SIGTERM)
        module.app.close()
        assert code == 0, worker.log
    sys.modules.pop("canvas_tasks_client", None)


def marks(ct: Any) -> set[str]:
    folder = ct.directory / "marks"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def test_chain(ct: Any) -> None:
    result = (ct.add.s(1, 2) | ct.add.s(3) | ct.add.si(10, 10) | ct.add.s(4)).apply_async()
    assert result.get(timeout=20) == 24
    assert result.parent.get(timeout=5) == 20 and result.parent.parent.parent.get(timeout=5) == 3
    assert ct.app.AsyncResult(result.id)._get_meta()["parent_id"] == result.parent.id


def test_group(ct: Any) -> None:
    result = group(ct.add.s(i, i) for i in range(200))()
    assert result.get(timeout=30) == [2 * i for i in range(200)]
    assert result.ready() and result.successful() and result.completed_count() == 200
    result.save()
    restored = GroupResult.restore(result.id, app=ct.app)
    assert restored is not None and restored.get(timeout=5) == [2 * i for i in range(200)]


def test_chord_of_1000_members_joins_once(ct: Any) -> None:
    before = (ct.directory / "marks" / "tsum").stat().st_size if (ct.directory / "marks" / "tsum").exists() else 0
    started = time.monotonic()
    result = chord([ct.add.s(i, i) for i in range(1000)], ct.tsum.s())()
    assert result.get(timeout=60) == 999_000
    elapsed = time.monotonic() - started
    assert (ct.directory / "marks" / "tsum").stat().st_size == before + 1  # the body ran once
    assert result.parent.completed_count() == 1000
    assert elapsed < 30


def test_failing_member_fails_the_chord_and_runs_the_body_errback(ct: Any) -> None:
    result = chord([ct.add.s(1, 1), ct.fail.s(), ct.add.s(2, 2)], ct.ident.s().on_error(ct.on_error.s()))()
    failing = result.parent.results[1].id
    with pytest.raises(ChordError, match=f"Dependency {failing} raised ValueError"):
        result.get(timeout=20, follow_parents=False)
    wait_for(lambda: f"new-{result.id}-ChordError" in marks(ct), 10, message="the body's errback")


def test_nested_canvases(ct: Any) -> None:
    add, tsum, ident = ct.add, ct.tsum, ct.ident
    # a chain inside a group inside a chord
    nested = chord([group(chain(add.s(1, 1), add.s(10)), add.s(2, 2)), add.s(3, 3)], ident.s())()
    # a group followed by a task in a chain is upgraded to a chord
    upgraded = (add.s(1, 1) | group(add.s(1), add.s(2)) | tsum.s() | add.s(100)).apply_async()
    # a chain ending in a chord: the worker running add(1, 2) expands the celery.chord step
    ending = chain(add.s(1, 2), chord([add.s(10), add.s(20)], tsum.s())).apply_async()
    # a chord inside a chord
    inner = chord([chord([add.s(5, 5), add.s(6, 6)], tsum.s()), add.s(1, 1)], ident.s())()
    assert nested.get(timeout=20) == [12, 4, 6]
    assert upgraded.get(timeout=20) == 107
    assert ending.get(timeout=20) == 36 and ending.parent.get(timeout=5) == [13, 23]
    assert inner.get(timeout=20) == [22, 2]


def test_chunks_map_starmap(ct: Any) -> None:
    assert ct.add.chunks([(i, i) for i in range(7)], 3).apply_async().get(timeout=20) == [[0, 2, 4], [6, 8, 10], [12]]
    assert ct.ident.map([1, 2]).apply_async().get(timeout=20) == [1, 2]
    assert ct.add.starmap([(1, 2), (3, 4)]).apply_async().get(timeout=20) == [3, 7]


def test_link_and_link_error(ct: Any) -> None:
    sig = ct.add.s(2, 2)
    sig.link(ct.add.s(100))
    assert sig.apply_async().get(timeout=20) == 4
    failing = ct.fail.s()
    failing.link_error(ct.on_error.s())
    failing.link_error(ct.on_error_old.s())
    result = failing.apply_async()
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=20)
    wait_for(lambda: {f"new-{result.id}-ValueError", f"old-{result.id}"} <= marks(ct), 10,
             message="both errbacks")


def test_failing_chain_stops_and_nothing_waits_forever(ct: Any) -> None:
    result = (ct.add.s(1, 1) | ct.fail.s() | ct.add.s(3)).on_error(ct.on_error_old.s()).apply_async()
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=20)
    assert result.state == "FAILURE"  # the step after the failure is failed too, not PENDING
    wait_for(lambda: f"old-{result.parent.id}" in marks(ct), 10, message="the chain's errback")
    in_chord = chord([chain(ct.fail.s(), ct.add.s(1)), ct.add.s(1, 1)], ct.tsum.s())()
    with pytest.raises(ChordError):
        in_chord.get(timeout=20, follow_parents=False)
