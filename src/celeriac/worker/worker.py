"""The worker process: set up, print the banner, run the consumer, stop warm or cold."""

from __future__ import annotations

import logging
import os
import platform
import signal
import socket
import time
from typing import TYPE_CHECKING, Any

from .. import __version__, signals
from ..exceptions import OperationalError
from ..serialization import accept_content_types
from ..urls import mask_url
from .consumer import Consumer
from .execute import Job, Outcome, execute_job
from .pools import create_pool

if TYPE_CHECKING:
    from ..app import Celery

logger = logging.getLogger("celeriac.worker")


class ColdShutdown(BaseException):
    """Raised in the main thread on a second Ctrl-C or SIGQUIT: stop now."""


def default_hostname(name: str | None) -> str:
    host = socket.gethostname()
    if not name:
        return f"celeriac@{host}"
    name = name.replace("%h", host).replace("%n", host.split(".")[0]).replace(
        "%d", host.split(".", 1)[1] if "." in host else "")
    return name if "@" in name else f"{name}@{host}"


class Worker:
    """`celeriac -A proj worker`: consumes the queues and runs tasks in a pool."""

    def __init__(self, app: Celery, *, queues: list[str] | None = None, concurrency: int | None = None,
                 pool: str | None = None, hostname: str | None = None,
                 prefetch_multiplier: int | None = None, loglevel: str = "WARNING",
                 logfile: str | None = None, max_tasks_per_child: int | None = None,
                 setup_logging: bool = True, banner: bool = True, soft_shutdown_timeout: float | None = None,
                 **options: Any) -> None:
        self.app = app
        conf = app.conf
        self.queue_names = queues
        self.concurrency = concurrency or conf.worker_concurrency or os.cpu_count() or 1
        self.pool_name = pool or conf.worker_pool or "prefork"
        if self.pool_name == "solo":
            self.concurrency = 1
        self.hostname = default_hostname(hostname)
        multiplier = conf.worker_prefetch_multiplier if prefetch_multiplier is None else prefetch_multiplier
        self.prefetch = self.concurrency * max(1, int(multiplier or 1))
        self.loglevel = loglevel
        self.logfile = logfile
        self.max_tasks_per_child = max_tasks_per_child or conf.worker_max_tasks_per_child
        self.setup_logging = setup_logging
        self.show_banner = banner
        self.install_signals = options.pop("install_signals", True)
        self.options = options
        self._stop_requested = 0
        self.ready = False
        self.consumer: Consumer | None = None

    def stop(self) -> None:
        """Ask for a warm shutdown (from another thread)."""
        self._stop_requested = max(self._stop_requested, 1)
        if self.consumer is not None:
            self.consumer.fetching = False

    # -- set up ------------------------------------------------------------------------

    def _queues(self) -> list[Any]:
        router = self.app.router
        if self.queue_names:
            return router.select_queues(self.queue_names)
        return list(router.queues.values())

    def banner(self, queues: list[Any]) -> str:
        app = self.app
        tasks = sorted(name for name in app.tasks if not name.startswith("celery."))
        lines = [
            f" -------------- {self.hostname} v{__version__}",
            f"--- ***** ----- {platform.platform()} {time.strftime('%Y-%m-%d %H:%M:%S')}",
            "-- ******* ---- ",
            f"- ** ---------- .> app:         {app.main or '__main__'}:{id(app):#x}",
            f"- ** ---------- .> transport:   {_describe(app.broker_url)}",
            f"- ** ---------- .> results:     {_describe(app.result_backend_url) or 'disabled://'}",
            f"- *** --- * --- .> concurrency: {self.concurrency} ({self.pool_name})",
            "-- ******* ---- .> task events: OFF",
            "--- ***** ----- ",
            " -------------- [queues]",
        ]
        for queue in queues:
            exchange = queue.exchange
            lines.append(f"                .> {queue.name:<16} exchange={exchange.name}({exchange.type}) "
                         f"key={queue.routing_key}")
        lines += ["", "[tasks]"] + [f"  . {name}" for name in tasks]
        return "\n".join(lines) + "\n"

    def _run_job(self, job: Job) -> Outcome:
        return execute_job(self.app, job, self.hostname)

    def _install_signal_handlers(self) -> None:
        def on_stop(signum: int, frame: Any) -> None:
            self._stop_requested += 1
            if self._stop_requested == 1:
                logger.warning("worker: Warm shutdown (%s): finishing running tasks; "
                               "press Ctrl-C again to stop at once", signal.Signals(signum).name)
                if self.consumer is not None:
                    self.consumer.fetching = False
            else:
                logger.warning("worker: Cold shutdown: stopping now")
                raise ColdShutdown()

        def on_quit(signum: int, frame: Any) -> None:
            self._stop_requested = 2
            logger.warning("worker: Cold shutdown (SIGQUIT)")
            raise ColdShutdown()

        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGQUIT, on_quit)

    def _subscribe(self, names: list[str]) -> Any:
        conf = self.app.conf
        retry = conf.broker_connection_retry_on_startup
        if retry is None:
            retry = conf.broker_connection_retry
        max_retries = conf.broker_connection_max_retries
        attempt = 0
        while True:
            try:
                broker = self.app.broker
                broker.declare(self._queue_objects)
                return broker.subscribe(names, prefetch=self.prefetch)
            except OperationalError as exc:
                attempt += 1
                if not retry or (max_retries is not None and attempt > max_retries):
                    raise
                delay = min(2.0 * attempt, 32.0)
                logger.error("consumer: Cannot connect to %s: %s. Trying again in %.0f seconds... (%s/%s)",
                             mask_url(self.app.broker_url), exc, delay, attempt, max_retries)
                self.app._reset_connections()
                time.sleep(delay)

    # -- run ---------------------------------------------------------------------------

    def start(self) -> int:
        """Run until stopped; return the process exit code."""
        app = self.app
        if self.setup_logging:
            from ..log import setup_logging

            setup_logging(self.loglevel, self.logfile)
        signals.celeryd_init.send(sender=self.hostname, instance=self, conf=app.conf, options=self.options)
        app.finalize()
        self._queue_objects = self._queues()
        names = [queue.name for queue in self._queue_objects]
        if self.show_banner:
            import sys

            print(self.banner(self._queue_objects), file=sys.__stdout__, flush=True)
        signals.worker_init.send(sender=self)
        accept = accept_content_types(app.conf.accept_content or ["json"])
        pool = create_pool(self.pool_name, self._run_job, self.concurrency,
                           **({"max_tasks_per_child": self.max_tasks_per_child} if self.pool_name == "prefork" else {}))
        pool.start()  # fork pool processes before any thread of ours exists
        subscription = self._subscribe(names)
        self.consumer = consumer = Consumer(app, subscription, pool, hostname=self.hostname,
                                            prefetch=self.prefetch, accept=accept)
        if self.pool_name == "prefork":
            pool.on_lost = consumer.lost_outcome
        if self.install_signals:
            self._install_signal_handlers()
        self.ready = True
        logger.warning("%s ready.", self.hostname)
        signals.worker_ready.send(sender=self)
        code = 0
        try:
            consumer.run(lambda: self._stop_requested == 0)
            signals.worker_shutting_down.send(sender=self.hostname, sig="SIGTERM", how="Warm", exitcode=0)
            consumer.give_back()
            consumer.drain(self.app.conf.worker_soft_shutdown_timeout or None)
            pool.stop(wait=True)
        except ColdShutdown:
            code = 1
            pool.stop(wait=False)
        finally:
            if self.install_signals and self._stop_requested < 2:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            subscription.close()
            signals.worker_shutdown.send(sender=self)
            if self.install_signals:
                app.close()
        return code


def _describe(url: str | None) -> str | None:
    if url is None:
        return None
    if url.startswith(("sqlite://", "db+sqlite://")):
        from ..sqlite_util import sqlite_path

        return f"{mask_url(url)} (file {os.path.abspath(sqlite_path(url.removeprefix('db+')))})"
    return mask_url(url)
