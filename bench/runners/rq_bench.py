"""RQ: the queue and no-op jobs the benchmark runs (bench/.venvs/rq)."""

from __future__ import annotations

from common import BROKER_URL, CHUNK, QUEUE, done, time_roundtrips
from redis import Redis
from rq import Queue

connection = Redis.from_url(BROKER_URL)
queue = Queue(QUEUE or "default", connection=connection)


def noop(i):
    done()


def noop_r(i):
    done()
    return i


def enqueue(n: int, results: bool, bulk: bool) -> str:
    # Results ignored = result_ttl=0 (RQ deletes the job when it ends); stored = RQ's default.
    func, options = (noop_r, {}) if results else (noop, {"result_ttl": 0})
    if not bulk:
        for i in range(n):
            queue.enqueue(func, i, **options)
        return "queue.enqueue(func, i) per task"
    for start in range(0, n, CHUNK):
        queue.enqueue_many([Queue.prepare_data(func, (i,), **options)
                            for i in range(start, min(n, start + CHUNK))])
    return "queue.enqueue_many(Queue.prepare_data(...)), 10,000 per call"


def roundtrip(n: int) -> dict:
    return time_roundtrips(lambda i: queue.enqueue(noop_r, i).latest_result(timeout=60), n)


def purge() -> None:
    queue.empty()
