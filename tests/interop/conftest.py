from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import CELERIAC, Process, require_port

HERE = Path(__file__).resolve().parent
LOGS = Path(tempfile.mkdtemp(prefix="celeriac-interop-"))
DB_URL = "redis://127.0.0.1:6379/6"


def start(impl: str, queues: str, *extra: str, name: str = "w", env: dict[str, str] | None = None) -> Process:
    """A worker of either implementation, running tests/interop/itasks.py."""
    env = {"IMPL": impl, "PYTHONPATH": str(HERE), "INTEROP_URL": DB_URL, **(env or {})}
    common = ["-A", "itasks", "worker", "-l", "info", "-P", "solo", "-Q", queues, "-n", f"{name}@%h"]
    if impl == "celery":
        proc = Process([*common, "--without-mingle", "--without-gossip", *extra], HERE, env,
                       name=f"celery-{name}", program=[sys.executable, "-m", "celery"], logdir=LOGS)
    else:
        proc = Process([*common, *extra], HERE, env, name=f"celeriac-{name}", logdir=LOGS)
    proc.wait_for_log("ready.", timeout=60)
    return proc


@pytest.fixture
def redis_db() -> Iterator[object]:
    require_port("Redis", "127.0.0.1", 6379)
    import redis

    client = redis.Redis.from_url(DB_URL)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def sides(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[object, object]]:
    """(celery app module, celeriac app module): the same tasks, imported once per side."""
    import importlib.util

    monkeypatch.syspath_prepend(str(HERE))

    def load(impl: str) -> object:
        monkeypatch.setenv("IMPL", impl)
        monkeypatch.setenv("INTEROP_URL", DB_URL)
        spec = importlib.util.spec_from_file_location(f"itasks_{impl}", HERE / "itasks.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        return module

    celery_side = load("celery")
    celeriac_side = load("celeriac")
    monkeypatch.delenv("IMPL")
    yield celery_side, celeriac_side
    celery_side.app.close()  # type: ignore[attr-defined]
    celeriac_side.app.close()  # type: ignore[attr-defined]


__all__ = ["CELERIAC", "start"]
