"""The `celeriac` command: worker, call, result, purge, and the rest of Celery's commands."""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any

import click

from . import __version__
from .app import Celery
from .urls import mask_url


def find_app(spec: str) -> Celery:
    """Resolve `-A`: 'module', 'package' (with a celery module or an app), or 'module:attr'."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name or "." not in module_name:
            raise click.UsageError(f"Unable to load celeriac application: module {module_name!r} "
                                   f"not found ({exc})") from exc
        # 'proj.app' may name an attribute of module 'proj'
        module_name, attr = module_name.rsplit(".", 1)
        module = importlib.import_module(module_name)
    if attr:
        found = module
        for part in attr.split("."):
            found = getattr(found, part)
        if callable(found) and not isinstance(found, Celery):
            found = found()
        if not isinstance(found, Celery):
            raise click.UsageError(f"{spec!r} is not a celeriac application")
        return found
    for name in ("app", "celery"):
        candidate = getattr(module, name, None)
        if isinstance(candidate, Celery):
            return candidate
    if hasattr(module, "__path__"):
        try:
            sub = importlib.import_module(f"{module.__name__}.celery")
        except ModuleNotFoundError as exc:
            if exc.name != f"{module.__name__}.celery":
                raise
        else:
            for name in ("app", "celery"):
                candidate = getattr(sub, name, None)
                if isinstance(candidate, Celery):
                    return candidate
    apps = [value for value in vars(module).values() if isinstance(value, Celery)]
    if len(apps) == 1:
        return apps[0]
    raise click.UsageError(f"Unable to find a celeriac application in module {spec!r}: "
                           "name it with -A module:attribute")


class Context:
    def __init__(self, app_spec: str | None, broker: str | None, backend: str | None,
                 app: Celery | None = None) -> None:
        self.app_spec = app_spec
        self.broker = broker
        self.backend = backend
        self._app = app

    @property
    def app(self) -> Celery:
        if self._app is None:
            if self.app_spec:
                self._app = find_app(self.app_spec)
            else:
                from ._state import get_current_app

                self._app = get_current_app()
            if self.broker:
                self._app.conf.broker_url = self.broker
            if self.backend:
                self._app.conf.result_backend = self.backend
        return self._app


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-A", "--app", "app_spec", envvar="CELERIAC_APP", help="The app: module, package or module:attr.")
@click.option("-b", "--broker", envvar="CELERIAC_BROKER_URL", help="Broker URL (overrides the app's).")
@click.option("--result-backend", envvar="CELERIAC_RESULT_BACKEND", help="Result backend URL.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Change to this directory first.")
@click.version_option(__version__, "--version", prog_name="celeriac")
@click.pass_context
def cli(ctx: click.Context, app_spec: str | None, broker: str | None, result_backend: str | None,
        workdir: str | None) -> None:
    """celeriac: a fast, Celery-compatible task queue."""
    if workdir:
        os.chdir(workdir)
    if ctx.obj is None:
        ctx.obj = Context(app_spec, broker, result_backend)
    else:
        ctx.obj.app_spec = app_spec or ctx.obj.app_spec


@cli.command()
@click.option("-l", "--loglevel", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "FATAL"], case_sensitive=False))
@click.option("-Q", "--queues", help="Comma-separated queues to consume (default: all task_queues).")
@click.option("-c", "--concurrency", type=int, help="Number of processes/threads (default: CPU count).")
@click.option("-P", "--pool", type=click.Choice(["prefork", "threads", "solo", "asyncio"]),
              help="Pool (default prefork); asyncio runs async def tasks on one event loop.")
@click.option("-n", "--hostname", help="Node name, e.g. w1@%h.")
@click.option("--prefetch-multiplier", type=int, help="Messages to prefetch per process.")
@click.option("--disable-prefetch", is_flag=True, default=None,
              help="Take a message only when a process is free (worker_disable_prefetch).")
@click.option("--max-tasks-per-child", type=int, help="Replace a pool process after this many tasks.")
@click.option("--max-memory-per-child", type=int,
              help="Replace a pool process after a task leaves it above this many KiB resident.")
@click.option("--autoscale", help="max,min: grow and shrink the pool with the load.")
@click.option("--time-limit", type=float, help="Hard time limit (s) for tasks that set none.")
@click.option("--soft-time-limit", type=float, help="Soft time limit (s) for tasks that set none.")
@click.option("-B", "--beat", is_flag=True, help="Also run the periodic task scheduler in this process.")
@click.option("-s", "--schedule-filename", "--schedule", help="Beat's schedule file (with -B).")
@click.option("-S", "--scheduler", help="Beat's scheduler class (with -B).")
@click.option("-E", "--task-events", is_flag=True, default=None,
              help="Send task events, for monitors such as Flower (worker_send_task_events).")
@click.option("--without-gossip", is_flag=True, help="With --without-heartbeat: send no worker events.")
@click.option("--without-mingle", is_flag=True, help="Accepted for Celery compatibility.")
@click.option("--without-heartbeat", is_flag=True, help="With --without-gossip: send no worker events.")
@click.option("-O", "optimization", help="Accepted for Celery compatibility.")
@click.option("-f", "--logfile", help="Log to this file instead of stderr.")
@pass_ctx
def worker(ctx: Context, loglevel: str, queues: str | None, concurrency: int | None, pool: str | None,
           hostname: str | None, prefetch_multiplier: int | None, disable_prefetch: bool | None,
           max_tasks_per_child: int | None, max_memory_per_child: int | None, autoscale: str | None,
           time_limit: float | None, soft_time_limit: float | None, beat: bool,
           schedule_filename: str | None, scheduler: str | None, logfile: str | None,
           task_events: bool | None, without_gossip: bool, without_heartbeat: bool,
           **ignored: Any) -> None:
    """Start a worker."""
    from .worker.worker import Worker

    app = ctx.app
    if disable_prefetch:
        app.conf.worker_disable_prefetch = True
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    code = Worker(app, queues=names, concurrency=concurrency, pool=pool, hostname=hostname,
                  prefetch_multiplier=prefetch_multiplier, loglevel=loglevel, logfile=logfile,
                  max_tasks_per_child=max_tasks_per_child, max_memory_per_child=max_memory_per_child,
                  autoscale=autoscale, time_limit=time_limit, soft_time_limit=soft_time_limit,
                  beat=beat, schedule_filename=schedule_filename, scheduler=scheduler, task_events=task_events,
                  worker_events=not (without_gossip and without_heartbeat)).start()
    sys.exit(code)


def _json_option(value: str | None, kind: type, what: str) -> Any:
    if not value:
        return kind()
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{what} must be JSON: {exc}") from exc
    if not isinstance(parsed, kind):
        raise click.BadParameter(f"{what} must be a JSON {kind.__name__}")
    return parsed


@cli.command()
@click.argument("name")
@click.option("-a", "--args", help='Positional arguments as a JSON list, e.g. \'[2, 2]\'.')
@click.option("-k", "--kwargs", help="Keyword arguments as a JSON object.")
@click.option("--eta", help="ISO-8601 time to run at.")
@click.option("--countdown", type=float, help="Seconds to wait before running.")
@click.option("--expires", help="Seconds, or ISO-8601 time, after which it is not run.")
@click.option("--queue", help="Queue to send to.")
@click.option("--exchange", help="Exchange to send to.")
@click.option("--routing-key", help="Routing key.")
@click.option("--serializer", default=None, help="Serializer (json by default).")
@pass_ctx
def call(ctx: Context, name: str, args: str | None, kwargs: str | None, eta: str | None,
         countdown: float | None, expires: str | None, queue: str | None, exchange: str | None,
         routing_key: str | None, serializer: str | None) -> None:
    """Send a task by name and print its id."""
    options: dict[str, Any] = {k: v for k, v in {
        "eta": eta, "countdown": countdown, "queue": queue, "exchange": exchange,
        "routing_key": routing_key, "serializer": serializer}.items() if v is not None}
    if expires is not None:
        options["expires"] = float(expires) if expires.replace(".", "", 1).isdigit() else expires
    result = ctx.app.send_task(name, _json_option(args, list, "--args"),
                               _json_option(kwargs, dict, "--kwargs"), **options)
    click.echo(result.id)


@cli.command()
@click.argument("task_id")
@click.option("--traceback", is_flag=True, help="Show the traceback of a failed task.")
@click.option("-t", "--timeout", type=float, default=None, help="Wait this long for the result.")
@pass_ctx
def result(ctx: Context, task_id: str, traceback: bool, timeout: float | None) -> None:
    """Print the result of a task (waiting for it with --timeout)."""
    res = ctx.app.AsyncResult(task_id)
    if timeout is not None:
        res.get(timeout=timeout, propagate=False)
    if traceback:
        click.echo(res.traceback or "")
    elif res.state == "PENDING":
        click.echo(f"PENDING (no result for {task_id} yet)")
    else:
        value = res.result
        click.echo(repr(value) if isinstance(value, BaseException) else json.dumps(value, default=repr))


@cli.command()
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("-Q", "--queues", help="Comma-separated queues to purge (default: all task_queues).")
@pass_ctx
def purge(ctx: Context, force: bool, queues: str | None) -> None:
    """Delete every waiting message from the queues."""
    app = ctx.app
    names = [q.strip() for q in queues.split(",")] if queues else list(app.router.queues)
    if not force:
        click.confirm(f"Delete all messages in {', '.join(names)} on {mask_url(app.broker_url)}?",
                      abort=True)
    total = sum(app.broker.purge(name) for name in names)
    click.echo(f"Purged {total} message{'s' if total != 1 else ''} from {len(names)} known task "
               f"queue{'s' if len(names) != 1 else ''}.")


@cli.command("purge-results")
@pass_ctx
def purge_results(ctx: Context) -> None:
    """Delete results older than result_expires (stores that do not expire them themselves)."""
    removed = ctx.app.backend.cleanup()
    click.echo(f"Deleted {removed} expired result{'s' if removed != 1 else ''}.")


# -- remote control: inspect, control, status ------------------------------------------------

EX_UNAVAILABLE = 69  # as Celery, when no worker answers


def _remote_options(fun: Any) -> Any:
    fun = click.option("-j", "--json", "as_json", is_flag=True, help="Print the replies as JSON.")(fun)
    fun = click.option("-d", "--destination", help="Comma-separated node names.")(fun)
    fun = click.option("-t", "--timeout", type=float, default=1.0, show_default=True,
                       help="Seconds to wait for each reply.")(fun)
    return fun


def _destination(value: str | None) -> list[str] | None:
    return [name.strip() for name in value.split(",") if name.strip()] if value else None


def _pretty(reply: Any) -> tuple[str, str]:
    """Celery's CLI rendering of one node's reply: (status, text)."""
    if isinstance(reply, list):
        return "OK", "\n".join(f"* {item}" for item in reply) if reply else "- empty -"
    if isinstance(reply, dict) and ("ok" in reply or "error" in reply):
        if "error" in reply:
            return "ERROR", str(reply["error"])
        return "OK", str(reply["ok"])
    if isinstance(reply, dict):
        return "OK", json.dumps(reply, sort_keys=True, indent=4, default=repr)
    return "OK", str(reply)


def _say_reply(reply: dict[str, Any], show_body: bool = True) -> None:
    node, value = next(iter(reply.items()))
    status, text = _pretty(value)
    click.echo(f"->  {node}: {status}")
    if show_body and text:
        click.echo("\n".join("    " + line for line in text.splitlines()))


def _compile_arguments(name: str, args: list[str]) -> dict[str, Any]:
    """Positional CLI words -> the command's keyword arguments (as Celery's CLI)."""
    from .worker.control import COMMANDS

    meta = COMMANDS[name]
    arguments: dict[str, Any] = {}
    rest = list(args)
    for index, (arg_name, kind) in enumerate(meta.args):
        if index >= len(rest):
            break
        arguments[arg_name] = kind(rest[index])
    rest = rest[len(meta.args):]
    if rest and not meta.variadic:
        raise click.UsageError(f"Command {name!r} takes arguments: {meta.signature}")
    if meta.variadic:
        arguments[meta.variadic] = rest
    return arguments


def _check_command(kind: str, name: str) -> None:
    from .worker.control import COMMANDS

    names = sorted(n for n, meta in COMMANDS.items() if meta.type == kind and meta.visible and n == meta.name)
    if name not in names:
        raise click.UsageError(f"Command {name} not recognized. Available {kind} commands: {', '.join(names)}")


def _finish_remote(replies: Any, as_json: bool) -> None:
    if not replies:
        click.echo("Error: No nodes replied within time constraint", err=True)
        sys.exit(EX_UNAVAILABLE)
    if as_json:
        click.echo(json.dumps(replies, default=repr))
        return
    count = len(replies)
    click.echo(f"\n{count} node{'s' if count != 1 else ''} online.")


def _app_of(click_ctx: click.Context) -> Celery:
    obj = click_ctx.find_object(Context)
    if obj is None:
        raise click.UsageError("no application: use -A")
    return obj.app


@cli.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@click.argument("command")
@_remote_options
@click.pass_context
def inspect(click_ctx: click.Context, command: str, timeout: float, destination: str | None,
            as_json: bool) -> None:
    """Ask the workers: ping, active, reserved, scheduled, registered, stats, revoked, ..."""
    _check_command("inspect", command)
    app = _app_of(click_ctx)
    arguments = _compile_arguments(command, click_ctx.args)
    callback = None if as_json else _say_reply
    replies = app.control.inspect(timeout=timeout, destination=_destination(destination),
                                  callback=callback)._request(command, **arguments)
    _finish_remote(replies, as_json)


@cli.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@click.argument("command")
@_remote_options
@click.pass_context
def control(click_ctx: click.Context, command: str, timeout: float, destination: str | None,
            as_json: bool) -> None:
    """Tell the workers: revoke, rate_limit, shutdown, pool_grow, add_consumer, ..."""
    _check_command("control", command)
    app = _app_of(click_ctx)
    arguments = _compile_arguments(command, click_ctx.args)
    callback = None if as_json else _say_reply
    replies = app.control.broadcast(command, arguments=arguments, destination=_destination(destination),
                                    reply=True, timeout=timeout, callback=callback)
    if replies and not as_json:
        from .control import flatten_reply

        replies = flatten_reply(replies)
    _finish_remote(replies, as_json)


@cli.command()
@_remote_options
@pass_ctx
def status(ctx: Context, timeout: float, destination: str | None, as_json: bool) -> None:
    """List the workers that are online."""
    callback = None if as_json else (lambda reply: _say_reply(reply, show_body=False))
    replies = ctx.app.control.inspect(timeout=timeout, destination=_destination(destination),
                                      callback=callback).ping()
    _finish_remote(replies, as_json)


def _add_beat() -> None:
    try:
        from .beat_cli import beat
    except ImportError:  # beat is optional
        return
    cli.add_command(beat)


_add_beat()


def main(argv: list[str] | None = None, app: Celery | None = None) -> None:
    """Entry point of the `celeriac` command."""
    obj = Context(None, None, None, app=app) if app is not None else None
    cli.main(args=argv, prog_name="celeriac", obj=obj)


if __name__ == "__main__":
    main()
