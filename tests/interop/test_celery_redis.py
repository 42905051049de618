"""Real Celery 5.7 and celeriac on one Redis, in both directions (a test dependency only)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.helpers import Process, wait_for
from tests.interop.conftest import start

pytestmark = pytest.mark.slow

CASES: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    (("ünïcödé ✓", [1, [2, {"deep": [3, None, True]}]]), {"k": {"nested": ["ö", 1.5]}}),
    ((), {}),
]


@pytest.mark.parametrize("direction", ["celery->celeriac", "celeriac->celery"])
def test_results_args_ids_and_request_fields(direction: str, redis_db: Any, sides: Any,
                                             processes: list[Process]) -> None:
    celery_side, celeriac_side = sides
    client, worker_impl = (celery_side, "celeriac") if direction == "celery->celeriac" else (celeriac_side, "celery")
    processes.append(start(worker_impl, "interop"))
    assert client.add.delay(2, 3).get(timeout=20) == 5
    for args, kwargs in CASES:
        assert client.echo.apply_async(args, kwargs).get(timeout=20) == {"args": list(args), "kwargs": kwargs}
    res = client.request_fields.apply_async(task_id="custom-id-1")
    assert res.id == "custom-id-1"
    fields = res.get(timeout=20)
    assert fields["id"] == "custom-id-1" and fields["root_id"] == "custom-id-1"
    assert fields["parent_id"] is None and fields["retries"] == 0 and fields["is_eager"] is False
    assert fields["routing_key"] == "interop"
    # exceptions keep their type across implementations
    with pytest.raises(ValueError, match="bad value"):
        client.fail.delay("value").get(timeout=20)
    with pytest.raises(Exception) as info:
        client.fail.delay("custom").get(timeout=20)
    assert type(info.value).__name__ == "MyError" and info.value.args == ("boom", 42)
    # the other side reads the same result through its own AsyncResult
    other = celeriac_side if client is celery_side else celery_side
    assert other.app.AsyncResult("custom-id-1").get(timeout=5)["id"] == "custom-id-1"


@pytest.mark.parametrize("direction", ["celery->celeriac", "celeriac->celery"])
def test_countdown_eta_and_queues(direction: str, redis_db: Any, sides: Any,
                                  processes: list[Process]) -> None:
    celery_side, celeriac_side = sides
    client, worker_impl = (celery_side, "celeriac") if direction == "celery->celeriac" else (celeriac_side, "celery")
    processes.append(start(worker_impl, "interop,second"))
    sent = time.time()
    later = client.add.apply_async((1, 1), countdown=2)
    from datetime import UTC, datetime, timedelta

    at = client.add.apply_async((2, 2), eta=datetime.now(UTC) + timedelta(seconds=3))
    other_queue = client.add.apply_async((3, 3), queue="second")
    assert other_queue.get(timeout=20) == 6
    assert later.get(timeout=20) == 2
    assert at.get(timeout=20) == 4
    assert time.time() - sent >= 3


def test_priorities_follow_kombu_order(redis_db: Any, sides: Any, processes: list[Process]) -> None:
    celery_side, _ = sides
    for tag, priority in [("p9", 9), ("p0", 0), ("p5", 5), ("p0b", 0)]:
        celery_side.record.apply_async((tag,), priority=priority)
    processes.append(start("celeriac", "interop", "--prefetch-multiplier", "1"))
    wait_for(lambda: redis_db.llen("interop:order") == 4, 20, message="four records")
    order = [x.decode() for x in redis_db.lrange("interop:order", 0, -1)]
    assert order == ["p0", "p0b", "p5", "p9"]  # on Redis, kombu serves priority 0 first


def test_mixed_fleet_runs_each_task_exactly_once(redis_db: Any, sides: Any, processes: list[Process]) -> None:
    celery_side, celeriac_side = sides
    processes.append(start("celery", "interop", name="cw"))
    processes.append(start("celeriac", "interop", name="nw"))
    from celeriac.producer import send_many

    ids = [r.id for r in send_many(celeriac_side.app, [("interop.mark", (), {}, {}) for _ in range(5000)])]
    ids += [celery_side.mark.delay().id for _ in range(5000)]
    wait_for(lambda: redis_db.hlen("interop:runs") >= 10000, 180, interval=0.5, message="10,000 tasks run")
    time.sleep(1)
    runs = {k.decode(): int(v) for k, v in redis_db.hgetall("interop:runs").items()}
    assert set(runs) == set(ids)
    assert all(count == 1 for count in runs.values()), {k: v for k, v in runs.items() if v != 1}
    impls = {x.decode() for x in redis_db.lrange("interop:impl", 0, -1)}
    assert impls == {"celery", "celeriac"}  # both kinds of worker took part
