"""Remote control through real workers on SQLite and Redis, in Celery's pidbox layout:
`celeriac inspect|control|status`, `app.control.*` with destination and timeout, and real
Celery's `celery inspect ping` and `app.control.revoke` against a celeriac worker."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import pytest

from celeriac.exceptions import TaskRevokedError
from tests.helpers import Process, wait_for
from tests.integration.test_worker_helpers import MARK, Project, project_fixture

pytestmark = pytest.mark.slow

TASKS = MARK + """
from celeriac import Celery

app = Celery('ctl', broker=BROKER, backend=BACKEND)

@app.task
def sleeper(key, seconds):
    mark(key=key)
    time.sleep(seconds)
    return key

@app.task(rate_limit='100/m')
def record(key):
    mark(key=key)
    return key
"""

CELERY_SIDE = """
from celery import Celery

app = Celery('ctl', broker={broker!r}, backend={backend!r})
"""


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Project:
    proj = project_fixture(request, tmp_path_factory, "wkctl", TASKS, request.param)
    proj.worker("-P", "prefork", "-c", "1", "-n", "a@%h", "-Q", "celery,qa")
    proj.worker("-P", "threads", "-c", "2", "-n", "b@%h", "-Q", "celery")
    return proj


def _node(project: Project, prefix: str) -> str:
    replies = project.app.control.ping(timeout=0.5)
    return next(name for reply in replies for name in reply if name.startswith(prefix))


def _json(project: Project, *args: str) -> Any:
    code, out = project.celeriac(*args, "-t", "0.5", "-j")
    assert code == 0, out
    return json.loads(out.strip().splitlines()[-1])


def test_ping_status_and_destination(project: Project) -> None:
    code, out = project.celeriac("inspect", "ping", "-t", "0.5")
    assert code == 0 and out.count(": OK") == 2 and "pong" in out and "2 nodes online." in out
    a = _node(project, "a@")
    code, out = project.celeriac("inspect", "ping", "-t", "0.5", "-d", a)
    assert code == 0 and "1 node online." in out and a in out
    code, out = project.celeriac("status", "-t", "0.5")
    assert code == 0 and "2 nodes online." in out
    assert project.app.control.ping(destination=[a], timeout=0.5) == [{a: {"ok": "pong"}}]
    assert project.app.control.inspect(destination=a, timeout=0.5).ping() == {"ok": "pong"}
    code, out = project.celeriac("inspect", "ping", "-t", "0.3", "-d", "nobody@nowhere")
    assert code == 69 and "No nodes replied" in out


def test_inspect_commands(project: Project) -> None:
    tasks = project.module
    a = _node(project, "a@")
    running = tasks.sleeper.apply_async(("busy", 3), queue="qa")
    wait_for(lambda: any(m["key"] == "busy" for m in project.marks()), 20, message="busy task started")
    waiting = tasks.record.apply_async(("waits",), queue="qa")
    later = tasks.record.apply_async(("later",), queue="qa", countdown=3)
    time.sleep(0.3)
    active = _json(project, "inspect", "active", "-d", a)[a]
    assert [(t["id"], t["name"], t["args"]) for t in active] == [(running.id, tasks.sleeper.name, ["busy", 3])]
    assert active[0]["worker_pid"] and active[0]["acknowledged"] is True
    reserved = _json(project, "inspect", "reserved", "-d", a)[a]
    assert [t["id"] for t in reserved] == [waiting.id]
    if project.kind == "redis":  # SQLite keeps ETA messages in the broker until due
        wait_for(lambda: [t["request"]["id"] for t in _json(project, "inspect", "scheduled", "-d", a)[a]]
                 == [later.id], 10, message="the ETA task in scheduled")
    else:
        assert _json(project, "inspect", "scheduled", "-d", a)[a] == []
    registered = _json(project, "inspect", "registered", "-d", a)[a]
    assert f"{tasks.record.name} [rate_limit=100/m]" in registered and tasks.sleeper.name in registered
    stats = _json(project, "inspect", "stats", "-d", a)[a]
    assert stats["pool"]["max-concurrency"] == 1 and len(stats["pool"]["processes"]) == 1
    assert stats["prefetch_count"] == 4 and stats["pid"] and "rusage" in stats
    queues = _json(project, "inspect", "active_queues", "-d", a)[a]
    assert sorted(q["name"] for q in queues) == ["celery", "qa"]
    assert running.get(timeout=20) == "busy" and later.get(timeout=20) == "later"
    assert _json(project, "inspect", "stats", "-d", a)[a]["total"][tasks.record.name] >= 2


def test_control_commands(project: Project) -> None:
    tasks = project.module
    a, b = _node(project, "a@"), _node(project, "b@")
    parked = tasks.record.apply_async(("parked",), queue="qa", countdown=2)
    code, out = project.celeriac("control", "revoke", parked.id, "-t", "0.5")
    assert code == 0 and "flagged as revoked" in out
    assert parked.id in _json(project, "inspect", "revoked", "-d", b)[b]
    with pytest.raises(TaskRevokedError):
        parked.get(timeout=20)

    code, out = project.celeriac("control", "rate_limit", tasks.record.name, "5/s", "-t", "0.5")
    assert code == 0 and out.count("new rate limit set successfully") == 2

    extra = tasks.record.apply_async(("extra",), queue="extra")
    time.sleep(0.5)
    assert extra.state == "PENDING"  # nobody consumes 'extra' yet
    assert _json(project, "control", "add_consumer", "extra", "-d", b) == [{b: {"ok": "add consumer extra"}}]
    assert extra.get(timeout=20) == "extra"
    assert "extra" in [q["name"] for q in _json(project, "inspect", "active_queues", "-d", b)[b]]
    project.celeriac("control", "cancel_consumer", "extra", "-d", b, "-t", "0.5")
    wait_for(lambda: "extra" not in [q["name"] for q in _json(project, "inspect", "active_queues", "-d", b)[b]], 10)

    assert _json(project, "control", "pool_grow", "1", "-d", a) == [{a: {"ok": "pool will grow"}}]
    wait_for(lambda: len(_json(project, "inspect", "stats", "-d", a)[a]["pool"]["processes"]) == 2, 10)
    project.celeriac("control", "pool_shrink", "1", "-d", a, "-t", "0.5")
    wait_for(lambda: len(_json(project, "inspect", "stats", "-d", a)[a]["pool"]["processes"]) == 1, 10)

    code, out = project.celeriac("control", "no_such_command")
    assert code != 0 and "not recognized" in out


@pytest.mark.parametrize("project", ["redis"], indirect=True)  # Celery has no SQLite transport
def test_celery_inspect_and_revoke_reach_a_celeriac_worker(project: Project) -> None:
    (project.root / "celery_side.py").write_text(CELERY_SIDE.format(broker=project.broker_url,
                                                                     backend=project.backend_url))
    proc = Process(["-m", "celery", "-A", "celery_side", "inspect", "ping", "-t", "1"], project.root,
                   name="celery-cli", program=[sys.executable])
    project.processes.append(proc)
    assert proc.proc.wait(30) == 0, proc.log
    assert proc.log.count("pong") == 2 and "2 nodes online." in proc.log

    sys.path.insert(0, str(project.root))
    try:
        import celery_side  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(project.root))
    tasks = project.module
    parked = tasks.record.apply_async(("celery-revoked",), queue="qa", countdown=2)
    replies = celery_side.app.control.revoke(parked.id, reply=True, timeout=1)
    assert len(replies) == 2 and all("flagged as revoked" in list(r.values())[0]["ok"] for r in replies)
    with pytest.raises(TaskRevokedError):
        parked.get(timeout=20)
    a = _node(project, "a@")
    assert celery_side.app.control.inspect(destination=[a], timeout=1).active() == {a: []}
    celery_side.app.close()
    sys.modules.pop("celery_side", None)


def test_remote_shutdown_is_warm(project: Project) -> None:
    b = _node(project, "b@")
    worker_b = next(p for p in project.processes if "b@%h" in p.args)
    assert project.app.control.shutdown(destination=[b], reply=True, timeout=1) == [{b: {"ok": "shutting down"}}]
    assert worker_b.proc.wait(15) == 0
