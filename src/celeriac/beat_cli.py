"""The `celeriac beat` command: run the periodic task scheduler (see celeriac.beat).

Registered on the `celeriac` group with ``cli.add_command(beat)``; it takes the group's
context object (celeriac.cli.Context) for the app.
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import datetime
from typing import Any

import click

from . import __version__

BANNER = """\
__    -    ... __   -        _
LocalTime -> {timestamp}
Configuration ->
    . broker -> {broker}
    . scheduler -> {scheduler}
{scheduler_info}
    . logfile -> {logfile}@%{loglevel}
    . maxinterval -> {human_interval} ({max_interval}s)"""

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "FATAL"]


@click.command()
@click.option("-s", "--schedule", "schedule_filename",
              help="Path to the schedule file (beat_schedule_filename, default celerybeat-schedule).")
@click.option("-S", "--scheduler",
              help="Scheduler class, e.g. celeriac.beat:DatabaseScheduler (default beat_scheduler).")
@click.option("--max-interval", type=float,
              help="Max seconds to sleep between schedule iterations (beat_max_loop_interval).")
@click.option("-l", "--loglevel", default="WARNING", show_default=True,
              type=click.Choice(LOG_LEVELS, case_sensitive=False))
@click.option("-f", "--logfile", help="Log to this file instead of stderr.")
@click.option("--pidfile", help="Write the pid here; refuse to start if a live beat wrote it.")
@click.option("-q", "--quiet", is_flag=True, help="Don't print the banner.")
@click.pass_obj
def beat(obj: Any, schedule_filename: str | None, scheduler: str | None,
         max_interval: float | None, loglevel: str, logfile: str | None, pidfile: str | None,
         quiet: bool) -> None:
    """Start the beat periodic task scheduler (safe to run more than one)."""
    from .beat import Service
    from .log import setup_logging

    app = obj.app
    if pidfile:
        _create_pidfile(pidfile)
    try:
        if not quiet:
            click.echo(f"celeriac beat v{__version__} is starting.")
        setup_logging(loglevel, logfile, redirect_stdouts=False)
        service = Service(app, max_interval=max_interval, schedule_filename=schedule_filename,
                          scheduler_cls=scheduler)
        if not quiet:
            click.echo(_banner(app, service, loglevel, logfile))
        _install_signal_handlers(service)
        service.start()
    except Exception as exc:
        import logging

        logging.getLogger("celeriac.beat").critical("beat raised exception %s: %r", type(exc), exc,
                                                    exc_info=True)
        raise
    finally:
        if pidfile:
            _remove_pidfile(pidfile)


def _banner(app: Any, service: Any, loglevel: str, logfile: str | None) -> str:
    from . import beat as beat_package
    from .schedules import humanize_seconds
    from .urls import mask_url

    scheduler = service.scheduler
    cls = type(scheduler)
    module = cls.__module__
    # celeriac.beat's schedulers live in its submodules: show the name users give ``-S``.
    if module.startswith("celeriac.beat.") and getattr(beat_package, cls.__qualname__, None) is cls:
        module = "celeriac.beat"
    return BANNER.format(
        timestamp=datetime.now().replace(microsecond=0),
        broker=mask_url(app.broker_url),
        scheduler=f"{module}.{cls.__qualname__}",
        scheduler_info=scheduler.info,
        logfile=logfile or "[stderr]",
        loglevel=loglevel.upper(),
        human_interval=humanize_seconds(scheduler.max_interval),
        max_interval=f"{scheduler.max_interval:g}",
    )


def _install_signal_handlers(service: Any) -> None:
    stops = 0

    def on_stop(signum: int, frame: Any) -> None:
        nonlocal stops
        stops += 1
        if stops > 1:  # asked twice: don't wait for a store that hangs
            raise SystemExit(1)
        service.stop()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)


def _create_pidfile(path: str) -> None:
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = _read_pid(path)
            if pid is not None and _alive(pid):
                raise click.ClickException(
                    f"pidfile {path} exists: beat already runs as pid {pid}") from None
            # Left by a beat that died: take it over.
            os.unlink(path)
            continue
        with os.fdopen(fd, "w") as file:
            file.write(f"{os.getpid()}\n")
        return
    raise click.ClickException(f"cannot create pidfile {path}")


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as file:
            return int(file.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_pidfile(path: str) -> None:
    if _read_pid(path) == os.getpid():
        try:
            os.unlink(path)
        except OSError as exc:
            print(f"celeriac beat: cannot remove pidfile {path}: {exc}", file=sys.stderr)
