"""The consumer's fast-task batch: it starts at the prefetch (no batching) and follows the
measured runtimes once FAST_BATCH_AFTER tasks have ended, with a real worker on memory://."""

from __future__ import annotations

import time
import uuid

from celeriac import Celery
from celeriac.testing import start_worker
from celeriac.worker.consumer import FAST_BATCH_AFTER, FAST_BATCH_MAX


def make_app() -> Celery:
    tag = uuid.uuid4().hex
    return Celery("t", broker=f"memory://{tag}", backend=f"memory://{tag}")


def test_fast_tasks_are_batched_after_a_few_and_slow_ones_never() -> None:
    app = make_app()

    @app.task
    def fast(i: int) -> int:
        return i

    @app.task
    def slow(i: int) -> int:
        time.sleep(0.02)  # 20 ms: above the 10 ms a batch is worth
        return i

    with start_worker(app) as worker:
        consumer = worker.consumer
        assert consumer is not None
        for i in range(FAST_BATCH_AFTER - 1):
            assert fast.delay(i).get(timeout=10) == i
        assert consumer.fast_batch == 0  # too few measured yet
        assert [r.get(timeout=10) for r in [fast.delay(i) for i in range(3)]] == [0, 1, 2]
        # A no-op takes well under 10 ms / 16: the batch grew at once (a power of two).
        assert 16 <= consumer.fast_batch <= FAST_BATCH_MAX
        assert consumer.prefetch == max(4, consumer.fast_batch)
        for i in range(12):
            assert slow.delay(i).get(timeout=10) == i
        assert consumer.fast_batch == 0  # the plain mean of the first 20 is now above 1 ms
