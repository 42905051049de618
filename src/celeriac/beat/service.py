"""Running a scheduler: `Service` (tick, sleep, repeat; ``celeriac beat``), `EmbeddedBeat`
(the same in a thread of a worker, ``worker -B``) and `resolve_scheduler` (``-S``).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from .. import signals
from ..exceptions import ImproperlyConfigured
from .scheduler import Scheduler

if TYPE_CHECKING:
    from ..app import Celery

__all__ = ["SCHEDULER_ALIASES", "EmbeddedBeat", "Service", "resolve_scheduler"]

# One logger for all of beat, as before the split into modules.
logger = logging.getLogger("celeriac.beat")

#: Short names for ``-S``.
SCHEDULER_ALIASES = {
    "persistent": "celeriac.beat:PersistentScheduler",
    "database": "celeriac.beat:DatabaseScheduler",
}


def resolve_scheduler(spec: str | type[Scheduler]) -> type[Scheduler]:
    """The scheduler class ``spec`` names: ``module:Class``, ``module.Class`` or an alias.

    Celery's ``celery.beat:...`` names map to ``celeriac.beat``'s classes.
    """
    if not isinstance(spec, str):
        return spec
    spec = SCHEDULER_ALIASES.get(spec, spec)
    if spec.startswith("celery.beat:") or spec.startswith("celery.beat."):
        spec = "celeriac" + spec.removeprefix("celery")
    from ..config import load_object

    try:
        found = load_object(spec)
    except (ImportError, AttributeError) as exc:
        raise ImproperlyConfigured(f"Cannot load the beat scheduler {spec!r}: {exc}") from exc
    if not (isinstance(found, type) and issubclass(found, Scheduler)):
        raise ImproperlyConfigured(f"{spec!r} is not a celeriac.beat.Scheduler subclass")
    return found


class Service:
    """Runs a scheduler: tick, sleep, repeat until `stop`; then save and give up the lease.

    Args:
        app: The app.
        max_interval: Longest sleep between ticks (``--max-interval``).
        schedule_filename: The schedule file (``-s``).
        scheduler_cls: The scheduler class or its name (``-S``; default ``beat_scheduler``).
    """

    def __init__(self, app: Celery, max_interval: float | None = None,
                 schedule_filename: str | None = None,
                 scheduler_cls: str | type[Scheduler] | None = None) -> None:
        self.app = app
        self.max_interval = max_interval
        self.schedule_filename = schedule_filename or app.conf.beat_schedule_filename
        self.scheduler_cls = resolve_scheduler(scheduler_cls or app.conf.beat_scheduler)
        self._scheduler: Scheduler | None = None
        self._shutdown = threading.Event()
        self._stopped = threading.Event()

    def get_scheduler(self, lazy: bool = False) -> Scheduler:
        """Create the scheduler (importing the task modules first, so their entries exist)."""
        if not lazy:
            self.app.finalize()
        return self.scheduler_cls(self.app, max_interval=self.max_interval,
                                  schedule_filename=self.schedule_filename, lazy=lazy)

    @property
    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            self._scheduler = self.get_scheduler()
        return self._scheduler

    def start(self, embedded_process: bool = False) -> None:
        """Run until `stop` is called (or KeyboardInterrupt / SystemExit)."""
        logger.info("beat: Starting...")
        try:
            scheduler = self.scheduler
            logger.debug("beat: Ticking with max interval->%s s", scheduler.max_interval)
            signals.beat_init.send(sender=self)
            if embedded_process:
                signals.beat_embedded_init.send(sender=self)
            while not self._shutdown.is_set():
                interval = scheduler.tick()
                if interval > 0:
                    self._shutdown.wait(interval)
                if scheduler.should_sync():
                    scheduler.sync()
        except (KeyboardInterrupt, SystemExit):
            self._shutdown.set()
        finally:
            try:
                if self._scheduler is not None:
                    self._scheduler.close()
            finally:
                self._stopped.set()

    def stop(self, wait: bool = False) -> None:
        """Ask the loop to end (from any thread or a signal handler); ``wait`` until it has."""
        logger.info("beat: Shutting down...")
        self._shutdown.set()
        if wait:
            self._stopped.wait()


class EmbeddedBeat(threading.Thread):
    """Beat in a thread of the worker process (``worker -B``): `start`, later `stop`.

    Safe in every worker of a fleet: the lease makes one of them the sender.

    Args:
        app: The app.
        max_interval: Longest sleep between ticks.
        schedule_filename: The schedule file.
        scheduler_cls: The scheduler class or its name.
    """

    def __init__(self, app: Celery, *, max_interval: float | None = None,
                 schedule_filename: str | None = None,
                 scheduler_cls: str | type[Scheduler] | None = None) -> None:
        super().__init__(name="Beat", daemon=True)
        self.app = app
        self.service = Service(app, max_interval=max_interval, schedule_filename=schedule_filename,
                               scheduler_cls=scheduler_cls)

    def run(self) -> None:
        try:
            self.service.start(embedded_process=True)
        except Exception as exc:
            logger.critical("beat raised exception %s: %r", type(exc), exc, exc_info=True)

    def stop(self, timeout: float | None = 10.0) -> None:
        """End the loop, save, release the lease, and wait up to ``timeout`` s for the thread."""
        self.service.stop()
        if self.is_alive():
            self.join(timeout)
