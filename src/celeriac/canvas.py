"""The canvas: signatures, chain, group, chord, chunks, map and starmap.

A signature is a dict, exactly as Celery puts it on the wire (celery-wire.md 1.5):
``{"task", "args", "kwargs", "options", "subtask_type", "immutable"}``; chain, group and chord
are signatures of ``celery.chain``, ``celery.group`` and ``celery.chord``.

Sending a canvas takes two steps. `freeze()` gives each task its id in place, so results can
be handed out before anything runs and the ids travel in ``embed.chain``. `_gather()` turns
the canvas into plain messages ``(name, args, kwargs, options)``, which `apply_async`
publishes in one batch (`producer.send_batch`): a group of 10,000 is one round trip. A canvas
that is a *part* of a chord says so with Celery's three options ``group_id``,
``group_index`` and ``chord`` (the body); they go to its terminal tasks (a chain's last step,
a chord's body). What a worker does next (links, errbacks, chord joins) is in chords.py.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from . import _state
from .ids import uuid4, uuid4_many
from .producer import MemberCalls
from .result import AsyncResult, GroupResult, PendingResults

if TYPE_CHECKING:
    from .app import Celery

__all__ = [
    "Signature", "chain", "chord", "chunks", "group", "maybe_signature", "register_builtin_tasks",
    "signature", "subtask", "xmap", "xstarmap",
]

#: Options a call may not change once set: changing them would stall the chord they count for.
_IMMUTABLE_OPTIONS = frozenset({"group_id", "stamped_headers"})
#: Options saying where a canvas reports when it is a part of a chord.
_MEMBERSHIP = ("group_id", "group_index", "chord")

Message = tuple[str, Sequence[Any], dict[str, Any], dict[str, Any]] | MemberCalls


def _uuid() -> str:
    return uuid4()


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return [value] if isinstance(value, dict) else list(value)


def _given(options: dict[str, Any]) -> dict[str, Any]:
    # As in Celery, an option passed as None means "not given".
    return {k: v for k, v in options.items() if v is not None}


def _root(result: Any) -> Any:
    while result.parent is not None:
        result = result.parent
    return result


def _item(key: str, within: str | None = None) -> Any:
    """A property reading and writing `self[key]` (or `self[within][key]`)."""
    if within is None:
        return property(lambda self: self[key], lambda self, value: self.__setitem__(key, value))
    return property(lambda self: self[within].get(key),
                    lambda self, value: self[within].__setitem__(key, value))


class Signature(dict[str, Any]):
    """A task call to make later: `add.s(2, 2)`, `signature('tasks.add', args=(2, 2))`.

    Args:
        task: a task name, or a Task (its name is used).
        args: positional arguments; in a chain the parent's result is prepended.
        kwargs: keyword arguments.
        options: `apply_async` options (queue, countdown, link, ...).
        subtask_type: None for a task; "chain", "group" or "chord" for the canvas types.
        immutable: when true (`.si()`), the results of parents are not passed in.
        app: the app to send with (default: the current app).
    """

    #: Classes by `subtask_type`, to rebuild canvases from their dicts.
    TYPES: ClassVar[dict[str, type[Signature]]] = {}
    _app: Celery | None = None
    _type: Any = None

    def __init__(self, task: Any = None, args: Sequence[Any] | None = None,
                 kwargs: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
                 type: Any = None, subtask_type: str | None = None,  # noqa: A002 - Celery's name
                 immutable: bool = False, app: Celery | None = None, **ex: Any) -> None:
        self._app = app
        if isinstance(task, dict):
            super().__init__(task)
            self["options"] = dict(self.get("options") or {})  # set() must not write through
            for key, default in (("args", ()), ("kwargs", {}), ("subtask_type", None), ("immutable", False)):
                self.setdefault(key, default)
            return
        name = getattr(task, "name", task)
        if name is not task:
            self._type = task
        super().__init__(task=name, args=tuple(args or ()), kwargs=dict(kwargs or {}),
                         options={**(options or {}), **ex}, subtask_type=subtask_type,
                         immutable=immutable)

    @classmethod
    def of_task(cls, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any],
                app: Celery | None) -> Signature:
        """`Signature(name, args, kwargs, options, app=app)` without `__init__`'s checks and
        copies (`add.s(...)` makes one per member of a group): `args` a tuple, `kwargs` and
        `options` dicts of the caller's own."""
        sig = dict.__new__(cls)
        dict.__init__(sig, task=name, args=args, kwargs=kwargs, options=options, subtask_type=None, immutable=False)
        sig._app = app
        return sig

    @classmethod
    def from_dict(cls, d: dict[str, Any], app: Celery | None = None) -> Signature:
        """A signature of the right canvas class, from its dict."""
        target = Signature.TYPES.get(d.get("subtask_type") or "")
        return target.from_dict(d, app=app) if target is not None else Signature(d, app=app)

    task = _item("task")
    args = _item("args")
    kwargs = _item("kwargs")
    options = _item("options")
    subtask_type = _item("subtask_type")
    immutable = _item("immutable")
    id = _item("task_id", "options")
    name = task

    @property
    def parent_id(self) -> str | None:
        return self["options"].get("parent_id")

    @property
    def root_id(self) -> str | None:
        return self["options"].get("root_id")

    @property
    def app(self) -> Celery:
        return self._app or _state.get_current_app()

    @property
    def type(self) -> Any:
        """The Task this signature calls."""
        return self._type or self.app.tasks[self["task"]]

    def AsyncResult(self, task_id: str) -> AsyncResult[Any]:  # noqa: N802 - Celery's name
        return AsyncResult(task_id, app=self.app, task_name=self["task"])

    # -- building ----------------------------------------------------------------------------

    def _merge(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
               options: dict[str, Any] | None = None, force: bool = False,
               ) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
        """Partial args prepended, kwargs and options merged (an immutable one keeps its own)."""
        merged = self.options
        if options is not None:
            merged = {**merged, **{k: v for k, v in options.items()
                                   if k not in _IMMUTABLE_OPTIONS or k not in merged}}
        if self.immutable and not force:
            return tuple(self.args), self.kwargs, merged
        return (tuple(args or ()) + tuple(self.args),
                {**self.kwargs, **kwargs} if kwargs else self.kwargs, merged)

    def clone(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Signature:
        """A deep copy, with partial args prepended and kwargs/options merged."""
        args, kwargs, options = self._merge(args, kwargs, options or None)
        parts = copy.deepcopy({"kwargs": kwargs, "options": options})
        sig = Signature.from_dict({"task": self.task, "args": tuple(args), **parts,
                                   "subtask_type": self.subtask_type, "immutable": self.immutable},
                                  app=self._app)
        sig._type = self._type
        return sig

    partial = clone

    def replace(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
                options: dict[str, Any] | None = None) -> Signature:
        """A copy with args, kwargs or options replaced (those given)."""
        sig = self.clone()
        for key, value in (("args", args), ("kwargs", kwargs), ("options", options)):
            if value is not None:
                sig[key] = tuple(value) if key == "args" else value
        return sig

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Set options (`queue=`, `countdown=`, ...) in place; returns self, for chaining."""
        if immutable is not None:
            self.set_immutable(immutable)
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self.immutable = immutable

    def _append_option(self, key: str, sig: Any) -> Any:
        items = self.options.get(key)
        if not isinstance(items, list):
            items = self.options[key] = _as_list(items)
        if sig not in items:
            items.append(sig)
        return sig

    def link(self, callback: Signature) -> Signature:
        """Call `callback` with this task's result when it succeeds; returns the callback."""
        return self._append_option("link", callback)  # type: ignore[no-any-return]

    def link_error(self, errback: Signature) -> Any:
        """Call `errback` when this task fails; returns the errback."""
        return self._append_option("link_error", errback)

    def on_error(self, errback: Signature) -> Signature:
        """As `link_error`, but returns self: `add.s(2, 2).on_error(log.s()).delay()`."""
        self.link_error(errback)
        return self

    def flatten_links(self) -> list[Signature]:
        """This signature and, recursively, its callbacks."""
        links = [maybe_signature(link, app=self._app) for link in _as_list(self.options.get("link"))]
        return [self, *(sig for link in links for sig in link.flatten_links())]  # type: ignore[union-attr]

    def freeze(self, _id: str | None = None, group_id: str | None = None, chord: Any = None,
               root_id: str | None = None, parent_id: str | None = None,
               group_index: int | None = None) -> Any:
        """Fix the task id (and chord membership) now; return the result to come."""
        opts = self.options
        opts.setdefault("task_id", _id or _uuid())
        if root_id:
            opts["root_id"] = root_id
        if parent_id:
            opts["parent_id"] = parent_id
        opts.setdefault("reply_to", self.app.oid)
        if group_id and "group_id" not in opts:
            opts["group_id"] = group_id
        if chord:
            opts["chord"] = chord
        if group_index is not None:
            opts["group_index"] = group_index
        return self.AsyncResult(opts["task_id"])

    # -- calling -----------------------------------------------------------------------------

    def __call__(self, *partial_args: Any, **partial_kwargs: Any) -> Any:
        """Run the task here, now, without a message."""
        args, kwargs, _ = self._merge(partial_args, partial_kwargs, None)
        return self.type(*args, **kwargs)

    def delay(self, *partial_args: Any, **partial_kwargs: Any) -> Any:
        return self.apply_async(partial_args, partial_kwargs)

    def apply_async(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
                    route_name: str | None = None, **options: Any) -> Any:
        """Send it: `args` are prepended to the signature's own (unless it is immutable)."""
        args, kwargs, options = self._merge(args, kwargs, _given(options))
        task = self.app.tasks.get(self.task)
        if task is not None:
            return task.apply_async(args, kwargs, **options)
        return self.app.send_task(self.task, args, kwargs, **options)

    def apply(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Any:
        """Run it in this process; returns an EagerResult."""
        args, kwargs, options = self._merge(args, kwargs, _given(options))
        return self.type.apply(args, kwargs, **options)

    def _gather(self, args: Sequence[Any], kwargs: dict[str, Any], options: dict[str, Any],
                out: list[Message]) -> Any:
        """Add this canvas's messages to `out` (published later, in one batch); its result."""
        args, kwargs, _ = self._merge(args, kwargs, None)
        opts = _given({**self.options, **options})
        opts.setdefault("task_id", _uuid())
        out.append((self.task, args, kwargs, opts))
        return self.AsyncResult(opts["task_id"])

    def _send(self, args: Sequence[Any] | None, kwargs: dict[str, Any] | None,
              options: dict[str, Any]) -> Any:
        from .producer import send_batch

        out: list[Message] = []
        result = self._gather(args or (), kwargs or {}, _given(options), out)
        if out:
            send_batch(self.app, out)
        return result

    def __or__(self, other: Any) -> Any:
        """`a | b`: a chain (and a group followed by a task is a chord)."""
        return _fold([self, other]) if isinstance(other, Signature) else NotImplemented

    def __ior__(self, other: Any) -> Any:  # type: ignore[override, misc]
        # Not dict's in-place merge: `|=` builds a chain as `|` does.
        return self.__or__(other)

    def __invert__(self) -> Any:
        return self.apply_async().get()

    def __deepcopy__(self, memo: Any) -> Signature:
        sig = Signature.from_dict(copy.deepcopy(dict(self), memo), app=self._app)
        sig._type = self._type
        return sig

    def __reduce__(self) -> Any:
        return signature, (dict(self),)

    def __json__(self) -> dict[str, Any]:
        return dict(self)

    def reprcall(self, *args: Any, **kwargs: Any) -> str:
        args, kwargs, _ = self._merge(args, kwargs, {}, force=True)
        text = ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])
        return f"{self['task']}({text})"

    def __repr__(self) -> str:
        return self.reprcall()


# --- chain ------------------------------------------------------------------------------------


def _add_step(steps: list[Signature], other: Signature) -> Any:
    """Add `other` to a chain's steps by Celery's rules: return `steps`, or what the whole
    became when it is no longer a chain (a chain of nothing followed by a group is that group)."""
    if isinstance(other, group):
        if len(other.tasks) <= 1:
            return _add_step(steps, maybe_signature(other.tasks[0])) if other.tasks else steps  # type: ignore[arg-type]
        if not steps:
            return other.clone()
    elif isinstance(other, _chain):
        result: Any = steps
        for task in other.unchain_tasks():
            result = _add_step(steps, task) if result is steps else result | task
        return result
    elif steps and isinstance(steps[-1], group):
        steps[-1] = _chord(steps[-1], other.clone())  # group | task is a chord
        return steps
    if steps and isinstance(steps[-1], _chord) and not isinstance(other, _chord):
        last: Any = steps[-1].clone()
        last.body = last.body | other  # chord | x: x follows the body
        steps[-1] = last
    else:
        steps.append(other.clone())
    return steps


def _fold(tasks: Iterable[Any], app: Celery | None = None) -> Any:
    """`chain(a, b, c)`, the same as `a | b | c`, built in one pass."""
    steps: list[Signature] = []
    result: Any = steps
    for item in tasks:
        task: Any = maybe_signature(item, app=app)
        result = _add_step(steps, task) if result is steps else result | task
    return _chain(steps, app=app) if result is steps else result


def _freeze_steps(steps: list[Signature], last_id: str | None, root_id: str | None,
                  membership: dict[str, Any]) -> Any:
    """Freeze a chain's steps, each the parent of the next; the last one gets `last_id`
    and the chord membership."""
    previous = None
    for index, step in enumerate(steps):
        last = index == len(steps) - 1
        result = step.freeze(last_id if last else None, root_id=root_id, **(membership if last else {}))
        if previous is not None:
            _root(result).parent = previous
        previous = result
    return previous


class _chain(Signature):
    """Tasks run one after the other, each getting its parent's result first."""

    tasks = _item("tasks", "kwargs")

    @classmethod
    def from_dict(cls, d: dict[str, Any], app: Celery | None = None) -> Signature:
        return _chain(d["kwargs"]["tasks"] or (), app=app, **d["options"])

    def __init__(self, *tasks: Any, app: Celery | None = None, **options: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], dict) and isinstance(tasks[0], Iterable):
            tasks = tuple(tasks[0])
        sigs = [maybe_signature(t, app=app) for t in tasks]
        super().__init__("celery.chain", (), {"tasks": sigs}, options, subtask_type="chain", app=app)

    @property
    def app(self) -> Celery:
        return self._app or (self.tasks[0].app if self.tasks else _state.get_current_app())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs) if self.tasks else None

    def __or__(self, other: Any) -> Any:
        if not isinstance(other, Signature):
            return NotImplemented
        steps = list(self.tasks)
        result = _add_step(steps, other)
        return _chain(steps, app=self._app, **self.options) if result is steps else result

    def unchain_tasks(self) -> list[Signature]:
        """Copies of the tasks; the chain's link goes to the last, its link_error to all."""
        tasks = [t.clone() for t in self.tasks]
        for sig in _as_list(self.options.get("link")):
            tasks[-1].link(sig)
        for sig in _as_list(self.options.get("link_error")):
            for task in tasks:
                task.link_error(sig)
        return tasks

    def _steps(self) -> list[Signature]:
        """The steps as they run: nested chains spliced, `group, x` made a chord, and a chord
        whose body is a chain led by a task split into the chord with that task as body,
        then the rest (else every header message would carry the whole rest)."""
        pending = deque(self.unchain_tasks())
        steps: list[Signature] = []
        empty = None
        while pending:
            task = pending.popleft()
            if isinstance(task, _chain):
                pending.extendleft(reversed(task.unchain_tasks()))
            elif isinstance(task, group) and len(task.tasks) <= 1:
                if task.tasks:
                    pending.appendleft(maybe_signature(task.tasks[0], app=task._app))  # type: ignore[arg-type]
                else:
                    empty = task
            elif (isinstance(task, _chord) and isinstance(task.body, _chain) and task.body.tasks
                  and not isinstance(task.body.tasks[0], group)):
                rest = task.body.unchain_tasks()
                head: Any = task.clone()
                head.body = rest[0]
                pending.extendleft(reversed([head, *rest[1:]]))
            elif steps and isinstance(steps[-1], group):
                steps[-1] = _chord(steps[-1], task, app=self._app)
            else:
                steps.append(task)
        return steps or ([empty] if empty is not None else [])

    def freeze(self, _id: str | None = None, group_id: str | None = None, chord: Any = None,
               root_id: str | None = None, parent_id: str | None = None,
               group_index: int | None = None) -> Any:
        steps = self._steps()
        membership = {"group_id": group_id, "chord": chord, "group_index": group_index}
        result = _freeze_steps(steps, _id, root_id, membership)
        self.tasks = steps
        if result is not None:
            self.options["task_id"] = result.id
        return result

    def apply_async(self, args: Sequence[Any] | None = None,  # type: ignore[override]
                    kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        return self._send(args, kwargs, options)

    def _gather(self, args: Sequence[Any], kwargs: dict[str, Any], options: dict[str, Any],
                out: list[Message]) -> Any:
        opts = _given({**self.options, **options})
        steps = self._steps()
        if not steps:
            return None
        for sig in _as_list(opts.pop("link", None)):
            steps[-1].link(sig)
        for sig in _as_list(opts.pop("link_error", None)):
            for step in steps:
                step.link_error(sig)
        membership = {key: opts.pop(key, None) for key in _MEMBERSHIP}
        result = _freeze_steps(steps, opts.pop("task_id", None), opts.get("root_id"), membership)
        # embed.chain: the steps after the first, reversed, as a worker pops the next one from
        # the end; a chain sent from within an outer chain goes on with the outer rest.
        rest = list(opts.pop("chain", None) or []) + steps[:0:-1]
        steps[0]._gather(args, kwargs, {**opts, "chain": rest}, out)
        return result

    def apply(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Any:
        """Run the steps here, in order, each with its parent's result."""
        last: Any = None
        for step in self._steps():
            if last is None:
                result = step.apply(args, kwargs, **options)
            else:
                result = step.apply((last.get(),), **options)
            result.parent, last = last, result
        return last

    def __repr__(self) -> str:
        return " | ".join(repr(t) for t in self.tasks) if self.tasks else "<chain: empty>"


class chain(_chain):
    """`chain(a, b, c)`: run a, then b with a's result, then c with b's result.

    As in Celery, `chain(...)` of several tasks is built as `a | b | c`, so it may return a
    `_chain`, a group or a chord (a group followed by a task).
    """

    def __new__(cls, *tasks: Any, **options: Any) -> Any:
        if not options and tasks and (len(tasks) != 1 or isinstance(tasks[0], list | tuple)):
            return _fold(tasks[0] if len(tasks) == 1 else tasks)
        return super().__new__(cls)


# --- group ------------------------------------------------------------------------------------


def _members(sig: group, clone: bool = False) -> list[Signature]:
    """A group's tasks (copies if `clone`): nested groups flattened, empty chains dropped."""
    out: list[Signature] = []
    pending = deque(sig.tasks)
    while pending:
        task: Any = maybe_signature(pending.popleft(), app=sig._app)
        if isinstance(task, group):
            pending.extendleft(reversed(task.tasks))
        elif not (isinstance(task, _chain) and not task.tasks):
            out.append(task.clone() if clone else task)
    return out


class group(Signature):
    """Tasks run in parallel: `group(add.s(1, 1), add.s(2, 2))()` returns a GroupResult."""

    tasks = _item("tasks", "kwargs")

    @classmethod
    def from_dict(cls, d: dict[str, Any], app: Celery | None = None) -> Signature:
        return group(d["kwargs"]["tasks"], app=app, **d["options"])

    def __init__(self, *tasks: Any, app: Celery | None = None, **options: Any) -> None:
        if len(tasks) == 1:
            only = tasks[0]
            if isinstance(only, group):
                tasks = tuple(only.tasks)
            elif isinstance(only, Signature):
                tasks = (only.clone(),)
            elif not isinstance(only, dict):
                tasks = tuple(only)  # a list or a generator of signatures
        sigs = [maybe_signature(t, app=app) for t in tasks]
        super().__init__("celery.group", (), {"tasks": sigs}, options, subtask_type="group", app=app)

    @property
    def app(self) -> Celery:
        return self._app or (self.tasks[0].app if self.tasks else _state.get_current_app())

    def __len__(self) -> int:
        return len(self.tasks)

    def __call__(self, *partial_args: Any, **options: Any) -> Any:
        return self.apply_async(partial_args, **options)

    def __or__(self, other: Any) -> Any:
        if isinstance(other, group) and not other.tasks:
            return self
        return _chord(self, body=other, app=self._app) if isinstance(other, Signature) else NotImplemented

    def set_immutable(self, immutable: bool) -> None:
        for task in self.tasks:
            task.set_immutable(immutable)

    def link(self, sig: Signature) -> Signature:
        # Only the first task can call it, so it cannot be given the results: immutable.
        return self.tasks[0].link(sig.clone().set(immutable=True))

    def link_error(self, sig: Signature) -> Any:
        return tuple(task.link_error(sig.clone()) for task in self.tasks)

    def freeze(self, _id: str | None = None, group_id: str | None = None, chord: Any = None,
               root_id: str | None = None, parent_id: str | None = None,
               group_index: int | None = None) -> GroupResult:
        from .result import GroupResult

        opts = self.options
        gid = opts.setdefault("task_id", _id or _uuid())
        opts.update(_given({"group_id": group_id, "chord": chord, "group_index": group_index}))
        root_id = opts.setdefault("root_id", root_id)
        parent_id = opts.setdefault("parent_id", parent_id)
        self.tasks = _members(self, clone=True)
        return GroupResult(gid, [task.freeze(group_id=group_id, chord=chord, root_id=root_id,
                                             parent_id=parent_id, group_index=index)
                                 for index, task in enumerate(self.tasks)], app=self.app)

    def apply_async(self, args: Sequence[Any] | None = None,  # type: ignore[override]
                    kwargs: dict[str, Any] | None = None, add_to_parent: bool = True,
                    producer: Any = None, link: Any = None, link_error: Any = None,
                    **options: Any) -> Any:
        if link is not None:
            raise TypeError("Cannot add link to group: use a chord")
        if link_error is not None:
            raise TypeError("Cannot add link to group: do that on individual tasks")
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        return self._send(args, kwargs, options)

    def _gather(self, args: Sequence[Any], kwargs: dict[str, Any], options: dict[str, Any],
                out: list[Message]) -> Any:
        from .result import GroupResult

        opts = _given({**self.options, **options})
        rest = opts.pop("chain", None)
        if rest:  # tasks to run after a group (only a foreign client sends this): a chord
            opts.pop("task_id", None)
            body = _chain([maybe_signature(s, app=self._app) for s in reversed(rest)], app=self._app)
            return _chord(self, body, app=self._app)._gather(args, kwargs, opts, out)
        gid = opts.pop("task_id", None) or _uuid()
        membership = {key: opts.pop(key, None) for key in _MEMBERSHIP}
        group_app = self.app
        # The results: a plain member's task id and name, made an AsyncResult when first asked for.
        results: list[Any] = []
        names: list[str | None] = []
        current_app = None
        members = _members(self)
        ids = iter(uuid4_many(len(members)))  # one read of the random source for the plain members
        run: MemberCalls | None = None  # the plain members in a row that call one task
        for index, task in enumerate(members):
            if membership["chord"] is None and type(task) is Signature and not task["options"]:
                # A plain `t.s(...)` member: what Signature._gather does, without its copies.
                own, name = task["args"], task["task"]
                if task["immutable"]:
                    member_args, member_kwargs = tuple(own), task["kwargs"]
                else:
                    member_args = tuple(args) + tuple(own) if args else tuple(own)
                    member_kwargs = {**task["kwargs"], **kwargs} if kwargs else task["kwargs"]
                task_id = next(ids)
                if run is None or run.name != name or out[-1] is not run:
                    run = MemberCalls(name, {**opts, "group_id": gid}, [])
                    out.append(run)
                run.calls.append((task_id, member_args, member_kwargs, index))
                app = task._app or current_app or (current_app := _state.get_current_app())
                if app is group_app:
                    results.append(task_id)
                    names.append(name)
                else:
                    results.append(AsyncResult(task_id, app=app, task_name=name))
                    names.append(None)
                continue
            if membership["chord"] is not None:  # the group ends a part of an enclosing chord
                position = membership["group_index"]
                where = {**membership, "group_index": index if position is None else position}
            else:
                where = {"group_id": gid, "group_index": index}
            results.append(task._gather(args, kwargs, {**opts, **where}, out))
            names.append(None)
        return GroupResult(gid, PendingResults(group_app, results, names), app=group_app)

    def apply(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> GroupResult:
        from .result import GroupResult

        results = [task.apply(args, kwargs, **options) for task in _members(self)]
        return GroupResult(self.options.get("task_id") or _uuid(), results, app=self.app)

    def __repr__(self) -> str:
        return f"group({list(self.tasks)!r})" if self.tasks else "group(<empty>)"


# --- chord ------------------------------------------------------------------------------------


def _descend(sig: Any) -> int:
    """How many parts a header member reports to its chord (counted as Celery counts)."""
    sig = maybe_signature(sig)
    if isinstance(sig, group):
        return sum(_descend(task) for task in sig.tasks)
    if isinstance(sig, _chain):
        return next((size for size in map(_descend, reversed(sig.tasks)) if size), 0)
    if isinstance(sig, _chord):
        return _descend(sig.body)
    return 1


class _chord(Signature):
    """A header (tasks run in parallel) and a body called with the list of their results.

    `chord(header)(body)` or `chord(header, body)()`; the result is the body's, whose
    `parent` is the header's GroupResult.
    """

    tasks = _item("header", "kwargs")
    body = _item("body", "kwargs")

    @classmethod
    def from_dict(cls, d: dict[str, Any], app: Celery | None = None) -> Signature:
        extra = dict(d["kwargs"])
        header, body = extra.pop("header", None), extra.pop("body", None)
        return _chord(header, body, args=d.get("args"), kwargs=extra, app=app, **d["options"])

    def __init__(self, header: Any, body: Any = None, task: str = "celery.chord",
                 args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
                 app: Celery | None = None, **options: Any) -> None:
        if isinstance(header, dict) and not isinstance(header, Signature):
            header = Signature.from_dict(header, app=app)
        if isinstance(header, group | _chain):
            header = header.tasks  # as Celery: the header is kept as a list
        elif isinstance(header, Signature):
            header = [header]
        header = [maybe_signature(t, app=app) for t in header]
        super().__init__(task, args, {**(kwargs or {"kwargs": {}}), "header": header,
                                      "body": maybe_signature(body, app=app)},
                         options, subtask_type="chord", app=app)

    @property
    def app(self) -> Celery:
        for sig in (*self._header().tasks[:1], self.body):
            if self._app is None and sig is not None and sig._app is not None:
                return sig._app  # type: ignore[no-any-return]
        return super().app

    def _header(self) -> group:
        header = self.tasks
        return header if isinstance(header, group) else group(header, app=self._app)

    def __call__(self, body: Any = None, **options: Any) -> Any:
        return self.apply_async((), {"body": body} if body else {}, **options)

    def __or__(self, other: Any) -> Any:
        if isinstance(other, group) and len(other.tasks) == 1:
            other = maybe_signature(other.tasks[0], app=other._app)
        if isinstance(other, Signature) and not isinstance(other, group | _chain):
            sig: Any = self.clone()
            sig.body = sig.body | other
            return sig
        return super().__or__(other)

    def __length_hint__(self) -> int:
        return sum(_descend(task) for task in self._header().tasks)

    def link(self, callback: Signature) -> Signature:
        self.body.link(callback)
        return callback

    def link_error(self, errback: Signature) -> Any:
        if self.app.conf.task_allow_error_cb_on_chord_header:
            for task in self._header().tasks:
                task.link_error(errback.clone(immutable=True))
        return self.body.link_error(errback)

    def set_immutable(self, immutable: bool) -> None:
        for task in self._header().tasks:
            task.set_immutable(immutable)

    def freeze(self, _id: str | None = None, group_id: str | None = None, chord: Any = None,
               root_id: str | None = None, parent_id: str | None = None,
               group_index: int | None = None) -> Any:
        header = self.tasks = self._header()
        header.options.setdefault("task_id", self.options.get("task_id") or _uuid())
        header_result = header.freeze(parent_id=parent_id, root_id=root_id)
        self.options["task_id"] = header.options["task_id"]
        body_result = self.body.freeze(_id, root_id=root_id, chord=chord, group_id=group_id,
                                       group_index=group_index)
        _root(body_result).parent = header_result
        return body_result

    def apply_async(self, args: Sequence[Any] | None = None,  # type: ignore[override]
                    kwargs: dict[str, Any] | None = None, task_id: str | None = None,
                    **options: Any) -> Any:
        kwargs = dict(kwargs or {})
        sig: Any = self
        if kwargs.get("body") is not None:
            sig = self.clone()
            sig.body = maybe_signature(kwargs.pop("body"), app=self._app)
        if sig.body is None:
            raise ValueError("A chord needs a body: chord(header)(body) or chord(header, body)()")
        if self.app.conf.task_always_eager:
            return sig.apply(args, kwargs, **options)
        return sig._send(args, kwargs, {**options, "task_id": task_id})

    def _gather(self, args: Sequence[Any], kwargs: dict[str, Any], options: dict[str, Any],
                out: list[Message]) -> Any:
        from .result import GroupResult

        opts = _given({**self.options, **options})
        header = self._header()
        # The group id is the header's (frozen) id, else the chord's; the body keeps its own
        # (frozen) id, else takes the one asked for: as Celery does.
        gid = header.options.get("task_id") or self.options.get("task_id") or _uuid()
        body = self.body.clone()
        body_id = body.options.get("task_id") or opts.pop("task_id", None)
        opts.pop("task_id", None)
        args = tuple(self.args) if self.immutable else tuple(args or ()) + tuple(self.args)
        kwargs = {**self.kwargs.get("kwargs", {}), **kwargs}
        membership = {k: opts.pop(k) for k in _MEMBERSHIP if opts.get(k) is not None}
        for sig in _as_list(opts.pop("link", None)):
            body.link(sig)
        for sig in _as_list(opts.pop("link_error", None)):
            body.link_error(sig)
        if opts.get("chain"):  # the steps after this chord in a chain follow its body
            body.options["chain"] = list(opts.pop("chain"))
        opts.pop("chain", None)
        parent_id = opts.pop("parent_id", None)
        delay: dict[str, Any] = {k: opts.pop(k) for k in ("countdown", "eta") if k in opts}
        body.options.update(opts)
        body_result = body.freeze(body_id, root_id=opts.get("root_id"),
                                  **(membership or {"group_id": gid}))
        members = _members(header)
        results = []
        if members:
            # The size is stored before any header task is out, so none can finish first.
            self.app.backend.chord_init(gid, sum(_descend(task) for task in members))
            header_opts = {**opts, **delay, "parent_id": parent_id}
            for index, task in enumerate(members):
                where = {"group_id": gid, "group_index": index, "chord": body}
                results.append(task._gather(args, kwargs, {**header_opts, **where}, out))
        else:  # nothing would ever complete an empty header: call the body now
            body._gather(([],), {}, {}, out)
        _root(body_result).parent = GroupResult(gid, results, app=self.app)
        return body_result

    def apply(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
              propagate: bool = True, body: Any = None, **options: Any) -> Any:
        body = maybe_signature(body, app=self._app) if body is not None else self.body
        values = self._header().apply(args, kwargs).get(propagate=propagate)
        return body.apply((values,), **options)

    def __repr__(self) -> str:
        header = list(self._header().tasks)
        return f"%{self.body!r}({header!r})" if self.body is not None else f"<chord without body: {header!r}>"


chord = _chord


# --- chunks, map, starmap ---------------------------------------------------------------------


class _basemap(Signature):
    _task_name = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any], app: Celery | None = None) -> Signature:
        return cls(d["kwargs"]["task"], d["kwargs"]["it"], app=app, **d["options"])

    def __init__(self, task: Any, it: Iterable[Any], app: Celery | None = None, **options: Any) -> None:
        kwargs = {"task": maybe_signature(task, app=app), "it": list(it)}
        super().__init__(self._task_name, (), kwargs, options, immutable=True, app=app)


class xmap(_basemap):
    """`add.map(items)`: one `celery.map` task calling the task on each item, in turn."""

    _task_name = "celery.map"


class xstarmap(_basemap):
    """`add.starmap(items)`: one `celery.starmap` task calling `task(*item)` for each item."""

    _task_name = "celery.starmap"


class chunks(Signature):
    """`add.chunks(items, n)`: the items in chunks of n, each chunk a `celery.starmap` task."""

    @classmethod
    def from_dict(cls, d: dict[str, Any], app: Celery | None = None) -> Signature:
        kw = d["kwargs"]
        return cls(kw["task"], kw["it"], kw["n"], app=app, **d["options"])

    def __init__(self, task: Any, it: Iterable[Any], n: int, app: Celery | None = None,
                 **options: Any) -> None:
        kwargs = {"task": maybe_signature(task, app=app), "it": list(it), "n": n}
        super().__init__("celery.chunks", (), kwargs, options, immutable=True, app=app)

    def __call__(self, **options: Any) -> Any:  # type: ignore[override]
        return self.apply_async(**options)

    def group(self) -> group:
        """The group of `celery.starmap` tasks, one per chunk."""
        task, items, n = self.kwargs["task"], self.kwargs["it"], self.kwargs["n"]
        parts = [items[i:i + n] for i in range(0, len(items), n)]
        return group([xstarmap(task, part, app=self._app) for part in parts], app=self._app)

    def apply_async(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
                    route_name: str | None = None, **options: Any) -> Any:
        return self.group().apply_async(args, kwargs, **{**self.options, **options})

    def _gather(self, args: Sequence[Any], kwargs: dict[str, Any], options: dict[str, Any],
                out: list[Message]) -> Any:
        return self.group()._gather(args, kwargs, {**self.options, **options}, out)


# Dicts with these `subtask_type`s are rebuilt as these classes (map and chunks travel with a
# null subtask_type, as Celery's: a worker sends them on as celery.map/... task messages).
Signature.TYPES.update(chain=_chain, group=group, chord=_chord, chunks=chunks, xmap=xmap,
                       xstarmap=xstarmap)


# --- constructors and builtin tasks -----------------------------------------------------------


def signature(varies: Any, *args: Any, **kwargs: Any) -> Signature:
    """A signature: a copy of a signature, one rebuilt from its dict, or a new one."""
    if isinstance(varies, Signature):
        return varies.clone()
    if isinstance(varies, dict):
        return Signature.from_dict(varies, app=kwargs.get("app"))
    return Signature(varies, *args, **kwargs)


subtask = signature


def maybe_signature(d: Any, app: Celery | None = None, clone: bool = False) -> Signature | None:
    """`d` as a Signature (rebuilt from its dict if it is one), or None."""
    if d is None:
        return None
    if isinstance(d, Signature):
        if clone:
            d = d.clone()
    elif isinstance(d, dict):
        d = Signature.from_dict(d, app=app)
    if app is not None:
        d._app = app
    return d  # type: ignore[no-any-return]


def register_builtin_tasks(app: Celery) -> None:
    """Register the tasks Celery has in every app: celery.map, .starmap, .chunks, .chord,
    .backend_cleanup."""

    def xmap_task(task: Any, it: Any) -> list[Any]:
        target = signature(task, app=app).type
        return [target(item) for item in it]

    def xstarmap_task(task: Any, it: Any) -> list[Any]:
        target = signature(task, app=app).type
        return [target(*item) for item in it]

    def chunks_task(task: Any, it: Any, n: int) -> Any:
        return chunks(task, it, n, app=app).apply_async().as_tuple()

    def chord_task(header: Any, body: Any, partial_args: Any = (), interval: Any = None,
                   countdown: Any = 1, max_retries: Any = None, eager: bool = False,
                   **kwargs: Any) -> Any:
        return _chord(header, body, app=app).apply_async(partial_args, kwargs).id

    def backend_cleanup() -> int:
        """Celery's daily beat job: delete expired results (SQL, SQLite backends)."""
        return int(app.backend.cleanup())

    for name, fun in (("celery.map", xmap_task), ("celery.starmap", xstarmap_task),
                      ("celery.chunks", chunks_task), ("celery.chord", chord_task),
                      ("celery.backend_cleanup", backend_cleanup)):
        if name not in app.tasks:
            app.task(name=name)(fun)
