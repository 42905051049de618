"""The canvas without a worker process: signature shapes (against real Celery 5.7), the
messages chains, groups and chords publish, and what a worker does next (links, errbacks,
chord joins), run by executing the published messages one by one in this process."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import uuid
from types import SimpleNamespace
from typing import Any

import celery
import pytest

from celeriac import Celery, GroupResult, states
from celeriac.backends.memory import MemoryBackend
from celeriac.backends.sqlite import SQLiteBackend
from celeriac.canvas import (
    Signature,
    chain,
    chord,
    chunks,
    group,
    maybe_signature,
    register_builtin_tasks,
    signature,
    xmap,
    xstarmap,
)
from celeriac.exceptions import ChordError
from celeriac.protocol import decode_body, task_message_from_envelope
from celeriac.worker.execute import Job, execute_job

# -- apps: ours and real Celery's, with the same task names ---------------------------------


def make_app(**settings: Any) -> Celery:
    app = Celery("t", broker=f"memory://{uuid.uuid4().hex}", backend=f"memory://{uuid.uuid4().hex}",
                 **settings)
    register_builtin_tasks(app)
    return app


@pytest.fixture
def app() -> Celery:
    return make_app()


@pytest.fixture
def tasks(app: Celery) -> Any:
    calls: list[Any] = []

    @app.task(name="tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="tasks.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    @app.task(name="tasks.fail")
    def fail(*args: Any) -> None:
        raise ValueError("boom")

    @app.task(name="tasks.ident")
    def ident(value: Any) -> Any:
        return value

    @app.task(name="tasks.on_error")
    def on_error(request: Any, exc: BaseException, traceback: Any) -> None:
        calls.append(("new", request.id, repr(exc)))

    @app.task(name="tasks.on_error_old")
    def on_error_old(task_id: str) -> None:
        calls.append(("old", task_id))

    return SimpleNamespace(add=add, tsum=tsum, fail=fail, ident=ident, on_error=on_error,
                           on_error_old=on_error_old, calls=calls)


@pytest.fixture(scope="module")
def capp() -> Any:
    capp = celery.Celery("t", broker="memory://", backend="cache+memory://", set_as_current=False)

    @capp.task(name="tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    @capp.task(name="tasks.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    return capp


def wire(sig: Any) -> Any:
    """A signature as the JSON on the wire (tuples become lists)."""
    return json.loads(json.dumps(sig))


# -- the queue: published envelopes, and running them like a worker ---------------------------


def published(app: Celery) -> list[Any]:
    """Envelopes waiting in the default queue, in publish order (and take them out)."""
    sub = app.broker.subscribe(["celery"], prefetch=100000)
    deliveries = sub.get_many(100000, 0)
    sub.ack_many(deliveries)
    return [d.envelope for d in deliveries]


def body_of(envelope: Any) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    return decode_body(task_message_from_envelope(envelope, None), None)


_tags = itertools.count()


def run_worker(app: Celery, deliver_twice: str = "") -> int:
    """Execute the queued messages here, one at a time, until the queue is empty.

    Messages of the task named `deliver_twice` are executed twice (a redelivery).
    """
    done = 0
    while True:
        envelopes = published(app)
        if not envelopes:
            return done
        for envelope in envelopes:
            for _ in range(2 if envelope.headers["task"] == deliver_twice else 1):
                job = Job(next(_tags), task_message_from_envelope(envelope, None),
                          {"routing_key": "celery", "exchange": ""}, None)
                execute_job(app, job, "test@host")
            done += 1


# -- signature shapes, compared with real Celery -------------------------------------------


def test_signature_dicts_equal_celerys(app: Celery, tasks: Any, capp: Any) -> None:
    cadd = capp.tasks["tasks.add"]
    add = tasks.add
    assert dict(add.s(1)) == dict(cadd.s(1))
    assert dict(add.si(1, y=2)) == dict(cadd.si(1, y=2))
    assert dict(add.s(1).set(queue="q", countdown=3)) == dict(cadd.s(1).set(queue="q", countdown=3))
    assert dict(add.signature((1,), {"y": 2}, countdown=1)) == dict(cadd.signature((1,), {"y": 2}, countdown=1))
    ours = signature("x.y", args=(1,), kwargs={"a": 1}, options={"q": 1})
    theirs = celery.signature("x.y", args=(1,), kwargs={"a": 1}, options={"q": 1})
    assert dict(ours) == dict(theirs)
    assert type(ours) is Signature and isinstance(ours, dict)
    linked, clinked = add.s(1), cadd.s(1)
    linked.link(tasks.tsum.s())
    linked.link_error(tasks.tsum.si([1]))
    clinked.link(capp.tasks["tasks.tsum"].s())
    clinked.link_error(capp.tasks["tasks.tsum"].si([1]))
    assert wire(linked) == wire(clinked)
    assert wire(add.s(2).clone((1,), {"z": 3}, queue="x")) == wire(cadd.s(2).clone((1,), {"z": 3}, queue="x"))


def test_canvas_dicts_equal_celerys(app: Celery, tasks: Any, capp: Any) -> None:
    add, tsum = tasks.add, tasks.tsum
    cadd, ctsum = capp.tasks["tasks.add"], capp.tasks["tasks.tsum"]
    pairs = [
        (chain(add.s(1, 2), add.s(3)), celery.chain(cadd.s(1, 2), cadd.s(3))),
        (add.s(1, 2) | add.s(3) | add.s(4), cadd.s(1, 2) | cadd.s(3) | cadd.s(4)),
        (group(add.s(1, 1), add.s(2, 2)), celery.group(cadd.s(1, 1), cadd.s(2, 2))),
        (group([add.s(i, i) for i in range(3)]), celery.group([cadd.s(i, i) for i in range(3)])),
        (chord([add.s(1, 1), add.s(2, 2)], tsum.s()), celery.chord([cadd.s(1, 1), cadd.s(2, 2)], ctsum.s())),
        (chord([add.s(1, 1)]), celery.chord([cadd.s(1, 1)])),
        (add.chunks([(1, 2), (3, 4), (5, 6)], 2), cadd.chunks([(1, 2), (3, 4), (5, 6)], 2)),
        (add.map([1, 2]), cadd.map([1, 2])),
        (add.starmap([(1, 2)]), cadd.starmap([(1, 2)])),
        # a group followed by a task is upgraded to a chord, inside a chain too
        (add.s(1) | group(add.s(1), add.s(2)) | tsum.s(), cadd.s(1) | celery.group(cadd.s(1), cadd.s(2)) | ctsum.s()),
        (group(add.s(1), add.s(2)) | tsum.s(), celery.group(cadd.s(1), cadd.s(2)) | ctsum.s()),
        (chain(group(add.s(1), add.s(2)), tsum.s()), celery.chain(celery.group(cadd.s(1), cadd.s(2)), ctsum.s())),
        # a task after a chord joins its body
        (chord([add.s(1), add.s(2)], tsum.s()) | add.s(5), celery.chord([cadd.s(1), cadd.s(2)], ctsum.s()) | cadd.s(5)),
        (add.s(1) | chord([add.s(1), add.s(2)], tsum.s()), cadd.s(1) | celery.chord([cadd.s(1), cadd.s(2)], ctsum.s())),
        (add.s(1) | (add.s(2) | add.s(3)), cadd.s(1) | (cadd.s(2) | cadd.s(3))),
        (add.s(1) | group(add.s(2)), cadd.s(1) | celery.group(cadd.s(2))),
    ]
    for ours, theirs in pairs:
        assert wire(ours) == wire(theirs), repr(theirs)
        assert type(ours).__name__ == type(theirs).__name__, repr(theirs)


def test_rebuilding_from_dicts_gives_the_canvas_types(app: Celery, tasks: Any, capp: Any) -> None:
    cadd, ctsum = capp.tasks["tasks.add"], capp.tasks["tasks.tsum"]
    for theirs in (celery.chain(cadd.s(1), cadd.s(2)), celery.group(cadd.s(1), cadd.s(2)),
                   celery.chord([cadd.s(1)], ctsum.s())):
        ours = maybe_signature(wire(theirs), app=app)
        assert type(ours).__name__ == type(theirs).__name__
        assert wire(ours) == wire(theirs)
    assert maybe_signature(None) is None
    sig = tasks.add.s(1)
    assert maybe_signature(sig) is sig and maybe_signature(sig, clone=True) is not sig
    assert signature(sig) == sig and signature(sig) is not sig


def test_partials_clone_set_immutable_and_repr(app: Celery, tasks: Any) -> None:
    add = tasks.add
    sig = add.s(2)
    assert sig.clone((1,)).args == (1, 2)
    assert sig.args == (2,)  # clone does not change the original
    assert add.si(2, 2).clone((1,)).args == (2, 2)  # immutable: partial args ignored
    assert add.s(y=1).clone(kwargs={"x": 2}).kwargs == {"y": 1, "x": 2}
    assert sig.set(queue="q").options == {"queue": "q"} and sig.set(immutable=True).immutable
    assert repr(add.s(1, y=2)) == "tasks.add(1, y=2)"
    assert repr(add.s(1) | add.s(2)) == "tasks.add(1) | tasks.add(2)"
    assert repr(group(add.s(1))) == "group([tasks.add(1)])"
    assert add.s(1).on_error(tasks.on_error.s())["options"]["link_error"] == [tasks.on_error.s()]
    assert add.s(2)(3) == 5  # calling a signature runs the task here
    assert chord([add.s(1), add.s(2)], tasks.tsum.s()).__length_hint__() == 2
    original = add.s(1)
    first = group(original, add.s(2)).clone()
    first.tasks[0].set(queue="changed")
    assert "queue" not in original.options


# -- what gets published ---------------------------------------------------------------------


def test_chain_publishes_the_first_task_with_the_rest_reversed(app: Celery, tasks: Any) -> None:
    add = tasks.add
    result = chain(add.s(1, 2), add.s(3), add.s(4)).apply_async()
    (envelope,) = published(app)
    args, _, embed = body_of(envelope)
    assert args == [1, 2] and envelope.headers["id"] == result.parent.parent.id
    assert [step["args"] for step in embed["chain"]] == [[4], [3]]
    assert [step["options"]["task_id"] for step in embed["chain"]] == [result.id, result.parent.id]
    assert set(embed["chain"][0]["options"]) == {"task_id", "reply_to"}
    assert embed["callbacks"] is None and embed["chord"] is None


def test_group_is_one_batch_with_group_ids_and_indexes(app: Celery, tasks: Any) -> None:
    batches: list[int] = []
    original = app.broker.publish_many
    app.broker.publish_many = lambda items, **kw: (batches.append(len(items)), original(items, **kw))[1]  # type: ignore[method-assign]
    result = group(tasks.add.s(i, i) for i in range(10_000)).apply_async(task_id="grp-id")
    assert batches == [10_000]
    assert isinstance(result, GroupResult) and result.id == "grp-id" and len(result) == 10_000
    envelopes = published(app)
    assert [e.headers["group_index"] for e in envelopes[:3]] == [0, 1, 2]
    assert {e.headers["group"] for e in envelopes} == {"grp-id"}
    assert all(e.headers["root_id"] == e.headers["id"] for e in envelopes[:10])
    assert [e.headers["id"] for e in envelopes] == [r.id for r in result]


def test_chord_sets_its_size_then_sends_the_header_with_the_body(app: Celery, tasks: Any) -> None:
    sizes: list[tuple[str, int]] = []
    original = app.backend.chord_init
    app.backend.chord_init = lambda gid, size: (sizes.append((gid, size)), original(gid, size))[1]  # type: ignore[method-assign]
    result = chord([tasks.add.s(1, 1), tasks.add.s(2, 2)], tasks.tsum.s()).apply_async(task_id="body-id")
    gid = result.parent.id
    assert sizes == [(gid, 2)] and result.id == "body-id"
    envelopes = published(app)
    assert [e.headers["group_index"] for e in envelopes] == [0, 1]
    assert {e.headers["group"] for e in envelopes} == {gid}
    body = body_of(envelopes[0])[2]["chord"]
    assert body["task"] == "tasks.tsum" and body["options"]["task_id"] == "body-id"
    assert body["options"]["group_id"] == gid and "chord" not in body["options"]
    assert chord([tasks.add.s(1)])(tasks.tsum.s()).parent is not None


def test_chain_ending_in_a_chord_embeds_it_as_celery_chord(app: Celery, tasks: Any) -> None:
    result = chain(tasks.add.s(1, 2), chord([tasks.add.s(10), tasks.add.s(20)], tasks.tsum.s())).apply_async()
    (envelope,) = published(app)
    (step,) = body_of(envelope)[2]["chain"]
    assert step["task"] == "celery.chord" and step["subtask_type"] == "chord"
    header, body = step["kwargs"]["header"], step["kwargs"]["body"]
    assert header["task"] == "celery.group" and header["subtask_type"] == "group"
    assert step["options"]["task_id"] == header["options"]["task_id"] == result.parent.id
    assert [t["options"]["group_index"] for t in header["kwargs"]["tasks"]] == [0, 1]
    assert body["options"]["task_id"] == result.id
    assert set(step["kwargs"]) == {"kwargs", "header", "body"}


def test_countdown_of_a_chord_delays_the_header_only(app: Celery, tasks: Any) -> None:
    chord([tasks.add.s(1, 1)], tasks.tsum.s()).apply_async(countdown=60)
    assert published(app) == []  # delayed in the broker


# -- running: chains, groups, chords, errors ---------------------------------------------------


def test_chain_runs_with_parent_results(app: Celery, tasks: Any) -> None:
    result = (tasks.add.s(1, 2) | tasks.add.s(3) | tasks.add.si(10, 10)).apply_async()
    assert run_worker(app) == 3
    assert result.get(timeout=1) == 20
    assert result.parent.get() == 6 and result.parent.parent.get() == 3
    assert app.AsyncResult(result.id)._get_meta()["parent_id"] == result.parent.id
    partial = chain(tasks.add.s(1), tasks.add.s(2)).apply_async((10,))
    run_worker(app)
    assert partial.get(timeout=1) == 13


def test_group_results(app: Celery, tasks: Any) -> None:
    result = group(tasks.add.s(i, i) for i in range(5))()
    assert not result.ready() and result.completed_count() == 0 and result.waiting()
    run_worker(app)
    assert result.get(timeout=1) == [0, 2, 4, 6, 8]
    assert result.ready() and result.successful() and not result.failed()
    assert result.completed_count() == 5
    seen: list[Any] = []
    assert result.join(callback=lambda tid, value: seen.append(value)) == [0, 2, 4, 6, 8]
    assert seen == [0, 2, 4, 6, 8]


def test_chords_join_once_with_ordered_results(app: Celery, tasks: Any) -> None:
    result = chord([tasks.add.s(i, i) for i in range(50)], tasks.ident.s())()
    run_worker(app)
    assert result.get(timeout=1) == [2 * i for i in range(50)]
    called = chord([tasks.add.s(1, 1), tasks.add.s(2, 2)])(tasks.tsum.s())
    run_worker(app)
    assert called.get(timeout=1) == 6
    empty = chord([], tasks.ident.s()).apply_async()
    run_worker(app)
    assert empty.get(timeout=1) == []


def test_a_part_delivered_twice_counts_once(app: Celery, tasks: Any) -> None:
    bodies: list[Any] = []

    @app.task(name="tasks.collect")
    def collect(values: list[int]) -> int:
        bodies.append(values)
        return len(values)

    result = chord([tasks.add.s(i, 1) for i in range(5)], collect.s())()
    run_worker(app, deliver_twice="tasks.add")
    assert result.get(timeout=1) == 5
    assert bodies == [[1, 2, 3, 4, 5]]


def test_nested_canvases(app: Celery, tasks: Any) -> None:
    add, tsum = tasks.add, tasks.tsum
    # a chain, a group and a chord inside a chord
    nested = chord([add.s(1, 1), chain(add.s(2, 2), add.s(10)), group(add.s(3, 3), add.s(4, 4)),
                    chord([add.s(5, 5), add.s(6, 6)], tsum.s())], tasks.ident.s())()
    # a group followed by tasks in a chain becomes a chord
    upgraded = (add.s(1, 1) | group(add.s(1), add.s(2)) | tsum.s() | add.s(100)).apply_async()
    # a chain ending in a chord: the worker that runs add(1, 2) expands it
    ending = chain(add.s(1, 2), chord([add.s(10), add.s(20)], tsum.s())).apply_async()
    # a chain with a chord in the middle
    middle = chain(add.s(1, 1), chord([add.s(1), add.s(2)], tsum.s()), add.s(1000)).apply_async()
    mixed = group(chain(add.s(1, 1), add.s(1)), chord([add.s(2, 2), add.s(3, 3)], tsum.s()), add.s(5, 5))()
    run_worker(app)
    assert nested.get(timeout=1) == [2, 14, 6, 8, 22]
    assert upgraded.get(timeout=1) == 107
    assert ending.get(timeout=1) == 36 and ending.parent.get() == [13, 23] and ending.parent.parent.get() == 3
    assert middle.get(timeout=1) == 1007
    assert mixed.get(timeout=1) == [3, 10, 10]


def test_chunks_map_starmap(app: Celery, tasks: Any) -> None:
    chunked = tasks.add.chunks([(i, i) for i in range(10)], 3).apply_async()
    mapped = tasks.ident.map([1, 2, 3]).apply_async()
    starred = tasks.add.starmap([(1, 2), (3, 4)]).apply_async()
    in_chain = (tasks.ident.s([(1, 1), (2, 2)]) | xstarmap(tasks.add.s(), [(5, 5)])).apply_async()
    run_worker(app)
    assert chunked.get(timeout=1) == [[0, 2, 4], [6, 8, 10], [12, 14, 16], [18]]
    assert mapped.get(timeout=1) == [1, 2, 3] and starred.get(timeout=1) == [3, 7]
    assert in_chain.get(timeout=1) == [10]  # immutable: the parent's result is not passed
    assert isinstance(chunks(tasks.add.s(), [(1, 1)], 1), Signature)
    assert xmap(tasks.add.s(), [1])["task"] == "celery.map"


def test_failing_chain_stops_and_fails_what_follows(app: Celery, tasks: Any) -> None:
    result = (tasks.add.s(1, 1) | tasks.fail.s() | tasks.add.s(3) | tasks.add.s(4)).on_error(
        tasks.on_error_old.s()).apply_async()
    ran = run_worker(app)
    assert ran == 3  # add, fail, then the errback; add(3) and add(4) never run
    failed_id = result.parent.parent.id
    assert tasks.calls == [("old", failed_id)]
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=1)
    assert result.state == result.parent.state == states.FAILURE


def test_errback_conventions(app: Celery, tasks: Any) -> None:
    sig = tasks.fail.s()
    sig.link_error(tasks.on_error.s())
    sig.link_error(tasks.on_error_old.s())
    result = sig.apply_async()
    run_worker(app)
    assert tasks.calls[0][:2] == ("new", result.id) and "boom" in tasks.calls[0][2]
    assert tasks.calls[1] == ("old", result.id)


def test_link_runs_callbacks_with_the_result(app: Celery, tasks: Any) -> None:
    sig = tasks.add.s(1, 1)
    first, second = tasks.add.s(10), tasks.add.s(100)
    sig.link(first)
    sig.link(second)
    result = sig.apply_async()
    assert run_worker(app) == 3
    assert result.get() == 2


def test_failing_chord_member_fails_the_body_with_chord_error(app: Celery, tasks: Any) -> None:
    body = tasks.tsum.s().on_error(tasks.on_error.s())
    result = chord([tasks.add.s(1, 1), tasks.fail.s(), tasks.add.s(2, 2)], body)()
    failing_id = result.parent[1].id
    run_worker(app)
    with pytest.raises(ChordError, match=f"Dependency {failing_id} raised ValueError"):
        result.get(timeout=1, follow_parents=False)
    with pytest.raises(ValueError):  # the header's own failure shows first, as in Celery
        result.get(timeout=1)
    assert [c[:2] for c in tasks.calls] == [("new", result.id)]
    assert "ChordError" in tasks.calls[0][2]


def test_failing_member_of_a_nested_chord_fails_the_outer_one(app: Celery, tasks: Any) -> None:
    inner = chord([tasks.fail.s(), tasks.add.s(1, 1)], tasks.tsum.s())
    outer = chord([inner, tasks.add.s(2, 2)], tasks.tsum.s())()
    in_chain = chord([chain(tasks.fail.s(), tasks.add.s(1)), tasks.add.s(1, 1)], tasks.tsum.s())()
    run_worker(app)
    for result in (outer, in_chain):
        with pytest.raises(ChordError):
            result.get(timeout=1, follow_parents=False)


def test_a_failed_chord_in_the_middle_of_a_chain_fails_the_rest(app: Celery, tasks: Any) -> None:
    result = chain(tasks.add.s(1, 1), chord([tasks.fail.s(), tasks.add.s(1)], tasks.tsum.s()),
                   tasks.add.s(1000)).apply_async()
    run_worker(app)
    assert result.state == states.FAILURE  # the step after the chord's body: never PENDING
    with pytest.raises(ChordError):
        result.parent.get(timeout=1, follow_parents=False)


def test_eager_mode(tasks: Any, app: Celery) -> None:
    app.conf.task_always_eager = True
    add, tsum = tasks.add, tasks.tsum
    assert (add.s(1, 2) | add.s(3)).apply_async().get() == 6
    assert group(add.s(1, 1), add.s(2, 2)).apply_async().get() == [2, 4]
    assert chord([add.s(1, 1), add.s(2, 2)], tsum.s()).apply_async().get() == 6
    assert published(app) == []


# -- results ----------------------------------------------------------------------------------


def test_group_result_save_restore(app: Celery, tasks: Any) -> None:
    result = group(tasks.add.s(1, 1), tasks.add.s(2, 2))()
    result.save()
    restored = GroupResult.restore(result.id, app=app)
    assert restored is not None and restored.id == result.id
    assert [r.id for r in restored] == [r.id for r in result]
    bound = GroupResult.bound_to(app)
    assert bound.restore(result.id).id == result.id  # type: ignore[union-attr]
    assert bound("x").app is app
    run_worker(app)
    assert restored.get(timeout=1) == [2, 4]
    result.delete()
    assert GroupResult.restore(result.id, app=app) is None


def test_join_propagates_the_first_failure_in_order(app: Celery, tasks: Any) -> None:
    result = group(tasks.add.s(1, 1), tasks.fail.s(), tasks.add.s(2, 2))()
    run_worker(app)
    with pytest.raises(ValueError):
        result.get(timeout=1)
    values = result.get(timeout=1, propagate=False)
    assert values[0] == 2 and isinstance(values[1], ValueError)
    assert result.failed() and not result.successful() and result.completed_count() == 2


def test_join_times_out(app: Celery, tasks: Any) -> None:
    from celeriac.exceptions import TimeoutError

    result = group(tasks.add.s(1, 1))()
    with pytest.raises(TimeoutError):
        result.get(timeout=0.01)


# -- the backends' chord counters --------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: Any, tmp_path: Any) -> Any:
    app = make_app()
    if request.param == "memory":
        return MemoryBackend(app, f"memory://{uuid.uuid4().hex}")
    return SQLiteBackend(app, f"sqlite:///{tmp_path}/results.db")


def test_chord_counter_orders_dedupes_and_completes_once(backend: Any) -> None:
    check_chord_counter(backend)


def test_chord_counter_is_atomic_across_threads(backend: Any) -> None:
    check_chord_counter_threads(backend)


def check_chord_counter(backend: Any) -> None:
    """The chord counter contract (the Redis backend is checked with it in tests/interop)."""
    assert backend.chord_part_done("unknown", "t", 0, states.SUCCESS, 1) is None
    backend.chord_init("g", 3)
    assert backend.chord_part_done("g", "t2", 2, states.SUCCESS, 30) is None
    assert backend.chord_part_done("g", "t2", 2, states.SUCCESS, 30) is None  # again: once
    assert backend.chord_part_done("g", "t0", 0, states.FAILURE, ValueError("x")) is None
    parts = backend.chord_part_done("g", "t1", 1, states.SUCCESS, [1, 2])
    assert parts == [("t0", states.FAILURE, {"exc_type": "ValueError", "exc_message": ["x"],
                                             "exc_module": "builtins"}),
                     ("t1", states.SUCCESS, [1, 2]), ("t2", states.SUCCESS, 30)]
    complete(backend, "g")
    assert backend.chord_part_done("g", "t1", 1, states.SUCCESS, [1, 2]) is None  # late duplicate
    backend.chord_init("g", 1)  # a new run of the same chord starts from zero
    assert backend.chord_part_done("g", "t9", None, states.SUCCESS, 9) == [("t9", states.SUCCESS, 9)]
    complete(backend, "g")


def complete(backend: Any, group_id: str) -> None:
    # The Redis backend holds a dispatch claim until the body is sent (as Celery 5.7 does).
    getattr(backend, "chord_complete", lambda gid: None)(group_id)


def check_chord_counter_threads(backend: Any) -> None:
    backend.chord_init("big", 400)
    winners: list[Any] = []

    def part(start: int) -> None:
        for index in range(start, 400, 4):
            parts = backend.chord_part_done("big", f"t{index}", index, states.SUCCESS, index)
            if parts is not None:
                winners.append(parts)

    threads = [threading.Thread(target=part, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert [value for _, _, value in winners[0]] == list(range(400))
    complete(backend, "big")


def test_canvas_does_not_import_celery() -> None:
    code = "import sys, celeriac.canvas, celeriac.chords; assert 'celery' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
