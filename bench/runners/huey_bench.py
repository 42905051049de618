"""Huey: the instance and no-op tasks the benchmark runs (bench/.venvs/huey).

Huey stores a result only when a task returns something other than None, so `noop` (returns
None) is "results ignored" and `noop_r` (returns i) is "results stored".
"""

from __future__ import annotations

from common import BROKER_URL, CHUNK, done, time_roundtrips

if BROKER_URL.startswith("sqlite"):
    from huey import SqliteHuey

    # sqlite:////abs/path.db -> /abs/path.db (as SQLAlchemy-style URLs spell an absolute path)
    huey = SqliteHuey("bench", filename=BROKER_URL.split("://", 1)[1][1:])
else:
    from huey import RedisHuey

    huey = RedisHuey("bench", url=BROKER_URL, notify_result=True)


@huey.task()
def noop(i):
    done()


@huey.task()
def noop_r(i):
    done()
    return i


def enqueue(n: int, results: bool, bulk: bool) -> str:
    task = noop_r if results else noop
    if not bulk:
        for i in range(n):
            task(i)
        return "task(i) per task"
    for start in range(0, n, CHUNK):
        task.map(range(start, min(n, start + CHUNK)))
    return "task.map(range(...)), 10,000 per call (one enqueue per task inside)"


def roundtrip(n: int) -> dict:
    return time_roundtrips(lambda i: noop_r(i).get(blocking=True, timeout=60), n)


def purge() -> None:
    huey.flush()
