"""celeriac: the app and no-op tasks the benchmark runs (project .venv)."""

from __future__ import annotations

from common import BACKEND_URL, BROKER_URL, CHUNK, QUEUE, done, time_roundtrips

from celeriac import Celery

app = Celery("celeriac_bench", broker=BROKER_URL, backend=BACKEND_URL or None)
if QUEUE:
    app.conf.task_default_queue = QUEUE


@app.task(ignore_result=True)
def noop(i):
    done()


@app.task
def noop_r(i):
    done()
    return i


def _bulk_path():
    try:
        from celeriac import group
    except ImportError:
        group = None
    return group


def enqueue(n: int, results: bool, bulk: bool) -> str:
    task = noop_r if results else noop
    if not bulk:
        for i in range(n):
            task.delay(i)
        return "task.delay(i) per task"
    group = _bulk_path()
    if group is not None:
        for start in range(0, n, CHUNK):
            group(task.s(i) for i in range(start, min(n, start + CHUNK))).apply_async()
        return "group(task.s(i) ...).apply_async(), 10,000 per group"
    from celeriac.producer import send_many

    for start in range(0, n, CHUNK):
        send_many(app, [(task.name, (i,), {}, {}) for i in range(start, min(n, start + CHUNK))])
    return "celeriac.producer.send_many, 10,000 per call (no group() yet)"


def roundtrip(n: int) -> dict:
    return time_roundtrips(lambda i: noop_r.delay(i).get(timeout=60), n)


def purge() -> None:
    for name in app.router.queues:
        app.broker.purge(name)
