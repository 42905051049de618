"""Beat end to end: real beat and worker processes, on SQLite, Redis and RabbitMQ + Redis.

Each test writes a small project into a temporary directory, starts ``celeriac -A beatproj
worker`` and one or more ``celeriac -A beatproj beat`` there, and counts executions of a job
that appends ``<entry> <time>`` to ``ticks.log``. Processes are stopped by pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac.beat import RedisStore, RunState

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CELERIAC = ROOT / ".venv" / "bin" / "celeriac"
PYTHON = ROOT / ".venv" / "bin" / "python"
REDIS_DB = 5

PROJECT = '''
import json, os, time
from celeriac import Celery

app = Celery("beatproj")
if os.environ.get("BEATPROJ_QUEUE"):
    app.conf.task_default_queue = os.environ["BEATPROJ_QUEUE"]
app.conf.beat_schedule = {
    name: {"task": "beatproj.tick", "schedule": seconds, "args": [name]}
    for name, seconds in json.loads(os.environ.get("BEATPROJ_SCHEDULE", "{}")).items()
}

@app.task
def tick(name):
    with open("ticks.log", "a") as file:
        file.write(f"{name} {time.time()}\\n")
'''

# Until the lead registers `beat` on the `celeriac` group, run the group with it added.
_CLI_WITH_BEAT = (
    "import sys; from celeriac.cli import cli, main; from celeriac.beat_cli import beat; "
    "'beat' in cli.commands or cli.add_command(beat); main(sys.argv[1:])"
)


def _beat_registered() -> bool:
    from celeriac.cli import cli

    return "beat" in cli.commands  # type: ignore[attr-defined]


class Project:
    """A project directory with its processes."""

    def __init__(self, path: Path, broker: str | None = None, backend: str | None = None,
                 queue: str | None = None) -> None:
        self.path = path
        self.broker = broker
        self.backend = backend or broker
        self.queue = queue
        self.processes: list[subprocess.Popen[bytes]] = []
        (path / "beatproj.py").write_text(PROJECT)

    def command(self, *args: str) -> list[str]:
        options = ["-b", self.broker] if self.broker else []
        options += ["--result-backend", self.backend] if self.backend else []
        if args[0] == "beat" and not _beat_registered():
            return [str(PYTHON), "-c", _CLI_WITH_BEAT, "-A", "beatproj", *options, *args]
        return [str(CELERIAC), "-A", "beatproj", *options, *args]

    def start(self, log: str, *args: str, schedule: dict[str, float] | None = None) -> subprocess.Popen[bytes]:
        env = {**os.environ, "BEATPROJ_SCHEDULE": json.dumps(schedule or {}),
               "BEATPROJ_QUEUE": self.queue or ""}
        with open(self.path / log, "ab") as out:
            process = subprocess.Popen(self.command(*args), cwd=self.path, env=env, stdout=out,
                                       stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def worker(self, schedule: dict[str, float] | None = None) -> subprocess.Popen[bytes]:
        """Start a worker and wait until it consumes: runs are timed by when they execute, so
        a worker still starting would run the first sends in a burst."""
        process = self.start("worker.log", "worker", "-P", "solo", "-l", "info", schedule=schedule)
        self.wait_for(lambda: " ready." in self.log("worker.log"), 30, "the worker to be ready")
        return process

    def beat(self, log: str, schedule: dict[str, float], *args: str) -> subprocess.Popen[bytes]:
        return self.start(log, "beat", "-l", "info", "-s", f"{log}.schedule", *args,
                          schedule=schedule)

    def log(self, name: str) -> str:
        path = self.path / name
        return path.read_text(errors="replace") if path.exists() else ""

    def ticks(self, name: str | None = None) -> list[float]:
        path = self.path / "ticks.log"
        if not path.exists():
            return []
        found = []
        for line in path.read_text().splitlines():
            entry, _, when = line.partition(" ")
            if name is None or entry == name:
                found.append(float(when))
        return sorted(found)

    def wait_for(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            # Exits we caused are 0 (SIGTERM handled) or -9; anything else is a crash.
            if any(p.poll() not in (None, 0, -signal.SIGKILL) for p in self.processes):
                what = f"{what} (a process crashed)"
                break
            time.sleep(0.05)
        logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in self.path.glob("*.log"))
        raise AssertionError(f"timed out waiting for {what}\n{logs}")

    def stop(self, process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        if process.poll() is None:
            os.kill(process.pid, sig)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(5)

    def stop_all(self) -> None:
        for process in self.processes:
            self.stop(process)


def redis_url() -> str:
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from redis_server import redis_url as url
        from redis_server import require_redis
    finally:
        sys.path.pop(0)
    require_redis(REDIS_DB)
    return url(REDIS_DB)


def amqp_url() -> str:
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from amqp_server import require_amqp
    finally:
        sys.path.pop(0)
    return require_amqp()


def delete_amqp_queue(name: str) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from amqp_server import connect
    finally:
        sys.path.pop(0)
    connection = connect()
    try:
        connection.channel().queue_delete(name)
    finally:
        connection.close()


@pytest.fixture(params=[
    "sqlite",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("amqp+redis", marks=[pytest.mark.amqp, pytest.mark.redis]),
])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    """SQLite (./celeriac.db), Redis, or RabbitMQ with the lease in a Redis result backend."""
    if request.param == "sqlite":
        proj = Project(tmp_path)
    elif request.param == "redis":
        proj = Project(tmp_path, redis_url())
    else:
        # The shared RabbitMQ: a queue of this run's own, so other tests' messages, and ticks
        # left by an earlier run that was killed before it could delete its queue, don't mix in.
        proj = Project(tmp_path, amqp_url(), redis_url(),
                       queue=f"celeriac-test.beat.{tmp_path.name}.{uuid.uuid4().hex[:8]}")
    try:
        yield proj
    finally:
        proj.stop_all()
        if proj.queue:
            delete_amqp_queue(proj.queue)


@pytest.fixture
def sqlite_project(tmp_path: Path) -> Iterator[Project]:
    proj = Project(tmp_path)
    try:
        yield proj
    finally:
        proj.stop_all()


def assert_each_tick_once(times: list[float], interval: float) -> None:
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    # A double send shows as two runs milliseconds apart.
    assert all(gap > interval * 0.5 for gap in gaps), f"doubled ticks: gaps {gaps}"


def test_beat_and_worker_run_a_one_second_job_once_a_second(project: Project) -> None:
    every = {"sec": 1.0}
    project.worker()
    project.beat("beat.log", every)
    first = project.wait_for(lambda: project.ticks("sec"), 20, "the first tick")[0]
    time.sleep(6.2)
    window = [t for t in project.ticks("sec") if first <= t <= first + 6.0]
    assert 5 <= len(window) <= 7, window
    assert_each_tick_once(window, 1.0)
    log = project.log("beat.log")
    assert "beat: Starting..." in log
    assert "Scheduler: Sending due task sec (beatproj.tick)" in log


def test_two_beats_for_ten_seconds_fire_each_tick_once(project: Project) -> None:
    every = {"sec": 1.0}
    project.worker()
    project.beat("beat1.log", every)
    project.beat("beat2.log", every)
    first = project.wait_for(lambda: project.ticks("sec"), 20, "the first tick")[0]
    time.sleep(10.3)
    window = [t for t in project.ticks("sec") if first <= t <= first + 10.0]
    assert 9 <= len(window) <= 11, window
    assert_each_tick_once(window, 1.0)
    logs = [project.log("beat1.log"), project.log("beat2.log")]
    assert sum("Acquired the leader lease" in log for log in logs) == 1
    assert sum("standing by" in log for log in logs) == 1


def test_killing_the_active_beat_hands_over_within_five_seconds(project: Project) -> None:
    every = {"sec": 1.0}
    project.worker()
    beats = {"beat1.log": project.beat("beat1.log", every),
             "beat2.log": project.beat("beat2.log", every)}
    project.wait_for(lambda: len(project.ticks("sec")) >= 2, 20, "two ticks")
    leader_log = project.wait_for(
        lambda: [name for name in beats if "Acquired the leader lease" in project.log(name)],
        5, "a leader")[0]
    standby_log = next(name for name in beats if name != leader_log)
    project.stop(beats[leader_log], signal.SIGKILL)
    killed = time.time()
    # Ticks sent by the dead leader just before it died may still run in the first moment.
    after = project.wait_for(lambda: [t for t in project.ticks("sec") if t > killed + 0.5],
                             10, "a tick from the new leader")
    assert after[0] - killed <= 5.0, f"handover took {after[0] - killed:.2f} s"
    assert "Acquired the leader lease" in project.log(standby_log)
    time.sleep(3.2)
    assert_each_tick_once(project.ticks("sec"), 1.0)
    assert len([t for t in project.ticks("sec") if t > after[0]]) >= 2


def test_restart_neither_repeats_nor_multiplies_missed_runs(sqlite_project: Project) -> None:
    project = sqlite_project
    every = {"slow": 4.0, "sec": 1.0}
    project.worker()
    first = project.beat("beat1.log", every)
    slow = project.wait_for(lambda: project.ticks("slow"), 20, "the slow job")[0]
    # Restart at once, shortly after a send: the new beat must not send it again.
    project.wait_for(lambda: time.time() > slow + 0.5, 5, "half a second")
    project.stop(first)
    stopped = time.time()
    second = project.beat("beat2.log", every)
    project.wait_for(lambda: [t for t in project.ticks("slow") if t > stopped], 15,
                     "the slow job after the restart")
    slow_runs = project.ticks("slow")
    assert slow_runs[1] - slow_runs[0] >= 3.5, slow_runs
    # Down for 3.5 s: the one-second job's missed runs are sent once, not three times.
    project.stop(second)
    down_from = time.time()
    time.sleep(3.5)
    project.beat("beat3.log", every)
    project.wait_for(lambda: [t for t in project.ticks("sec") if t > down_from + 3.5], 15,
                     "the missed job")
    time.sleep(0.8)
    after = [t for t in project.ticks("sec") if t > down_from]
    assert len(after) == 1 or after[1] - after[0] > 0.5, after


def test_database_scheduler_picks_up_rows_while_running(sqlite_project: Project) -> None:
    from celeriac.beat import ScheduleTable

    project = sqlite_project
    project.worker()
    project.beat("beat.log", {}, "-S", "celeriac.beat:DatabaseScheduler", "--max-interval", "1")
    project.wait_for(lambda: "beat: Starting..." in project.log("beat.log"), 15, "beat")
    table = ScheduleTable(str(project.path / "celeriac.db"))
    table.add("db-job", "beatproj.tick", {"every": 1}, args=["db-job"])
    added = time.time()
    project.wait_for(lambda: project.ticks("db-job"), 10, "the job added to the table")
    assert project.ticks("db-job")[0] - added < 4
    table.enable("db-job", False)
    disabled = time.time()
    time.sleep(2.5)
    late = [t for t in project.ticks("db-job") if t > disabled + 1.5]
    assert late == []
    row = next(r for r in table.rows() if r.name == "db-job")
    assert row.total_run_count >= 1 and row.last_run_at


def test_embedded_beat_in_worker(sqlite_project: Project) -> None:
    from celeriac.cli import worker

    if not any("-B" in param.opts for param in worker.params):
        pytest.skip("worker -B is not wired yet")
    project = sqlite_project
    every = {"sec": 1.0}
    project.start("w1.log", "worker", "-P", "solo", "-B", "-l", "info", "-s", "w1.schedule",
                  schedule=every)
    project.start("w2.log", "worker", "-P", "solo", "-B", "-l", "info", "-s", "w2.schedule",
                  schedule=every)
    first = project.wait_for(lambda: project.ticks("sec"), 20, "the first tick")[0]
    time.sleep(4.2)
    window = [t for t in project.ticks("sec") if first <= t <= first + 4.0]
    assert 3 <= len(window) <= 5, window
    assert_each_tick_once(window, 1.0)


# --- the Redis store on a real Redis ------------------------------------------------------


@pytest.mark.redis
def test_redis_store_lease_and_claims() -> None:
    import redis

    url = redis_url()
    one = RedisStore.from_url(url, "leasetest")
    two = RedisStore(redis.Redis.from_url(url), "leasetest")
    assert one.acquire("a", 0.3)
    assert not two.acquire("b", 0.3)
    assert one.acquire("a", 0.3)  # renewed by compare-and-expire
    pttl = one.client.pttl(one.lease_key)
    assert 0 < pttl <= 300
    one.add_missing({"e": RunState(100, 0)})
    two.add_missing({"e": RunState(999, 0)})
    assert two.load() == {"e": RunState(100, 0)}
    assert two.claim("b", "e", 100, 200) == -1
    assert one.claim("a", "e", 100, 200) == 1
    assert one.claim("a", "e", 100, 300) == 0
    assert two.load() == {"e": RunState(200, 1)}
    time.sleep(0.4)  # the lease runs out
    assert two.acquire("b", 5)
    assert one.claim("a", "e", 200, 300) == -1
    one.release("a")  # not the holder: no effect
    assert not one.acquire("a", 5)
    two.release("b")
    assert one.acquire("a", 5)
    one.close()
    two.close()
