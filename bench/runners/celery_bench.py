"""Celery 5.7: the app and no-op tasks the benchmark runs (bench/.venvs/celery)."""

from __future__ import annotations

from celery import Celery, group
from common import BACKEND_URL, BROKER_URL, CHUNK, QUEUE, done, time_roundtrips

app = Celery("celery_bench", broker=BROKER_URL, backend=BACKEND_URL or None)
app.conf.broker_connection_retry_on_startup = True
if QUEUE:
    app.conf.task_default_queue = QUEUE


@app.task(ignore_result=True)
def noop(i):
    done()


@app.task
def noop_r(i):
    done()
    return i


def enqueue(n: int, results: bool, bulk: bool) -> str:
    task = noop_r if results else noop
    if not bulk:
        for i in range(n):
            task.delay(i)
        return "task.delay(i) per task"
    for start in range(0, n, CHUNK):
        group(task.s(i) for i in range(start, min(n, start + CHUNK))).apply_async()
    return "group(task.s(i) ...).apply_async(), 10,000 per group"


def roundtrip(n: int) -> dict:
    return time_roundtrips(lambda i: noop_r.delay(i).get(timeout=60), n)


def purge() -> None:
    app.control.purge()
