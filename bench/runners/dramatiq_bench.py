"""Dramatiq: the broker and no-op actors the benchmark runs (bench/.venvs/dramatiq)."""

from __future__ import annotations

import dramatiq
from common import BACKEND_URL, BROKER_URL, CHUNK, QUEUE, done, time_roundtrips
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

broker = RedisBroker(url=BROKER_URL)
broker.add_middleware(Results(backend=RedisBackend(url=BACKEND_URL)))
dramatiq.set_broker(broker)
QUEUE_NAME = QUEUE or "default"


@dramatiq.actor(queue_name=QUEUE_NAME, max_retries=0)
def noop(i):
    done()


@dramatiq.actor(queue_name=QUEUE_NAME, max_retries=0, store_results=True)
def noop_r(i):
    done()
    return i


def enqueue(n: int, results: bool, bulk: bool) -> str:
    actor = noop_r if results else noop
    if not bulk:
        for i in range(n):
            actor.send(i)
        return "actor.send(i) per task"
    for start in range(0, n, CHUNK):
        dramatiq.group(actor.message(i) for i in range(start, min(n, start + CHUNK))).run()
    return "dramatiq.group(actor.message(i) ...).run(), 10,000 per group"


def roundtrip(n: int) -> dict:
    return time_roundtrips(lambda i: noop_r.send(i).get_result(block=True, timeout=60_000), n)


def purge() -> None:
    broker.flush_all()
