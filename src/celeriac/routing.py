"""Where a task goes: Celery's routing (task_queues, task_routes, defaults) as pure logic.

`Router` turns the settings into the known queues, and the options of one call into a broker
`Route` (queue, exchange, routing key) plus the remaining options. It does no I/O; the
producer publishes, and brokers declare the queues found in `Router.queues`.

The rules follow Celery 5.x (celery/app/routes.py and celery/app/amqp.py):

* Known queues come from `task_queues`, normalised like Celery's `Queues`: a queue without an
  exchange gets the default exchange, one without a routing key the default routing key,
  and `task_queue_max_priority` fills in `x-max-priority`.
* The options of a call (`apply_async(queue=...)`, and the task's own `queue`, `exchange`,
  `routing_key`, `priority` that the caller merged in) win key by key over the first route
  found in `task_routes`; with no queue and no exchange anywhere, the default queue is used.
* A direct exchange is published through the anonymous exchange `""` with the queue name as
  routing key (what Celery puts on the wire), unless both an exchange and a routing key were
  given. Topic, fanout and headers exchanges keep their exchange and routing key.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .brokers.base import Route
from .entities import Exchange, Queue
from .exceptions import ImproperlyConfigured, QueueNotFound

__all__ = ["MapRoute", "Router"]

_QUEUE_TYPES = ("classic", "quorum")


def _setting(conf: Mapping[str, Any], name: str, default: Any) -> Any:
    # A setting present but None means "the default", as in Celery's Settings.
    value = conf.get(name)
    return default if value is None else value


def _queue_arguments_for_type(queue_type: str, setting: str) -> dict[str, Any] | None:
    if queue_type not in _QUEUE_TYPES:
        raise ImproperlyConfigured(
            f"{setting}={queue_type!r}: valid queue types are {', '.join(_QUEUE_TYPES)}"
        )
    # A classic queue is declared with no x-queue-type at all, as Celery does: RabbitMQ
    # refuses to redeclare a queue whose arguments differ.
    return {"x-queue-type": queue_type} if queue_type != "classic" else None


def _as_route(value: Any, where: str) -> dict[str, Any]:
    """A route as a dict of options: a queue name or a Queue means `{"queue": value}`."""
    if isinstance(value, (str, Queue)):
        return {"queue": value}
    if isinstance(value, Mapping):
        return dict(value)
    raise ImproperlyConfigured(
        f"{where}: a route must be a queue name, a Queue or a dict of options, not {value!r}"
    )


class MapRoute:
    """A router made from a table of task names, globs and regular expressions.

    Keys are exact task names (`"proj.tasks.add"`), globs (any key holding `*`, e.g.
    `"proj.tasks.*"` or `"*.send_mail"`) or compiled patterns (`re.compile(...)`); values
    are a queue name, a `Queue`, or a dict of options such as `{"queue": "q", "priority": 5}`.
    An exact name is looked up first; then globs and patterns are tried in table order.

    Args:
        table: A mapping, or an iterable of `(key, value)` pairs.
    """

    def __init__(self, table: Mapping[Any, Any] | Iterable[tuple[Any, Any]]) -> None:
        items = table.items() if isinstance(table, Mapping) else table
        self.exact: dict[str, dict[str, Any]] = {}
        self.patterns: list[tuple[re.Pattern[str], dict[str, Any]]] = []
        for item in items:
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise ImproperlyConfigured(
                    f"task_routes: expected (task name or pattern, route) pairs, got {item!r}"
                )
            key, value = item
            route = _as_route(value, f"task_routes[{key!r}]")
            if isinstance(key, re.Pattern):
                self.patterns.append((key, route))
            elif isinstance(key, str) and "*" in key:
                self.patterns.append((re.compile(fnmatch.translate(key)), route))
            elif isinstance(key, str):
                self.exact[key] = route
            else:
                raise ImproperlyConfigured(
                    f"task_routes: a key must be a task name, a glob or a compiled regex, "
                    f"not {key!r}"
                )

    def __call__(self, name: str, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        """Return the route for task `name` (a fresh dict), or None when nothing matches."""
        route = self.exact.get(name)
        if route is None:
            route = next((r for pattern, r in self.patterns if pattern.match(name)), None)
        return None if route is None else dict(route)

    def __repr__(self) -> str:
        return (
            f"<MapRoute exact={list(self.exact)} patterns={[p.pattern for p, _ in self.patterns]}>"
        )


def _import_router(path: str) -> Any:
    """Import a router named `"pkg.mod:router"` or `"pkg.mod.router"`."""
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        router = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ImproperlyConfigured(f"task_routes: cannot import router {path!r}: {exc}") from exc
    if isinstance(router, type) and hasattr(router, "route_for_task"):
        # Celery's pre-4.0 router classes are named by class and used as an instance.
        router = router()
    if not (callable(router) or hasattr(router, "route_for_task")):
        raise ImproperlyConfigured(f"task_routes: {path!r} is not a router: {router!r}")
    return router


def _prepare_routes(task_routes: Any) -> list[Any]:
    """Expand `task_routes` into a list of routers (strings stay strings until first use)."""
    if task_routes is None:
        return []
    if not isinstance(task_routes, (list, tuple)):
        task_routes = [task_routes]
    routers: list[Any] = []
    for entry in task_routes:
        if isinstance(entry, (Mapping, list, tuple)):
            routers.append(MapRoute(entry))
        elif isinstance(entry, str):
            # Imported on first use, as Celery does: a router module often imports the app.
            routers.append(entry)
        elif callable(entry) or hasattr(entry, "route_for_task"):
            routers.append(entry)
        else:
            raise ImproperlyConfigured(
                f"task_routes: expected a dict, a list of pairs, a router function, an object "
                f"with route_for_task() or an import path, got {entry!r}"
            )
    return routers


class Router:
    """Celery's task routing, computed from settings.

    Args:
        conf: Settings with Celery's lowercase names. Read: `task_queues`, `task_routes`,
            `task_default_queue`, `task_default_exchange`, `task_default_exchange_type`,
            `task_default_routing_key`, `task_default_queue_type`,
            `task_create_missing_queues`, `task_create_missing_queue_type`,
            `task_create_missing_queue_exchange_type`, `task_queue_max_priority`,
            `task_default_priority`. Missing or None values take Celery's defaults.

    Attributes:
        queues: Every known queue by name: the configured ones (normalised like Celery's),
            plus the ones created on the fly since. The queue of a `Route` is
            `queues[route.queue]`: that is what a producer declares before publishing.
        default_queue_name: `task_default_queue`.
        default_exchange: The exchange given to queues that name none.
        default_routing_key: The routing key given to queues that have none.
    """

    def __init__(self, conf: Mapping[str, Any]) -> None:
        self.default_queue_name: str = _setting(conf, "task_default_queue", "celery")
        self.default_exchange = Exchange(
            _setting(conf, "task_default_exchange", "") or self.default_queue_name,
            _setting(conf, "task_default_exchange_type", "direct"),
        )
        self.default_routing_key: str = (
            _setting(conf, "task_default_routing_key", "") or self.default_queue_name
        )
        self.create_missing: bool = bool(_setting(conf, "task_create_missing_queues", True))
        self.conf_version = -1  # the settings' version it was built from (`Celery.router`)
        self.max_priority: int | None = conf.get("task_queue_max_priority")
        self.default_priority: int | None = conf.get("task_default_priority")
        self._missing_queue_arguments = _queue_arguments_for_type(
            _setting(conf, "task_create_missing_queue_type", "classic"),
            "task_create_missing_queue_type",
        )
        self._missing_exchange_type: str = _setting(
            conf, "task_create_missing_queue_exchange_type", "direct"
        )

        self.queues: dict[str, Queue] = {}
        self._aliases: dict[str, Queue] = {}
        for queue in self._configured_queues(conf):
            self._add(queue)
        # What a worker consumes without -Q: the configured queues, not the ones created
        # later while routing.
        self._default_selection = list(self.queues.values())
        self._routers = _prepare_routes(conf.get("task_routes"))

    # -- queues --------------------------------------------------------------------------

    def _configured_queues(self, conf: Mapping[str, Any]) -> list[Queue]:
        task_queues = conf.get("task_queues")
        if not task_queues:
            arguments = _queue_arguments_for_type(
                _setting(conf, "task_default_queue_type", "classic"), "task_default_queue_type"
            )
            return [
                Queue(
                    self.default_queue_name,
                    self.default_exchange,
                    self.default_routing_key,
                    queue_arguments=arguments,
                )
            ]
        if isinstance(task_queues, Mapping):
            queues = []
            for name, options in task_queues.items():
                if isinstance(options, Queue):
                    queues.append(options)
                    continue
                options = dict(options or {})
                # Celery's dict form binds a queue with no key by its own name.
                if options.get("routing_key") is None and options.get("binding_key") is None:
                    options["routing_key"] = name
                try:
                    queues.append(Queue.from_dict(name, **options))
                except TypeError as exc:
                    raise ImproperlyConfigured(f"task_queues[{name!r}]: {exc}") from exc
            return queues
        if isinstance(task_queues, Queue):
            return [task_queues]
        for queue in task_queues:
            if not isinstance(queue, Queue):
                raise ImproperlyConfigured(
                    f"task_queues must hold celeriac Queue objects "
                    f"(from celeriac import Queue), got {queue!r}"
                )
        return list(task_queues)

    def _add(self, queue: Queue) -> Queue:
        # A copy: the user's Queue objects in task_queues stay as they wrote them.
        queue = copy.copy(queue)
        if queue.exchange is None or not queue.exchange.name:
            queue.exchange = self.default_exchange
        if not queue.routing_key:
            queue.routing_key = self.default_routing_key
        if self.max_priority is not None and "x-max-priority" not in queue.queue_arguments:
            queue.max_priority = int(self.max_priority)
            queue.queue_arguments = {**queue.queue_arguments, "x-max-priority": queue.max_priority}
        self.queues[queue.name] = queue
        if queue.alias:
            self._aliases[queue.alias] = queue
        return queue

    def get_queue(self, name: str) -> Queue:
        """Return the queue called (or aliased) `name`, creating it if missing and allowed.

        A missing queue is created like Celery does: bound to a direct exchange of the same
        name with its name as routing key (`task_create_missing_queue_exchange_type` and
        `task_create_missing_queue_type` can change the exchange and queue types).

        Raises:
            QueueNotFound: `name` is unknown and `task_create_missing_queues` is off.
        """
        queue = self._aliases.get(name) or self.queues.get(name)
        if queue is not None:
            return queue
        if not self.create_missing:
            raise QueueNotFound(
                f"Queue {name!r} missing from task_queues "
                f"(task_create_missing_queues is off; known queues: {sorted(self.queues)})"
            )
        return self._add(
            Queue(
                name,
                Exchange(name, self._missing_exchange_type),
                name,
                queue_arguments=self._missing_queue_arguments,
            )
        )

    def select_queues(self, names: Iterable[str] | str | None = None) -> list[Queue]:
        """Return the queues a worker consumes from, as `celery worker -Q a,b` selects them.

        Args:
            names: Queue names or aliases (a comma-separated string works too). None or
                empty selects the configured queues (what a worker uses without -Q).

        Raises:
            QueueNotFound: a name is unknown and `task_create_missing_queues` is off.
        """
        if isinstance(names, str):
            names = names.split(",")
        wanted = [name.strip() for name in names or () if name.strip()]
        if not wanted:
            return list(self._default_selection)
        selected: dict[str, Queue] = {}
        for name in wanted:
            queue = self.get_queue(name)
            selected.setdefault(queue.name, queue)
        return list(selected.values())

    # -- routes --------------------------------------------------------------------------

    def routes_by_name_only(self) -> bool:
        """Whether routes depend on the task name and options alone (no router functions,
        which may look at the arguments): then tasks of one name share a route."""
        return all(isinstance(router, MapRoute) for router in self._routers)

    def route(
        self,
        task_name: str,
        args: tuple[Any, ...] | list[Any],
        kwargs: Mapping[str, Any],
        options: Mapping[str, Any],
        task: object | None = None,
    ) -> tuple[Route, dict[str, Any]]:
        """Decide where a task message goes.

        Args:
            task_name: The registered task name (or the `route_name` Celery would use).
            args: The task's positional arguments (routers may look at them).
            kwargs: The task's keyword arguments.
            options: The call's options (`apply_async(...)` keywords), with the task's own
                defaults (`queue`, `exchange`, `routing_key`, `priority`, ...) already merged
                in by the caller. `queue` may be a name or a `Queue`; `exchange` a name or an
                `Exchange`. None values count as not given.
            task: The task object, handed to router functions as `task=`.

        Returns:
            The broker `Route`, and the options merged with the matching route's (the
            call's win key by key), without the destination keys (`queue`, `exchange`,
            `routing_key`, `exchange_type`), with `priority` resolved (the call's, else the
            route's, else `task_default_priority`; may be None) and `delivery_mode` taken
            from the queue's exchange when the call gives none.

        Raises:
            QueueNotFound: the chosen queue is unknown and may not be created.
            ImproperlyConfigured: a router is malformed or returned something unusable.
        """
        given = {key: value for key, value in options.items() if value is not None}
        found = self._lookup(task_name, args, kwargs, dict(options), task)
        merged = {**(found or {}), **given}

        queue_value = merged.pop("queue", None)
        if isinstance(queue_value, Queue):
            queue: Queue | None = queue_value
            # A Queue given in the call is a declaration too: keep it where the producer
            # (and a worker's -Q) look queues up, unless the name is already known.
            self.queues.setdefault(queue_value.name, queue_value)
        else:
            queue = self.get_queue(queue_value) if queue_value else None
        route, queue = self._destination(
            queue,
            merged.pop("exchange", None),
            merged.pop("routing_key", None),
            merged.pop("exchange_type", None),
        )

        if merged.get("priority") is None:
            merged["priority"] = self.default_priority
        queue_exchange = queue.exchange if queue is not None else None
        if merged.get("delivery_mode") is None and queue_exchange is not None:
            if queue_exchange.delivery_mode is not None:
                merged["delivery_mode"] = queue_exchange.delivery_mode
        return route, merged

    def _destination(
        self,
        queue: Queue | None,
        exchange: Exchange | str | None,
        routing_key: str | None,
        exchange_type: str | None,
    ) -> tuple[Route, Queue | None]:
        """The Route for what the options named, as Celery's send_task_message decides it.

        Also returns the queue the route was resolved to (None when only an exchange was
        given).
        """
        exchange_name = exchange.name if isinstance(exchange, Exchange) else (exchange or "")
        if queue is None and not exchange_name:
            queue = self.get_queue(self.default_queue_name)
        if exchange_type is None:
            if isinstance(exchange, Exchange):
                exchange_type = exchange.type
            elif queue is not None and queue.exchange is not None:
                exchange_type = queue.exchange.type
            else:
                exchange_type = "direct"

        if exchange_type == "direct" and not (exchange_name and routing_key):
            # Celery sends to a direct exchange's queue straight through the anonymous
            # exchange (celery-wire.md 2.3); a lone exchange name falls back to the default
            # queue the same way.
            if queue is None:
                queue = self.get_queue(self.default_queue_name)
            return Route(queue=queue.name, exchange="", routing_key=queue.name), queue

        if not exchange_name:
            assert queue is not None  # no queue and no exchange took the default queue above
            exchange_name = (
                queue.exchange.name if queue.exchange is not None else ""
            ) or self.default_exchange.name
            routing_key = routing_key or queue.routing_key or self.default_routing_key
        route = Route(
            queue=queue.name if queue is not None else "",
            exchange=exchange_name,
            routing_key=routing_key or "",
            exchange_type=exchange_type,
        )
        return route, queue

    def _lookup(
        self,
        task_name: str,
        args: Any,
        kwargs: Any,
        options: dict[str, Any],
        task: object | None,
    ) -> dict[str, Any] | None:
        """The first route `task_routes` gives for this task, or None."""
        for index, router in enumerate(self._routers):
            if isinstance(router, str):
                router = self._routers[index] = _import_router(router)
            if hasattr(router, "route_for_task"):
                # Celery's pre-4.0 router interface: (task name, args, kwargs).
                found = router.route_for_task(task_name, args, kwargs)
            else:
                found = router(task_name, args, kwargs, options, task=task)
            if found is not None:
                # The first router that answers decides, even with an empty answer
                # (then the default queue is used), as in Celery.
                return _as_route(found, f"router {router!r}") if found else None
        return None
