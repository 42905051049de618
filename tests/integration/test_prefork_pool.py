"""The prefork pool's queue-ahead, with real child processes and no broker: jobs queued to a
child are never lost nor run twice when it dies, is killed by a time limit or leaves after
its memory budget; hard limits count from the job's start in the child; revoke with
terminate skips a job still queued."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from celeriac import states
from celeriac.brokers.base import Envelope
from celeriac.exceptions import TaskRevokedError, TimeLimitExceeded, WorkerLostError
from celeriac.protocol import TaskMessage
from celeriac.worker.execute import ACK, Job, Outcome
from celeriac.worker.prefork import PreforkPool


def resident_kib() -> int:
    """This process's resident memory now, in KiB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


MARKS: list[Path] = []  # set before the children fork
GROWN: list[bytes] = []


def _runner(job: Job) -> Outcome:
    started = time.monotonic()
    headers = job.message.headers
    with open(MARKS[0], "a") as out:
        out.write(json.dumps({"tag": job.tag, "pid": os.getpid()}) + "\n")
    if headers.get("sleep"):
        time.sleep(headers["sleep"])
    if headers.get("grow"):
        GROWN.append(b"x" * (256 << 20))
    return Outcome(job.tag, states.SUCCESS, ACK, runtime=time.monotonic() - started)


class Harness:
    def __init__(self, marks: Path, **options: Any) -> None:
        MARKS[:] = [marks]
        self.marks = marks
        self.lost: dict[int, BaseException] = {}
        self.pool = PreforkPool(_runner, 1, on_lost=self._on_lost, **options)
        self.pool.start()
        self.tags = 0

    def _on_lost(self, job: Job, exc: BaseException) -> Outcome:
        self.lost[job.tag] = exc
        return Outcome(job.tag, states.FAILURE, ACK, summary=repr(exc))

    def job(self, hard: float | None = None, **headers: Any) -> Job:
        self.tags += 1
        headers = {"task": "t", "id": f"id-{self.tags}", **headers}
        return Job(self.tags, TaskMessage(headers, Envelope(b"", headers)), {}, None, False, (hard, None))

    def submit(self, jobs: list[Job]) -> None:
        for job in jobs:
            assert self.pool.free() > 0
            self.pool.submit(job)

    def collect(self, n: int, timeout: float = 30) -> dict[int, Outcome]:
        out: dict[int, Outcome] = {}
        deadline = time.monotonic() + timeout
        while len(out) < n:
            assert time.monotonic() < deadline, f"{len(out)} of {n} outcomes"
            for outcome in self.pool.poll(0.2):
                assert outcome.tag not in out, "one outcome per job"
                out[outcome.tag] = outcome
        return out

    def warm_up(self) -> None:
        """Fast jobs, until the pool queues ahead."""
        for _ in range(400):
            if self.pool.free() > 10:
                return
            jobs = [self.job() for _ in range(self.pool.free())]
            self.submit(jobs)
            self.collect(len(jobs))
        raise AssertionError("fast tasks are queued ahead")

    def runs(self) -> dict[int, list[int]]:
        """pids that ran each tag."""
        out: dict[int, list[int]] = {}
        for line in self.marks.read_text().splitlines():
            mark = json.loads(line)
            out.setdefault(mark["tag"], []).append(mark["pid"])
        return out

    def wait_started(self, tag: int) -> int:
        deadline = time.monotonic() + 20
        while tag not in self.runs():
            assert time.monotonic() < deadline, f"job {tag} started"
            time.sleep(0.01)
        return self.runs()[tag][0]


@pytest.fixture
def harness(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    made: list[Harness] = []

    def make(**options: Any) -> Harness:
        made.append(Harness(tmp_path / "marks.jsonl", **options))
        return made[-1]

    yield make
    for h in made:
        h.pool.stop(wait=False)


def test_jobs_queued_to_a_killed_child_run_once_elsewhere(harness: Any) -> None:
    h = harness()
    h.warm_up()
    slow, fast = h.job(sleep=30), [h.job() for _ in range(10)]
    h.submit([slow, *fast])
    assert len(h.pool.children[0].jobs) == 11  # all queued to the one child
    pid = h.wait_started(slow.tag)
    os.kill(pid, signal.SIGKILL)
    out = h.collect(11)
    assert isinstance(h.lost[slow.tag], WorkerLostError)
    assert list(h.lost) == [slow.tag]
    runs = h.runs()
    for job in fast:
        assert out[job.tag].state == states.SUCCESS
        assert len(runs[job.tag]) == 1 and runs[job.tag][0] != pid  # run once, by the new child


def test_hard_limit_counts_from_the_start_in_the_child(harness: Any) -> None:
    h = harness()
    h.warm_up()
    first = h.job(sleep=1.0)
    limited = h.job(hard=0.8, sleep=0.3)  # queued behind 1 s of work: must not be killed
    killed = h.job(hard=0.5, sleep=10)
    after = h.job()
    h.submit([first, limited, killed, after])
    started = time.monotonic()
    out = h.collect(4)
    assert out[first.tag].state == out[limited.tag].state == out[after.tag].state == states.SUCCESS
    assert list(h.lost) == [killed.tag] and isinstance(h.lost[killed.tag], TimeLimitExceeded)
    assert time.monotonic() - started >= 1.3 + 0.5  # killed 0.5 s after it started, not sooner
    runs = h.runs()
    assert len(runs[after.tag]) == 1 and runs[after.tag] != runs[killed.tag]


def test_terminate_skips_a_job_still_queued(harness: Any) -> None:
    h = harness()
    h.warm_up()
    slow, queued, last = h.job(sleep=0.5), h.job(), h.job()
    h.submit([slow, queued, last])
    pid = h.wait_started(slow.tag)
    assert h.pool.terminate_job(queued.tag, signal.SIGTERM)
    out = h.collect(3)
    assert out[slow.tag].state == out[last.tag].state == states.SUCCESS
    assert isinstance(h.lost[queued.tag], TaskRevokedError)
    runs = h.runs()
    assert queued.tag not in runs and runs[last.tag] == [pid]  # same child, not killed


def test_a_child_over_its_memory_budget_hands_its_queue_on(harness: Any) -> None:
    # A forked child's peak starts at this process's resident size now, not at its peak (an
    # earlier test may have raised that far above): 256 MiB more must cross now + 32 MiB, with
    # room for this process's size to change before the fork (64 MiB once fell short in a
    # full run).
    h = harness(max_memory_per_child=resident_kib() + 32 * 1024)
    h.warm_up()
    grow, fast = h.job(grow=True), [h.job() for _ in range(10)]
    h.submit([grow, *fast])
    out = h.collect(11)
    assert not h.lost
    runs = h.runs()
    assert all(out[job.tag].state == states.SUCCESS and len(runs[job.tag]) == 1 for job in fast)
    assert {runs[job.tag][0] for job in fast} == {h.pool.children[0].process.pid} != set(runs[grow.tag])


def test_max_tasks_per_child_replaces_children_and_loses_nothing(harness: Any) -> None:
    h = harness(max_tasks_per_child=7)
    jobs = []
    for _ in range(12):  # slow start: one at a time, then queued ahead
        batch = [h.job() for _ in range(h.pool.free())]
        h.submit(batch)
        h.collect(len(batch))
        jobs += batch
    runs = h.runs()
    assert all(len(runs[job.tag]) == 1 for job in jobs)
    pids = [runs[job.tag][0] for job in jobs]
    assert max(pids.count(pid) for pid in set(pids)) == 7
