"""Remote-control commands a worker answers (`celery inspect ...`, `app.control.*`).

Each command is a function ``(worker, **arguments) -> reply``, registered with its Celery
name, kind (``inspect`` reads, ``control`` acts), and the CLI's argument types. They run
in the worker's control thread (worker/pidbox.py): reads copy the consumer's state, simple
writes (revoked ids, a task's rate limit) are single assignments, and anything that
changes the pool or the subscription goes to the consumer loop with `call_soon`.
Replies have Celery's shapes (celery/worker/control.py), so Celery's CLI prints them.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import signal as signal_module
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import __version__, states
from ..entities import Exchange, Queue
from ..urls import mask_url, parse_url
from .ratelimit import parse_rate

if TYPE_CHECKING:
    from .consumer import Consumer
    from .execute import Job
    from .worker import Worker

logger = logging.getLogger("celeriac.worker")


@dataclass(frozen=True)
class Command:
    """A command's metadata, as Celery's `Panel.meta` has it (used by the CLI)."""

    name: str
    handler: Callable[..., Any]
    type: str = "control"
    args: list[tuple[str, Callable[[str], Any]]] = field(default_factory=list)
    variadic: str | None = None
    signature: str | None = None
    help: str = ""
    visible: bool = True
    default_timeout: float = 1.0


COMMANDS: dict[str, Command] = {}


def command(kind: str = "control", *, alias: str | None = None,
            args: list[tuple[str, Callable[[str], Any]]] | None = None, variadic: str | None = None,
            signature: str | None = None, visible: bool = True,
            default_timeout: float = 1.0) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(handler: Callable[..., Any]) -> Callable[..., Any]:
        doc = (handler.__doc__ or "").strip().split("\n")[0]
        entry = Command(handler.__name__, handler, kind, args or [], variadic, signature, doc,
                        visible, default_timeout)
        COMMANDS[handler.__name__] = entry
        if alias:
            COMMANDS[alias] = entry
        return handler
    return register


def dispatch(worker: Worker, method: str, arguments: dict[str, Any]) -> Any:
    """Run a command; raises KeyError for an unknown one."""
    return COMMANDS[method].handler(worker, **arguments)


def _consumer(worker: Worker) -> Consumer:
    consumer = worker.consumer
    if consumer is None:
        raise RuntimeError("the worker is not consuming yet")
    return consumer


def ok(value: Any) -> dict[str, Any]:
    return {"ok": value}


def nok(value: Any) -> dict[str, Any]:
    return {"error": value}


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _signum(value: Any) -> int:
    if value is None or value == "":
        return signal_module.SIGTERM
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    name = str(value).upper()
    return int(getattr(signal_module, name if name.startswith("SIG") else f"SIG{name}"))


# -- what a job looks like to inspect commands ------------------------------------------


def job_info(job: Job, hostname: str, acknowledged: bool, safe: bool | None = False) -> dict[str, Any]:
    """Celery's `Request.info()`."""
    headers = job.message.headers
    args: Any = headers.get("argsrepr")
    kwargs: Any = headers.get("kwargsrepr")
    if not safe:
        try:
            args, kwargs, _ = job.message.decode_body(job.accept)
        except Exception:  # undecodable here: show the reprs the sender put in the headers
            pass
    return {
        "id": job.task_id, "name": job.task_name, "args": args, "kwargs": kwargs,
        "type": job.task_name, "hostname": hostname, "time_start": job.time_start,
        "acknowledged": acknowledged, "delivery_info": job.delivery_info,
        "worker_pid": job.worker_pid,
    }


def _queue_info(queue: Any) -> dict[str, Any]:
    """kombu's `Queue.as_dict(recurse=True)`."""
    exchange = queue.exchange or Exchange("")
    return {
        "name": queue.name,
        "exchange": {"name": exchange.name, "type": exchange.type, "arguments": exchange.arguments,
                     "durable": exchange.durable, "passive": exchange.passive,
                     "auto_delete": exchange.auto_delete, "delivery_mode": exchange.delivery_mode,
                     "no_declare": exchange.no_declare},
        "routing_key": queue.routing_key, "queue_arguments": queue.queue_arguments or None,
        "binding_arguments": queue.binding_arguments, "consumer_arguments": queue.consumer_arguments,
        "durable": queue.durable, "exclusive": queue.exclusive, "auto_delete": queue.auto_delete,
        "no_ack": queue.no_ack, "alias": queue.alias, "bindings": [],
        "no_declare": queue.no_declare, "expires": queue.expires, "message_ttl": queue.message_ttl,
        "max_length": queue.max_length, "max_length_bytes": queue.max_length_bytes,
        "max_priority": queue.max_priority,
    }


# -- inspect ------------------------------------------------------------------------------


@command("inspect", default_timeout=0.2)
def ping(worker: Worker, **kwargs: Any) -> Any:
    """Ping worker(s)."""
    return ok("pong")


@command("inspect", alias="dump_active")
def active(worker: Worker, safe: bool | None = False, **kwargs: Any) -> Any:
    """List of tasks currently being executed."""
    jobs, _, _ = _consumer(worker).jobs()
    return [job_info(job, worker.hostname, not job.acks_late, safe) for job in jobs]


@command("inspect", alias="dump_reserved")
def reserved(worker: Worker, safe: bool | None = False, **kwargs: Any) -> Any:
    """List of currently reserved tasks, not including scheduled/active."""
    _, jobs, _ = _consumer(worker).jobs()
    return [job_info(job, worker.hostname, False, safe) for job in jobs]


@command("inspect", alias="dump_schedule")
def scheduled(worker: Worker, safe: bool | None = False, **kwargs: Any) -> Any:
    """List of currently scheduled ETA/countdown tasks."""
    _, _, jobs = _consumer(worker).jobs()
    out = []
    for due, job in sorted(jobs, key=lambda item: item[0]):
        eta = job.message.headers.get("eta") or time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(due))
        priority = job.delivery_info.get("priority")
        out.append({"eta": eta, "priority": priority or 0,
                    "request": job_info(job, worker.hostname, False, safe)})
    return out


@command("inspect", alias="dump_revoked")
def revoked(worker: Worker, **kwargs: Any) -> Any:
    """List of revoked task-ids."""
    return worker.revoked.ids()


@command("inspect", alias="dump_tasks", variadic="taskinfoitems", signature="[attr1 [attr2 [... [attrN]]]]")
def registered(worker: Worker, taskinfoitems: Any = None, builtins: bool = False, **kwargs: Any) -> Any:
    """List of registered tasks."""
    items = [item for item in (taskinfoitems or ("exchange", "routing_key", "rate_limit"))
             if isinstance(item, str) and not item.startswith("_")]
    out = []
    for name in sorted(worker.app.tasks):
        if name.startswith("celery.") and not builtins:
            continue
        task = worker.app.tasks[name]
        fields = [f"{item}={getattr(task, item)}" for item in items if getattr(task, item, None) is not None]
        out.append(f"{name} [{' '.join(fields)}]" if fields else name)
    return out


@command("inspect")
def stats(worker: Worker, **kwargs: Any) -> Any:
    """Request worker statistics/information."""
    consumer = _consumer(worker)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    url = parse_url(worker.app.broker_url)
    pool = dict(worker.pool.info())
    pool.setdefault("max-tasks-per-child", worker.max_tasks_per_child or "N/A")
    pool["timeouts"] = [worker.app.conf.task_soft_time_limit or 0, worker.app.conf.task_time_limit or 0]
    if consumer.autoscaler is not None:
        pool["autoscaler"] = consumer.autoscaler.info()
    return {
        "broker": {"transport": url.scheme, "hostname": url.hostname, "port": url.port,
                   "virtual_host": (url.path or "").strip("/") or None, "uri_prefix": None,
                   "ssl": url.scheme in ("rediss", "amqps"), "url": mask_url(worker.app.broker_url),
                   "transport_options": worker.app.conf.broker_transport_options or {}},
        "clock": worker.clock,
        "pid": os.getpid(),
        "uptime": int(time.monotonic() - worker.started_at),
        "pool": pool,
        "prefetch_count": consumer.prefetch,
        "rusage": {name: getattr(usage, f"ru_{name}") for name in (
            "utime", "stime", "maxrss", "ixrss", "idrss", "isrss", "minflt", "majflt", "nswap",
            "inblock", "oublock", "msgsnd", "msgrcv", "nsignals", "nvcsw", "nivcsw")},
        "total": dict(consumer.totals),
        "sw_ident": "celeriac", "sw_ver": __version__, "sw_sys": platform.system(),
    }


@command("inspect")
def active_queues(worker: Worker, **kwargs: Any) -> Any:
    """List the task queues a worker is currently consuming from."""
    return [_queue_info(queue) for queue in list(_consumer(worker).queues)]


@command("inspect", variadic="ids", signature="[id1 [id2 [... [idN]]]]")
def query_task(worker: Worker, ids: Any = None, **kwargs: Any) -> Any:
    """Query for task information by id."""
    wanted = set(_as_list(ids))
    active_jobs, reserved_jobs, scheduled_jobs = _consumer(worker).jobs()
    found = {}
    for state, jobs in (("active", active_jobs), ("reserved", reserved_jobs),
                        ("scheduled", [job for _, job in scheduled_jobs])):
        for job in jobs:
            if job.task_id in wanted:
                found[job.task_id] = [state, job_info(job, worker.hostname, state == "active" and not job.acks_late)]
    return found


@command("inspect", alias="dump_conf")
def conf(worker: Worker, with_defaults: bool = False, **kwargs: Any) -> Any:
    """List configuration."""
    table = worker.app.conf.table(with_defaults=with_defaults)
    return json.loads(json.dumps(table, default=repr))


@command("inspect")
def clock(worker: Worker, **kwargs: Any) -> Any:
    """Get current logical clock value."""
    return {"clock": worker.clock}


@command("inspect")
def report(worker: Worker, **kwargs: Any) -> Any:
    """Information about the installation for bug reports."""
    return ok(f"software -> celeriac:{__version__} {platform.python_implementation()}:"
              f"{platform.python_version()} {platform.system()}\nbroker -> {mask_url(worker.app.broker_url)}")


@command("inspect", visible=False)
def hello(worker: Worker, from_node: str = "", revoked: Any = None, **kwargs: Any) -> Any:
    """Request mingle sync-data (sent by Celery workers when they start)."""
    if from_node == worker.hostname:
        return None
    if revoked:
        worker.revoked.add(_as_list(revoked), persist=False)
    return {"revoked": worker.revoked.ids(), "clock": worker.clock}


# -- control ------------------------------------------------------------------------------


@command("control", variadic="task_id", signature="[id1 [id2 [... [idN]]]]")
def revoke(worker: Worker, task_id: Any = None, terminate: bool = False, signal: Any = None,
           **kwargs: Any) -> Any:
    """Revoke task by task id (or list of ids)."""
    ids = _as_list(task_id)
    worker.revoked.add(ids)
    consumer = _consumer(worker)
    running = {job.task_id for job in consumer.jobs()[0]}
    backend = worker.app.backend
    for one in ids:
        if one in running:
            continue
        try:  # as Celery: a queued task shows REVOKED at once; never overwrite a result
            if backend.get_task_meta(one)["status"] in (states.PENDING, states.RECEIVED,
                                                        states.RETRY, states.REJECTED):
                backend.mark_as_revoked(one, "revoked")
        except NotImplementedError:
            break  # no result backend
        except Exception as exc:
            logger.warning("Failed to mark task %s as revoked in backend: %s", one, exc)
    if terminate:
        signum = _signum(signal)
        terminated = [one for one in ids if one in running and consumer.terminate(one, signum)]
        for one in terminated:
            logger.info("Terminating %s (%s)", one, signal_module.Signals(signum).name)
        if not terminated:
            return ok("terminate: tasks unknown")
        return ok(f"terminate: {', '.join(terminated)}")
    logger.info("Tasks flagged as revoked: %s", ", ".join(ids))
    return ok(f"tasks {set(ids)} flagged as revoked")


@command("control", variadic="task_id", args=[("signal", str)], signature="<signal> [id1 [id2 [... [idN]]]]")
def terminate(worker: Worker, signal: Any = None, task_id: Any = None, **kwargs: Any) -> Any:
    """Terminate task by task id (or list of ids)."""
    return revoke(worker, task_id, terminate=True, signal=signal)


@command("control", args=[("task_name", str), ("rate_limit", str)],
         signature="<task_name> <rate_limit (e.g., 5/s | 5/m | 5/h)>")
def rate_limit(worker: Worker, task_name: str = "", rate_limit: Any = None, **kwargs: Any) -> Any:
    """Tell worker(s) to modify the rate limit for a task by type."""
    try:
        parse_rate(rate_limit)
    except ValueError as exc:
        return nok(f"Invalid rate limit string: {exc!r}")
    task = worker.app.tasks.get(task_name)
    if task is None:
        logger.error("Rate limit attempt for unknown task %s", task_name)
        return nok("unknown task")
    task.rate_limit = rate_limit
    _consumer(worker).limits.reset(task_name)
    if not rate_limit:
        logger.info("Rate limits disabled for tasks of type %s", task_name)
        return ok("rate limit disabled successfully")
    logger.info("New rate limit for tasks of type %s: %s.", task_name, rate_limit)
    return ok("new rate limit set successfully")


@command("control", args=[("task_name", str), ("soft", float), ("hard", float)],
         signature="<task_name> <soft_secs> [hard_secs]")
def time_limit(worker: Worker, task_name: str = "", hard: float | None = None, soft: float | None = None,
               **kwargs: Any) -> Any:
    """Tell worker(s) to modify the time limit for task by type."""
    task = worker.app.tasks.get(task_name)
    if task is None:
        logger.error("Change time limit attempt for unknown task %s", task_name)
        return nok("unknown task")
    task.soft_time_limit = soft
    task.time_limit = hard
    logger.info("New time limits for tasks of type %s: soft=%s hard=%s", task_name, soft, hard)
    return ok("time limits set successfully")


@command("control")
def shutdown(worker: Worker, msg: str = "Got shutdown from remote", **kwargs: Any) -> Any:
    """Shutdown worker(s)."""
    logger.warning(msg)
    worker.stop()
    return ok("shutting down")


@command("control", args=[("n", int)], signature="[N=1]")
def pool_grow(worker: Worker, n: int = 1, **kwargs: Any) -> Any:
    """Grow pool by n processes/threads."""
    if _consumer(worker).autoscaler is not None:
        return nok("pool_grow is not supported with autoscale. Adjust autoscale range instead.")
    if not hasattr(worker.pool, "grow"):
        return nok(f"the {worker.pool_name} pool cannot grow")
    _consumer(worker).call_soon(lambda: _consumer(worker).resize_pool(int(n)))
    return ok("pool will grow")


@command("control", args=[("n", int)], signature="[N=1]")
def pool_shrink(worker: Worker, n: int = 1, **kwargs: Any) -> Any:
    """Shrink pool by n processes/threads."""
    if _consumer(worker).autoscaler is not None:
        return nok("pool_shrink is not supported with autoscale. Adjust autoscale range instead.")
    if not hasattr(worker.pool, "shrink"):
        return nok(f"the {worker.pool_name} pool cannot shrink")
    _consumer(worker).call_soon(lambda: _consumer(worker).resize_pool(-int(n)))
    return ok("pool will shrink")


@command("control", args=[("max", int), ("min", int)], signature="[max [min]]")
def autoscale(worker: Worker, max: int | None = None, min: int | None = None, **kwargs: Any) -> Any:  # noqa: A002
    """Modify autoscale settings."""
    autoscaler = _consumer(worker).autoscaler
    if autoscaler is None:
        raise ValueError("Autoscale not enabled")
    _consumer(worker).call_soon(lambda: None if autoscaler.update(max, min) else None)
    high = autoscaler.max_concurrency if max is None else max
    low = autoscaler.min_concurrency if min is None else min
    return ok(f"autoscale now max={high} min={low}")


@command("control")
def pool_restart(worker: Worker, **kwargs: Any) -> Any:
    """Restart execution pool."""
    raise ValueError("Pool restarts not enabled")


@command("control", args=[("queue", str), ("exchange", str), ("exchange_type", str), ("routing_key", str)],
         signature="<queue> [exchange [type [routing_key]]]")
def add_consumer(worker: Worker, queue: str = "", exchange: str | None = None,
                 exchange_type: str | None = None, routing_key: str | None = None, **options: Any) -> Any:
    """Tell worker(s) to consume from task queue by name."""
    known = worker.app.router.queues.get(queue)
    if known is None:
        options = {k: v for k, v in options.items() if k in ("durable", "exclusive", "auto_delete",
                                                             "queue_arguments", "expires", "message_ttl")}
        known = Queue(queue, Exchange(exchange or queue, exchange_type or "direct"), routing_key or queue,
                      **options)
    _consumer(worker).call_soon(lambda: _consumer(worker).add_queue(known))
    return ok(f"add consumer {queue}")


@command("control", args=[("queue", str)], signature="<queue>")
def cancel_consumer(worker: Worker, queue: str = "", **kwargs: Any) -> Any:
    """Tell worker(s) to stop consuming from task queue by name."""
    _consumer(worker).call_soon(lambda: _consumer(worker).cancel_queue(queue))
    return ok(f"no longer consuming from {queue}")


@command("control")
def enable_events(worker: Worker, **kwargs: Any) -> Any:
    """Tell worker(s) to send task-related events."""
    return _switch_task_events(worker, True)


@command("control")
def disable_events(worker: Worker, **kwargs: Any) -> Any:
    """Tell worker(s) to stop sending task-related events."""
    return _switch_task_events(worker, False)


def _switch_task_events(worker: Worker, on: bool) -> dict[str, Any]:
    if worker.events is None:
        return nok("event dispatcher unavailable")
    done = "enabled" if on else "disabled"
    if worker.events.task_events == on:
        return ok(f"task events already {done}")
    worker.events.task_events = on
    logger.info("Events of group {task} %s by remote.", done)
    return ok(f"task events {done}")


@command("control")
def heartbeat(worker: Worker, **kwargs: Any) -> Any:
    """Tell worker(s) to send event heartbeat immediately."""
    if worker.heart is not None:
        worker.heart.beat()
    return None


@command("control")
def election(worker: Worker, **kwargs: Any) -> Any:
    """Hold election."""
    return None
