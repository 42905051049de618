"""Signatures: a task call to make later, a dict on the wire exactly as Celery's.

(The full canvas — chain, group, chord, chunks, map — builds on this; see the canvas issue.)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import _state

if TYPE_CHECKING:
    from .app import Celery
    from .result import AsyncResult


class Signature(dict[str, Any]):
    """`Signature('tasks.add', args=(2,), kwargs={}, options={})`: a dict with task/args/kwargs/options."""

    def __init__(self, task: Any = None, args: Sequence[Any] | None = None,
                 kwargs: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
                 subtask_type: str | None = None, immutable: bool = False,
                 app: Celery | None = None, **extra: Any) -> None:
        if isinstance(task, dict):
            super().__init__(copy.deepcopy(dict(task)))
            self.setdefault("args", [])
            self.setdefault("kwargs", {})
            self.setdefault("options", {})
            self.setdefault("subtask_type", None)
            self.setdefault("immutable", False)
        else:
            name = task if isinstance(task, str) else getattr(task, "name", task)
            super().__init__(task=name, args=list(args or ()), kwargs=dict(kwargs or {}),
                             options={**(options or {}), **extra}, subtask_type=subtask_type,
                             immutable=immutable)
        self._app = app

    @property
    def app(self) -> Celery:
        return self._app or _state.get_current_app()

    @property
    def task(self) -> str:
        return self["task"]

    @property
    def args(self) -> list[Any]:
        return self["args"]

    @property
    def kwargs(self) -> dict[str, Any]:
        return self["kwargs"]

    @property
    def options(self) -> dict[str, Any]:
        return self["options"]

    @property
    def immutable(self) -> bool:
        return bool(self.get("immutable"))

    @property
    def id(self) -> str | None:
        return self["options"].get("task_id")

    def clone(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Signature:
        sig = Signature(dict(self), app=self._app)
        if args:
            sig["args"] = list(args) + list(sig["args"]) if not sig.immutable else sig["args"]
        if kwargs:
            sig["kwargs"] = {**sig["kwargs"], **kwargs} if not sig.immutable else sig["kwargs"]
        sig["options"].update(options)
        return sig

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        if immutable is not None:
            self["immutable"] = immutable
        self["options"].update(options)
        return self

    def link(self, callback: Signature) -> Signature:
        self["options"].setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        self["options"].setdefault("link_error", []).append(errback)
        return errback

    def on_error(self, errback: Signature) -> Signature:
        self.link_error(errback)
        return self

    def apply_async(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
                    **options: Any) -> AsyncResult[Any]:
        """Send the task; `args` are prepended to the signature's own unless immutable."""
        if self.immutable:
            args, kwargs = (), {}
        call_args = list(args or ()) + list(self["args"])
        call_kwargs = {**self["kwargs"], **(kwargs or {})}
        opts = {**self["options"], **options}
        task = self.app.tasks.get(self["task"])
        if task is not None:
            return task.apply_async(call_args, call_kwargs, **opts)
        return self.app.send_task(self["task"], call_args, call_kwargs, **opts)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult[Any]:
        return self.apply_async(args, kwargs)

    def apply(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Any:
        if self.immutable:
            args, kwargs = (), {}
        task = self.app.tasks[self["task"]]
        return task.apply(list(args or ()) + list(self["args"]), {**self["kwargs"], **(kwargs or {})},
                          **{**self["options"], **options})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        task = self.app.tasks[self["task"]]
        return task(*(list(args) + list(self["args"])), **{**self["kwargs"], **kwargs})

    def __repr__(self) -> str:
        args = ", ".join([repr(a) for a in self["args"]] + [f"{k}={v!r}" for k, v in self["kwargs"].items()])
        return f"{self['task']}({args}){'!' if self.immutable else ''}"

    def __deepcopy__(self, memo: Any) -> Signature:
        return Signature(copy.deepcopy(dict(self), memo), app=self._app)

    def __reduce__(self) -> Any:
        return (Signature, (dict(self),))


signature = Signature
subtask = Signature


def maybe_signature(value: Any, app: Celery | None = None) -> Signature | None:
    if value is None:
        return None
    if isinstance(value, Signature):
        return value
    return Signature(value, app=app)
