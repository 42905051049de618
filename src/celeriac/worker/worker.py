"""The worker process: set up, print the banner, run the consumer, stop warm, soft or cold.

Start-up, in order: logging, `celeryd_init`, the task modules, the pool (forked before any
thread of ours exists), the broker subscription, the revoked ids stored in the broker, the
remote-control thread, the consumer loop, and the embedded beat (`-B`).

Shutdown, as Celery:

- warm (SIGTERM, first Ctrl-C, remote `shutdown`): stop fetching, give back what did not
  start, let running tasks finish and ack them, exit 0.
- cold (SIGQUIT, second Ctrl-C; SIGTERM too with ``REMAP_SIGTERM=SIGQUIT``): with
  `worker_soft_shutdown_timeout` > 0 and tasks running, first wait up to that long for them
  (a soft shutdown); then stop the pool at once. Unacked messages (acks_late tasks that did
  not finish, prefetched ones) go back to the broker, so nothing acks_late is lost, even
  under Kubernetes' SIGTERM, grace period, SIGKILL: a SIGKILLed worker's messages come back
  when its broker lease expires.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from .. import __version__, signals
from ..events import EventDispatcher, Heart
from ..exceptions import OperationalError
from ..serialization import accept_content_types
from ..urls import mask_url
from .autoscale import Autoscaler, parse_autoscale
from .consumer import Consumer
from .execute import Job, Outcome, execute_job
from .pools import create_pool
from .revoked import RevokedTasks

if TYPE_CHECKING:
    from ..app import Celery

logger = logging.getLogger("celeriac.worker")


class ColdShutdown(SystemExit):
    """Raised in the main thread to stop at once (a SystemExit, so no task code takes it
    for a failure of its own)."""

    def __init__(self) -> None:
        super().__init__(1)


def default_hostname(name: str | None) -> str:
    host = socket.gethostname()
    if not name:
        return f"celeriac@{host}"
    name = name.replace("%h", host).replace("%n", host.split(".")[0]).replace(
        "%d", host.split(".", 1)[1] if "." in host else "")
    return name if "@" in name else f"{name}@{host}"


class Worker:
    """`celeriac -A proj worker`: consumes the queues and runs tasks in a pool.

    Args:
        app: The app.
        queues: Queue names to consume (default: all `task_queues`).
        concurrency: Pool size (default `worker_concurrency`, else the CPU count).
        pool: ``prefork`` (default), ``threads``, ``solo`` or ``asyncio``.
        hostname: Node name (``%h``, ``%n``, ``%d`` expand as in Celery).
        prefetch_multiplier: Messages held per pool slot.
        max_tasks_per_child: Replace a prefork child after this many tasks.
        max_memory_per_child: Replace a prefork child after a task leaves its peak resident
            memory above this many KiB.
        autoscale: ``"max,min"``: grow and shrink the pool with the load.
        time_limit, soft_time_limit: Defaults for tasks that set none.
        beat: Run the periodic scheduler in this process (`-B`).
        soft_shutdown_timeout: `worker_soft_shutdown_timeout`.
        task_events: Send task events (`-E`; default `worker_send_task_events`).
        worker_events: Send worker-online/heartbeat/offline (off with both
            ``--without-heartbeat`` and ``--without-gossip``).
    """

    def __init__(self, app: Celery, *, queues: list[str] | None = None, concurrency: int | None = None,
                 pool: str | None = None, hostname: str | None = None,
                 prefetch_multiplier: int | None = None, loglevel: str = "WARNING",
                 logfile: str | None = None, max_tasks_per_child: int | None = None,
                 max_memory_per_child: int | None = None, autoscale: str | tuple[int, int] | None = None,
                 time_limit: float | None = None, soft_time_limit: float | None = None,
                 beat: bool = False, schedule_filename: str | None = None, scheduler: str | None = None,
                 setup_logging: bool = True, banner: bool = True, soft_shutdown_timeout: float | None = None,
                 task_events: bool | None = None, worker_events: bool = True, **options: Any) -> None:
        self.app = app
        conf = app.conf
        self.queue_names = queues
        self.concurrency = concurrency or conf.worker_concurrency or os.cpu_count() or 1
        self.pool_name = pool or conf.worker_pool or "prefork"
        if self.pool_name == "solo":
            self.concurrency = 1
        if isinstance(autoscale, str):
            autoscale = parse_autoscale(autoscale)
        self.autoscale = autoscale if self.pool_name in ("prefork", "threads") else None
        if self.autoscale:
            self.concurrency = max(self.autoscale[1], 1)
        self.hostname = default_hostname(hostname)
        multiplier = conf.worker_prefetch_multiplier if prefetch_multiplier is None else prefetch_multiplier
        self.prefetch_multiplier = max(1, int(multiplier or 1))
        self.loglevel = loglevel
        self.logfile = logfile
        self.max_tasks_per_child = max_tasks_per_child or conf.worker_max_tasks_per_child
        self.max_memory_per_child = max_memory_per_child or conf.worker_max_memory_per_child
        self.time_limits = (time_limit if time_limit is not None else conf.task_time_limit,
                            soft_time_limit if soft_time_limit is not None else conf.task_soft_time_limit)
        self.beat = beat
        self.beat_options = {"schedule_filename": schedule_filename, "scheduler_cls": scheduler}
        self.setup_logging = setup_logging
        self.show_banner = banner
        self.soft_shutdown_timeout = float(conf.worker_soft_shutdown_timeout or 0.0
                                           if soft_shutdown_timeout is None else soft_shutdown_timeout)
        self.task_events = bool(conf.worker_send_task_events if task_events is None else task_events)
        self.worker_events = worker_events
        self.events: EventDispatcher | None = None
        self.heart: Heart | None = None
        self.install_signals = options.pop("install_signals", True)
        self.options = options
        self._stop_requested = 0
        self._cold = False
        self._soft_timer: threading.Timer | None = None
        self._loop_done = False
        self.ready = False
        self.clock = 0
        self.started_at = time.monotonic()
        self.consumer: Consumer | None = None
        self.pool: Any = None
        self.revoked: Any = None

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
        concurrency = (f"{{min={self.autoscale[1]}, max={self.autoscale[0]}}}" if self.autoscale
                       else str(self.concurrency))
        lines = [
            f" -------------- {self.hostname} v{__version__}",
            f"--- ***** ----- {platform.platform()} {time.strftime('%Y-%m-%d %H:%M:%S')}",
            "-- ******* ---- ",
            f"- ** ---------- .> app:         {app.main or '__main__'}:{id(app):#x}",
            f"- ** ---------- .> transport:   {_describe(app.broker_url)}",
            f"- ** ---------- .> results:     {_describe(app.result_backend_url) or 'disabled://'}",
            f"- *** --- * --- .> concurrency: {concurrency} ({self.pool_name})",
            "-- ******* ---- .> task events: "
            + ("ON" if self.task_events else "OFF (enable -E to monitor tasks in this worker)"),
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

    def _create_pool(self) -> Any:
        options: dict[str, Any] = {}
        if self.pool_name == "prefork":
            options = {"max_tasks_per_child": self.max_tasks_per_child,
                       "max_memory_per_child": self.max_memory_per_child, "hostname": self.hostname, "app": self.app}
        elif self.pool_name == "asyncio":
            options = {"app": self.app, "hostname": self.hostname}
        return create_pool(self.pool_name, self._run_job, self.concurrency, **options)

    def _subscribe(self, names: list[str], prefetch: int) -> Any:
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
                return broker.subscribe(names, prefetch=prefetch)
            except OperationalError as exc:
                attempt += 1
                if not retry or (max_retries is not None and attempt > max_retries):
                    raise
                delay = min(2.0 * attempt, 32.0)
                logger.error("consumer: Cannot connect to %s: %s. Trying again in %.0f seconds... (%s/%s)",
                             mask_url(self.app.broker_url), exc, delay, attempt, max_retries)
                self.app._reset_connections()
                time.sleep(delay)

    def _start_mailbox(self) -> Any:
        if not self.app.conf.worker_enable_remote_control:
            return None
        from .pidbox import Mailbox

        try:
            return Mailbox(self)
        except NotImplementedError as exc:
            logger.warning("Remote control is off: %s", exc)
        except Exception as exc:  # e.g. AMQP: another node holds the exclusive pidbox queue
            logger.warning("Remote control is off: cannot listen as %s (%r). Is another worker "
                           "running with the same node name? Give each one its own with -n.",
                           self.hostname, exc)
        return None

    def _start_beat(self) -> Any:
        if not self.beat:
            return None
        from ..beat import EmbeddedBeat

        beat = EmbeddedBeat(self.app, schedule_filename=self.beat_options["schedule_filename"],
                            scheduler_cls=self.beat_options["scheduler_cls"])
        beat.start()
        return beat

    # -- signals -----------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        def on_term(signum: int, frame: Any) -> None:
            if os.environ.get("REMAP_SIGTERM") == "SIGQUIT":
                on_cold(signum, frame)
            elif self._stop_requested == 0:
                self._warm(signum)

        def on_int(signum: int, frame: Any) -> None:
            if self._stop_requested == 0:
                self._warm(signum)
                logger.warning("worker: Hitting Ctrl+C again will terminate all running tasks!")
            else:
                on_cold(signum, frame)

        def on_cold(signum: int, frame: Any) -> None:
            if self._loop_done:
                return  # past the loop: cleaning up already
            if self._cold:
                logger.warning("worker: Cold shutdown: stopping now")
                raise ColdShutdown()
            self._cold = True
            self._stop_requested = 2
            signals.worker_shutting_down.send(sender=self.hostname, sig=signal.Signals(signum).name,
                                              how="Cold", exitcode=1)
            if self.consumer is not None:
                self.consumer.fetching = False
            running = self.consumer is not None and bool(self.consumer.active)
            if self.soft_shutdown_timeout > 0 and (running or self.app.conf.worker_enable_soft_shutdown_on_idle):
                logger.warning("Initiating Soft Shutdown, terminating in %s seconds", self.soft_shutdown_timeout)
                self._soft_timer = threading.Timer(self.soft_shutdown_timeout, signal.pthread_kill,
                                                   (threading.main_thread().ident, signal.SIGQUIT))
                self._soft_timer.daemon = True
                self._soft_timer.start()
                return
            logger.warning("worker: Cold shutdown (%s)", signal.Signals(signum).name)
            raise ColdShutdown()

        signal.signal(signal.SIGINT, on_int)
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGQUIT, on_cold)

    def _warm(self, signum: int) -> None:
        self._stop_requested = 1
        logger.warning("worker: Warm shutdown (%s): finishing running tasks", signal.Signals(signum).name)
        signals.worker_shutting_down.send(sender=self.hostname, sig=signal.Signals(signum).name,
                                          how="Warm", exitcode=0)
        if self.consumer is not None:
            self.consumer.fetching = False

    # -- run ---------------------------------------------------------------------------

    def start(self) -> int:
        """Run until stopped; return the process exit code."""
        app = self.app
        if self.setup_logging:
            from ..log import setup_logging

            conf = app.conf
            setup_logging(self.loglevel, self.logfile, bool(conf.worker_redirect_stdouts),
                          conf.worker_redirect_stdouts_level, format=conf.worker_log_format,
                          task_format=conf.worker_task_log_format, datefmt=conf.worker_log_datefmt,
                          hijack_root_logger=bool(conf.worker_hijack_root_logger))
        signals.celeryd_init.send(sender=self.hostname, instance=self, conf=app.conf, options=self.options)
        app.finalize()
        self._queue_objects = self._queues()
        names = [queue.name for queue in self._queue_objects]
        signals.celeryd_after_setup.send(sender=self.hostname, instance=self, conf=app.conf)
        if self.show_banner:
            import sys

            print(self.banner(self._queue_objects), file=sys.__stdout__, flush=True)
        signals.worker_init.send(sender=self)
        accept = accept_content_types(app.conf.accept_content or ["json"])
        self.pool = pool = self._create_pool()
        pool.start()  # fork pool processes before any thread of ours exists
        autoscaler = Autoscaler(pool, *self.autoscale) if self.autoscale else None
        size = self.autoscale[0] if self.autoscale else pool.limit
        subscription = self._subscribe(names, max(size, 1) * self.prefetch_multiplier)
        self.revoked = RevokedTasks(app.broker)
        mailbox = self._start_mailbox()  # listening before loading: no revoke falls between
        self.revoked.load()
        self.events = events = EventDispatcher(app, self.hostname, self.task_events)
        fair = bool(app.conf.worker_disable_prefetch) or any(task.acks_late for task in app.tasks.values())
        self.consumer = consumer = Consumer(
            app, subscription, pool, hostname=self.hostname, prefetch_multiplier=self.prefetch_multiplier,
            accept=accept, queues=self._queue_objects, revoked=self.revoked, autoscaler=autoscaler, fair=fair,
            events=events)
        consumer.default_time_limits = self.time_limits
        pool.on_lost = consumer.lost_outcome
        if mailbox is not None:
            mailbox.start()
        if self.install_signals:
            self._install_signal_handlers()
        beat = self._start_beat()
        if self.worker_events:
            self.heart = Heart(events, lambda: (len(consumer.active), consumer.task_count))
            self.heart.start()
        self.ready = True
        logger.warning("%s ready.", self.hostname)
        signals.worker_ready.send(sender=consumer)
        code = 0
        try:
            consumer.run(lambda: self._stop_requested == 0)
            consumer.give_back()
            if self._cold:  # a soft shutdown: running tasks get until the timer's SIGQUIT
                consumer.drain()
                code = 1
            else:
                consumer.drain()
            self._loop_done = True
            self._cancel_soft_timer()
            pool.stop(wait=True)
        except ColdShutdown:
            self._loop_done = True
            self._cancel_soft_timer()
            code = 1
            try:
                consumer._flush_acks()
            except Exception:  # the broker may be gone; unacked messages come back anyway
                pass
            pool.stop(wait=False)
        finally:
            self._loop_done = True
            if beat is not None:
                beat.stop()
            if mailbox is not None:
                mailbox.stop()
            if self.heart is not None:
                self.heart.stop()  # worker-offline
            if self.install_signals:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGQUIT, signal.SIG_IGN)
            subscription.close()
            signals.worker_shutdown.send(sender=self)
            if self.install_signals:
                app.close()
        return code

    def _cancel_soft_timer(self) -> None:
        if self._soft_timer is not None:
            self._soft_timer.cancel()


def _describe(url: str | None) -> str | None:
    if url is None:
        return None
    if url.startswith(("sqlite://", "db+sqlite://")):
        from ..sqlite_util import sqlite_path

        return f"{mask_url(url)} (file {os.path.abspath(sqlite_path(url.removeprefix('db+')))})"
    return mask_url(url)
