"""Tasks defined the same way on both sides: IMPL=celery uses real Celery, else celeriac."""

import os

import redis

if os.environ.get("IMPL") == "celery":
    from celery import Celery
else:
    from celeriac import Celery

URL = os.environ.get("INTEROP_URL", "redis://127.0.0.1:6379/6")
app = Celery("interop", broker=URL, backend=os.environ.get("INTEROP_BACKEND", URL))
app.conf.task_default_queue = os.environ.get("INTEROP_QUEUE", "interop")
app.conf.worker_hijack_root_logger = False
counter = redis.Redis.from_url("redis://127.0.0.1:6379/6")  # the tests read what tasks record


class MyError(Exception):
    pass


@app.task(name="interop.add")
def add(a, b):
    return a + b


@app.task(name="interop.echo")
def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


@app.task(name="interop.request", bind=True)
def request_fields(self):
    r = self.request
    return {"id": r.id, "retries": r.retries, "root_id": r.root_id, "parent_id": r.parent_id,
            "routing_key": (r.delivery_info or {}).get("routing_key"), "args": list(r.args or []),
            "is_eager": bool(r.is_eager), "group": r.group}


@app.task(name="interop.fail")
def fail(kind):
    if kind == "value":
        raise ValueError("bad value")
    raise MyError("boom", 42)


@app.task(name="interop.record")
def record(tag):
    counter.rpush("interop:order", tag)
    return tag


@app.task(name="interop.mark", bind=True)
def mark(self):
    counter.hincrby("interop:runs", self.request.id, 1)
    counter.rpush("interop:impl", os.environ.get("IMPL", "celeriac"))
