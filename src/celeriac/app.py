"""The app: settings, the task registry, lazy broker and backend, and send_task."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar, overload

from . import _state, signals
from .config import Settings, load_object, settings_from_envvar, settings_from_object
from .exceptions import NotRegistered
from .result import AsyncResult, GroupResult
from .task import Task

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("celeriac.app")

#: The file used for both broker and results when nothing is configured.
DEFAULT_SQLITE_URL = "sqlite:///celeriac.db"


class TaskRegistry(dict[str, Task]):
    """Tasks by name; a missing name raises NotRegistered."""

    def __missing__(self, key: str) -> Task:
        raise NotRegistered(key)


class Celery:
    """The application: create one per project and decorate tasks with `@app.task`.

    Args:
        main: the name of the main module; tasks defined in `__main__` are named after it.
        broker: the broker URL (`broker_url`). Default: an SQLite file when neither broker
            nor backend is configured, else Celery's behaviour.
        backend: the result backend URL (`result_backend`).
        include: modules to import when the worker starts.
        **settings: any setting, as `app.conf.update(**settings)`.
    """

    def __init__(
        self,
        main: str | None = None,
        broker: str | None = None,
        backend: str | None = None,
        include: Sequence[str] | None = None,
        *,
        set_as_current: bool = True,
        task_cls: type[Task] | str | None = None,
        config_source: Any = None,
        namespace: str | None = None,
        **settings: Any,
    ) -> None:
        self.main = main
        self.conf = Settings(namespace=namespace)
        self.tasks = TaskRegistry()
        self.namespace = namespace
        if isinstance(task_cls, str):
            task_cls = load_object(task_cls)  # type: ignore[assignment]
        self.task_cls: type[Task] = task_cls or Task  # type: ignore[assignment]
        if config_source is not None:
            self.config_from_object(config_source, namespace=namespace)
        if settings:
            self.conf.update(settings)
        if broker:
            self.conf.broker_url = broker
        if backend:
            self.conf.result_backend = backend
        if include:
            self.conf.include = list(include)
        self._lock = threading.RLock()
        self._broker: Any = None
        self._backend: Any = None
        self._router: Any = None
        self._autodiscover: list[tuple[Any, str]] = []
        self._finalized = False
        self._pid = _state.pid
        self._oid = str(uuid.uuid4())
        self._declared: set[str] = set()
        self._publish_retry: tuple[int, Any] | None = None  # (conf version, producer.publish_retry)
        self._events: Any = None  # producer.sent_events: this process's task-sent dispatcher
        self.on_after_configure = signals.Signal("on_after_configure")
        self.on_after_finalize = signals.Signal("on_after_finalize")
        self.on_configure = signals.Signal("on_configure")
        self._periodic_tasks: list[Any] = []
        if os.environ.get("DJANGO_SETTINGS_MODULE") and importlib.util.find_spec("django"):
            # Django projects: django.setup() before task modules load, DjangoTask by default.
            from .contrib.django.fixup import install as install_django_fixup

            install_django_fixup(self, custom_task_cls=task_cls is not None)
        if set_as_current:
            _state.set_current_app(self)
        from .canvas import register_builtin_tasks

        register_builtin_tasks(self)
        for factory in _state.shared_task_factories:
            factory(self)

    def __repr__(self) -> str:
        return f"<Celery {self.main or '__main__'} at {id(self):#x}>"

    # -- settings ----------------------------------------------------------------------

    def config_from_object(self, obj: Any, namespace: str | None = None, force: bool = False,
                           silent: bool = False) -> None:
        """Read settings from a module, a module name ('proj.celeryconfig'), a class or a dict."""
        try:
            source = load_object(obj)
        except ImportError:
            if silent:
                return
            raise
        self.conf.update(settings_from_object(source, namespace=namespace or self.namespace))
        self._reset_connections()

    def config_from_envvar(self, variable_name: str, silent: bool = False, force: bool = False) -> None:
        """Read settings from the module named by an environment variable."""
        self.conf.update(settings_from_envvar(variable_name, silent=silent))
        self._reset_connections()

    def _reset_connections(self) -> None:
        with self._lock:
            for thing in (self._broker, self._backend):
                if thing is not None:
                    thing.close()
            self._broker = self._backend = self._router = self._events = None
            self._declared = set()

    @property
    def broker_url(self) -> str:
        """The broker URL: the environment (CELERIAC_BROKER_URL or Celery's CELERY_BROKER_URL)
        wins over the settings, as in Celery; with nothing configured, the SQLite file."""
        url = _env("BROKER_URL") or self.conf.broker_url
        if not url:
            return DEFAULT_SQLITE_URL
        return str(url)

    @property
    def result_backend_url(self) -> str | None:
        url = _env("RESULT_BACKEND") or self.conf.result_backend
        if not url and not (_env("BROKER_URL") or self.conf.broker_url):
            return DEFAULT_SQLITE_URL
        return url

    # -- connections -------------------------------------------------------------------

    @property
    def oid(self) -> str:
        """This process's client id: the reply_to of its task messages (rpc:// replies there)."""
        self._check_fork()
        return self._oid

    def _check_fork(self) -> None:
        # Connections (SQLite handles, sockets) and the reply queue must not cross a fork.
        pid = _state.pid
        if pid != self._pid:
            self._pid = pid
            self._broker = self._backend = self._events = None
            self._oid = str(uuid.uuid4())
            self._declared = set()

    @property
    def broker(self) -> Any:
        """The broker (a celeriac.brokers.base.Broker), connected on first use."""
        self._check_fork()
        if self._broker is None:
            with self._lock:
                if self._broker is None:
                    from .brokers import broker_from_url

                    self._broker = broker_from_url(self.broker_url, self.conf)
        return self._broker

    @property
    def backend(self) -> Any:
        """The result backend (a celeriac.backends.base.Backend)."""
        self._check_fork()
        if self._backend is None:
            with self._lock:
                if self._backend is None:
                    from .backends import backend_from_url

                    self._backend = backend_from_url(self, self.result_backend_url)
        return self._backend

    @property
    def router(self) -> Any:
        router = self._router
        if router is None or router.conf_version != self.conf._version:  # built again after a change
            from .routing import Router

            router = self._router = Router(self.conf)
            router.conf_version = self.conf._version
        return router

    @property
    def control(self) -> Any:
        from .control import Control

        return Control(self)

    def close(self) -> None:
        """Close the broker and backend connections."""
        self._reset_connections()

    # -- tasks -------------------------------------------------------------------------

    @overload
    def task(self, fun: Callable[P, R]) -> Task[P, R]: ...
    @overload
    def task(self, *, bind: Literal[True], **options: Any) -> Callable[[Callable[Concatenate[Any, P], R]], Task[P, R]]: ...
    @overload
    def task(self, *, bind: Literal[False] = ..., **options: Any) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(self, *args: Any, **options: Any) -> Any:
        """Register a function as a task: `@app.task` or `@app.task(name=..., bind=True, ...)`."""
        if len(args) == 1 and callable(args[0]) and not options:
            return self._task_from_fun(args[0])
        if args:
            raise TypeError("app.task() takes only keyword options, or a function")

        def decorator(fun: Callable[..., Any]) -> Task:
            return self._task_from_fun(fun, **options)

        return decorator

    def gen_task_name(self, name: str, module: str) -> str:
        if module == "__main__" and self.main:
            module = self.main
        return f"{module}.{name}"

    def _task_from_fun(self, fun: Callable[..., Any], name: str | None = None,
                       base: type[Task] | None = None, bind: bool = False, **options: Any) -> Task:
        name = name or self.gen_task_name(fun.__name__, fun.__module__)
        if name in self.tasks and getattr(self.tasks[name], "__wrapped__", None) is fun:
            return self.tasks[name]
        base = base or self.task_cls
        attrs: dict[str, Any] = {
            "name": name,
            "run": fun if bind else staticmethod(fun),
            "__wrapped__": fun,
            "__doc__": fun.__doc__,
            "__module__": fun.__module__,
            "__qualname__": fun.__qualname__,
            "_bound_run": bind,
            **options,
        }
        task = type(fun.__name__, (base,), attrs)()
        task.bind(self)
        self.tasks[name] = task
        return task

    def register_task(self, task: Task | type[Task]) -> Task:
        """Register a Task class-based task (or instance)."""
        instance = task() if isinstance(task, type) else task
        if not getattr(instance, "name", None):
            cls = type(instance)
            instance.name = self.gen_task_name(cls.__name__, cls.__module__)
        instance.bind(self)
        self.tasks[instance.name] = instance
        return instance

    # -- task modules --------------------------------------------------------------------

    def autodiscover_tasks(self, packages: Iterable[str] | Callable[[], Iterable[str]] | None = None,
                           related_name: str = "tasks", force: bool = False) -> None:
        """Import `<package>.tasks` for each package when the app is finalized (or now, with force)."""
        self._autodiscover.append((packages, related_name))
        if force or self._finalized:
            self._import_autodiscovered()

    def _import_autodiscovered(self) -> None:
        pending, self._autodiscover = self._autodiscover, []
        for packages, related_name in pending:
            if callable(packages):
                packages = packages()
            if packages is None:
                packages = _django_installed_apps()
            for package in packages:
                module = f"{package}.{related_name}" if related_name else package
                try:
                    importlib.import_module(module)
                except ModuleNotFoundError as exc:
                    # A package without a tasks module is fine; a broken import inside it is not.
                    if exc.name not in (module, package):
                        raise

    def finalize(self) -> None:
        """Import the task modules (`include`, `imports`, autodiscovered packages)."""
        if self._finalized:
            return
        self._finalized = True
        self.on_after_configure.send(sender=self)
        for module in list(self.conf.imports or ()) + list(self.conf.include or ()):
            importlib.import_module(module)
        self._import_autodiscovered()
        signals.import_modules.send(sender=self)
        self.on_after_finalize.send(sender=self)

    def add_periodic_task(self, schedule: Any, sig: Any, args: Sequence[Any] = (),
                          kwargs: dict[str, Any] | None = None, name: str | None = None,
                          **options: Any) -> str:
        """Add an entry to `beat_schedule`, as Celery's `add_periodic_task` does."""
        from .canvas import Signature

        if isinstance(sig, Signature):
            sig = sig.clone(args, kwargs)
        else:
            sig = Signature(sig, args, kwargs or {}, options)
        key = name or repr(sig)
        entry = {"task": sig["task"], "schedule": schedule, "args": tuple(sig["args"]),
                 "kwargs": dict(sig["kwargs"]), "options": {**sig["options"], **options}}
        schedule_conf = dict(self.conf.beat_schedule or {})
        schedule_conf[key] = entry
        self.conf.beat_schedule = schedule_conf
        return key

    # -- sending -------------------------------------------------------------------------

    def send_task(self, name: str, args: Sequence[Any] | None = None,
                  kwargs: dict[str, Any] | None = None, **options: Any) -> AsyncResult[Any]:
        """Send a task by name: no need to import its code."""
        from .producer import send_task_message

        return send_task_message(self, name, args, kwargs, options, task=self.tasks.get(name))

    def AsyncResult(self, task_id: str, **kwargs: Any) -> AsyncResult[Any]:  # noqa: N802 - Celery's name
        return AsyncResult(task_id, app=self, **kwargs)

    @functools.cached_property
    def GroupResult(self) -> type[GroupResult]:  # noqa: N802 - Celery's name
        """GroupResult bound to this app: `app.GroupResult(id, results)`, `app.GroupResult.restore(id)`."""
        return GroupResult.bound_to(self)

    def now(self) -> datetime:
        return datetime.now(UTC)

    def signature(self, name: str, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None,
                  **options: Any) -> Any:
        from .canvas import Signature

        return Signature(name, args, kwargs, options, app=self)

    # -- running -------------------------------------------------------------------------

    def Worker(self, **options: Any) -> Any:  # noqa: N802 - Celery's name
        from .worker.worker import Worker

        return Worker(self, **options)

    def worker_main(self, argv: list[str] | None = None) -> None:
        from .cli import main

        main(["-A", "__app__", *(argv or ["worker"])], app=self)

    def start(self, argv: list[str] | None = None) -> None:
        from .cli import main

        main(argv, app=self)


def _env(name: str) -> str | None:
    return os.environ.get(f"CELERIAC_{name}") or os.environ.get(f"CELERY_{name}")


def _django_installed_apps() -> list[str]:
    try:
        from django.apps import apps  # type: ignore[import-not-found]
    except ImportError:
        return []
    return [config.name for config in apps.get_app_configs()]


#: Celery's second name for the app class.
Celeriac = Celery
