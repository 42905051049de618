"""Real Celery 5.7 and celeriac on one RabbitMQ, in both directions, results over rpc:// and
Redis; a mixed fleet on one RabbitMQ queue."""

from __future__ import annotations

import importlib.util
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import Process, require_port, wait_for
from tests.interop.conftest import HERE, start

pytestmark = pytest.mark.slow
AMQP = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture(params=["rpc://", "redis://127.0.0.1:6379/6"])
def amqp_sides(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
               redis_db: Any) -> Iterator[tuple[Any, Any, dict[str, str]]]:
    require_port("RabbitMQ", "127.0.0.1", 5672)
    queue = f"interop-{uuid.uuid4().hex[:8]}"
    env = {"INTEROP_URL": AMQP, "INTEROP_BACKEND": request.param, "INTEROP_QUEUE": queue}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.syspath_prepend(str(HERE))
    loaded = []
    for impl in ("celery", "celeriac"):
        monkeypatch.setenv("IMPL", impl)
        spec = importlib.util.spec_from_file_location(f"itasks_amqp_{impl}", HERE / "itasks.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        loaded.append(module)
    monkeypatch.delenv("IMPL")
    yield loaded[0], loaded[1], env
    for module in loaded:
        module.app.close()


@pytest.mark.parametrize("direction", ["celery->celeriac", "celeriac->celery"])
def test_amqp_both_directions(direction: str, amqp_sides: Any, processes: list[Process]) -> None:
    celery_side, celeriac_side, env = amqp_sides
    client, worker_impl = (celery_side, "celeriac") if direction == "celery->celeriac" else (celeriac_side, "celery")
    processes.append(start(worker_impl, env["INTEROP_QUEUE"], env=env))
    assert client.add.delay(2, 3).get(timeout=30) == 5
    args, kwargs = ("ünï ✓", [1, {"deep": [None, True]}]), {"k": ["ö"]}
    assert client.echo.apply_async(args, kwargs).get(timeout=30) == {"args": list(args), "kwargs": kwargs}
    fields = client.request_fields.apply_async(task_id="amqp-id-" + uuid.uuid4().hex[:6]).get(timeout=30)
    assert fields["routing_key"] == env["INTEROP_QUEUE"] and fields["retries"] == 0
    with pytest.raises(ValueError, match="bad value"):
        client.fail.delay("value").get(timeout=30)
    sent = time.time()
    assert client.add.apply_async((1, 1), countdown=2).get(timeout=30) == 2
    assert time.time() - sent >= 2


@pytest.mark.parametrize("amqp_sides", ["rpc://"], indirect=True)
def test_amqp_mixed_fleet_loses_nothing(amqp_sides: Any, redis_db: Any, processes: list[Process]) -> None:
    celery_side, celeriac_side, env = amqp_sides
    processes.append(start("celery", env["INTEROP_QUEUE"], env=env, name="cw"))
    processes.append(start("celeriac", env["INTEROP_QUEUE"], env=env, name="nw"))
    ids = [celeriac_side.mark.apply_async(ignore_result=True).id for _ in range(1000)]
    ids += [celery_side.mark.apply_async(ignore_result=True).id for _ in range(1000)]
    wait_for(lambda: redis_db.hlen("interop:runs") >= 2000, 120, interval=0.5, message="2,000 tasks")
    time.sleep(1)
    runs = {k.decode(): int(v) for k, v in redis_db.hgetall("interop:runs").items()}
    assert set(runs) == set(ids) and all(v == 1 for v in runs.values())
    assert {x.decode() for x in redis_db.lrange("interop:impl", 0, -1)} == {"celery", "celeriac"}
