"""Shared by every library's benchmark module; imported from each library's own venv.

Only the standard library and redis-py (present in every bench venv) are used here.

How "done" is measured, the same way for every library: each no-op task calls `done()`,
which bumps an in-process counter under a lock (~0.1 us) and notes the time. A daemon thread,
started lazily in whichever process runs tasks (so after a prefork/fork too), flushes the
count and the first/last times to Redis every 20 ms (`INCRBY bench:done`, `HSET
bench:first|bench:last <pid> <time>`). The driver polls `bench:done` and reads the times of the
first and last task; the per-task cost is the same tiny constant for every library, and no
per-task Redis round trip is added to any of them.
"""

from __future__ import annotations

import os
import threading
import time

COUNTER_URL = os.environ.get("BENCH_COUNTER_URL", "redis://127.0.0.1:6379/7")
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/7")
BACKEND_URL = os.environ.get("BENCH_BACKEND_URL", "redis://127.0.0.1:6379/7")
QUEUE = os.environ.get("BENCH_QUEUE", "")
FLUSH_EVERY = 0.02
#: Bulk enqueues go in groups of this many, so a 1,000,000-task fill does not hold 1M messages.
CHUNK = 10_000

_lock = threading.Lock()
_state = {"pid": 0, "count": 0, "flushed": 0, "first": 0.0, "last": 0.0}


def done() -> None:
    """Count one finished task (call it from the task body)."""
    now = time.time()
    with _lock:
        if _state["pid"] != os.getpid():
            _start_flusher()
        if not _state["count"]:
            _state["first"] = now
        _state["count"] += 1
        _state["last"] = now


def _start_flusher() -> None:
    # Called with _lock held, in a fresh process (or the first task of this one).
    _state.update(pid=os.getpid(), count=0, flushed=0, first=0.0, last=0.0)
    thread = threading.Thread(target=_flush_forever, name="bench-counter", daemon=True)
    thread.start()


def _flush_forever() -> None:
    import redis

    client = redis.Redis.from_url(COUNTER_URL)
    pid = os.getpid()
    while True:
        time.sleep(FLUSH_EVERY)
        with _lock:
            count, flushed = _state["count"], _state["flushed"]
            first, last = _state["first"], _state["last"]
            _state["flushed"] = count
        if count == flushed:
            continue
        pipe = client.pipeline(transaction=False)
        pipe.hset("bench:first", pid, repr(first))
        pipe.hset("bench:last", pid, repr(last))
        pipe.incrby("bench:done", count - flushed)
        pipe.execute()


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p90/p99/max of samples (seconds) in milliseconds."""
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0

    return {"p50_ms": pick(0.50), "p90_ms": pick(0.90), "p99_ms": pick(0.99),
            "max_ms": ordered[-1] * 1000.0, "count": len(ordered)}


def time_roundtrips(call: object, n: int, warmup: int = 20) -> dict[str, float]:
    """Run `call(i)` (send + wait for the result) `warmup` times, then `n` timed times."""
    for i in range(warmup):
        call(i)  # type: ignore[operator]
    samples = []
    perf = time.perf_counter
    for i in range(n):
        start = perf()
        call(i)  # type: ignore[operator]
        samples.append(perf() - start)
    return percentiles(samples)
