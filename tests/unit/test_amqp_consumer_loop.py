"""The worker loop's fast-task batch (worker/consumer.py) does not flip at a power of two's
edge: on RabbitMQ each change is a basic.qos, and py-amqp reading up to its qos-ok took
milliseconds."""

from __future__ import annotations

from typing import Any

from celeriac import Celery, states
from celeriac.worker.consumer import FAST_BATCH_AFTER, Consumer
from celeriac.worker.execute import Job, Outcome
from celeriac.worker.pools import SoloPool
from celeriac.worker.revoked import RevokedTasks


class _Sub:
    def __init__(self) -> None:
        self.prefetches: list[int] = []

    def set_prefetch(self, prefetch: int) -> None:
        self.prefetches.append(prefetch)


def _consumer() -> tuple[Consumer, _Sub]:
    app = Celery("t", broker="memory://amqp-consumer-loop")
    sub = _Sub()

    def run(job: Job) -> Outcome:
        return Outcome(job.tag, states.SUCCESS)

    consumer = Consumer(app, sub, SoloPool(run), hostname="h", prefetch_multiplier=4,  # type: ignore[arg-type]
                        accept=None, queues=[], revoked=RevokedTasks(None))
    return consumer, sub


def _worth(consumer: Consumer, n: Any) -> int:
    consumer.mean_runtime = 0.01 / n  # n tasks in FAST_BATCH_BUDGET
    consumer._adapt_batch()
    return consumer.fast_batch


def test_fast_batch_does_not_flip_near_a_power_of_two() -> None:
    consumer, sub = _consumer()
    consumer.task_count = FAST_BATCH_AFTER
    assert _worth(consumer, 300) == 256
    assert [_worth(consumer, n) for n in (250, 200, 160, 255, 170)] == [256] * 5  # just below: stays
    assert _worth(consumer, 140) == 128  # well below: shrinks
    assert _worth(consumer, 200) == 128  # and grows only when worth 256 again
    assert _worth(consumer, 1000) == 256
    assert _worth(consumer, 0.5) == 0  # slow tasks: no batch at all
    assert sub.prefetches == [256, 128, 256, 4]
