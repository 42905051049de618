"""arq: the worker settings and no-op jobs the benchmark runs (bench/.venvs/arq).

The worker polls every 10 ms (`poll_delay=0.01`, as in the issue's measurement; arq's default
is 0.5 s); a client waiting for a result polls every 1 ms (arq's default is 0.5 s).
"""

from __future__ import annotations

import asyncio
import logging

from arq import create_pool, run_worker
from arq.connections import RedisSettings
from arq.worker import func
from common import BROKER_URL, QUEUE, done, percentiles

SETTINGS = RedisSettings.from_dsn(BROKER_URL)
QUEUE_NAME = QUEUE or "arq:queue"


async def noop(ctx, i):
    done()


async def noop_r(ctx, i):
    done()
    return i


class WorkerSettings:
    functions = [func(noop, keep_result=0), func(noop_r)]
    redis_settings = SETTINGS
    queue_name = QUEUE_NAME
    poll_delay = 0.01


def enqueue(n: int, results: bool, bulk: bool) -> str:
    name = "noop_r" if results else "noop"

    async def main() -> str:
        pool = await create_pool(SETTINGS, default_queue_name=QUEUE_NAME)
        try:
            if not bulk:
                for i in range(n):
                    await pool.enqueue_job(name, i)
                return "await pool.enqueue_job(name, i) per task"
            for start in range(0, n, 1000):
                await asyncio.gather(*(pool.enqueue_job(name, i)
                                       for i in range(start, min(n, start + 1000))))
            return "asyncio.gather of enqueue_job, 1,000 at a time (arq has no bulk call)"
        finally:
            await pool.aclose()

    return asyncio.run(main())


def roundtrip(n: int) -> dict:
    import time

    async def main() -> dict:
        pool = await create_pool(SETTINGS, default_queue_name=QUEUE_NAME)
        try:
            for i in range(20):
                await (await pool.enqueue_job("noop_r", i)).result(timeout=60, poll_delay=0.001)
            samples = []
            for i in range(n):
                start = time.perf_counter()
                job = await pool.enqueue_job("noop_r", i)
                await job.result(timeout=60, poll_delay=0.001)
                samples.append(time.perf_counter() - start)
            return percentiles(samples)
        finally:
            await pool.aclose()

    return asyncio.run(main())


def purge() -> None:
    async def main() -> None:
        pool = await create_pool(SETTINGS)
        await pool.delete(QUEUE_NAME)
        await pool.aclose()

    asyncio.run(main())


def main() -> None:
    """Run the worker (the `arq` CLI would log every job at INFO; keep WARNING like the rest)."""
    logging.basicConfig(level=logging.WARNING)
    run_worker(WorkerSettings)


if __name__ == "__main__":
    main()
