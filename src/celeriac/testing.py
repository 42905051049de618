"""Run a real worker inside the test process: `with start_worker(app): ...`.

The worker consumes in a thread with the `solo`, `threads` or `asyncio` pool, through the
app's real broker and backend (memory://, SQLite, Redis, ...), so messages are serialized and
acked exactly as in production; it answers remote control (`app.control.ping()`, ...) too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Celery
    from .worker.worker import Worker


@contextmanager
def start_worker(app: Celery, pool: str = "solo", concurrency: int = 1, queues: list[str] | None = None,
                 timeout: float = 10.0, **options: Any) -> Iterator[Worker]:
    """Start a worker thread for `app`; stop it (warm) when the block ends."""
    from .worker.worker import Worker

    worker = Worker(app, pool=pool, concurrency=concurrency, queues=queues, setup_logging=False,
                    banner=False, install_signals=False, **options)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.start()
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=run, name="celeriac-test-worker", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not worker.ready:
        if errors:
            raise errors[0]
        if time.monotonic() > deadline:
            raise TimeoutError("the test worker did not start")
        time.sleep(0.01)
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout)
        if errors:
            raise errors[0]
