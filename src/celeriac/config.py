"""Settings with Celery's names and defaults: `app.conf`, and reading them from a module.

`DEFAULTS` holds every Celery 5 setting. `Settings` layers the user's values over it and also
accepts the pre-4.0 UPPERCASE names (`OLD_NAMES`) and Django's 'CELERY_'-prefixed form.
`settings_from_object` and `settings_from_envvar` read a configuration module (or class,
object, dict) into a plain dict of new names, as `app.config_from_object` needs.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import inspect
import logging
import os
import pprint
import re
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from types import ModuleType
from typing import Any

from .defaults import DEFAULTS, OLD_NAMES
from .exceptions import ImproperlyConfigured
from .urls import mask_url

__all__ = [
    "DEFAULTS",
    "OLD_NAMES",
    "Settings",
    "load_object",
    "settings_from_envvar",
    "settings_from_object",
]

logger = logging.getLogger("celeriac.config")

_NEW_TO_OLD = {new: old for old, new in OLD_NAMES.items()}

# Settings whose None means "use that other setting", as Celery's `app.conf` attributes do.
_FALLBACKS = {
    "broker_read_url": "broker_url",
    "broker_write_url": "broker_url",
    "task_default_exchange": "task_default_queue",
    "task_default_routing_key": "task_default_queue",
}

# humanize() hides the values of keys like these. 'routing_key' names no secret.
_SECRET_KEY = re.compile(r"PASS|SECRET|TOKEN|(?<!ROUTING_)KEY", re.IGNORECASE)
_MASK = "********"


def _did_you_mean(name: str) -> str | None:
    """Name the known setting an unknown `name` is probably a typo of, or None."""
    if name.islower():
        match = difflib.get_close_matches(name, DEFAULTS, n=1, cutoff=0.8)
        return repr(match[0]) if match else None
    # UPPERCASE: only names that look like old Celery settings, not the user's own constants.
    if name.startswith("CELERY_") and name[7:].lower() in DEFAULTS:
        # A Django-style name read without namespace='CELERY', or CELERY_ENABLE_UTC.
        return repr(name[7:].lower())
    if name.isupper() and name.startswith(("CELERY", "BROKER")):
        match = difflib.get_close_matches(name, OLD_NAMES, n=1, cutoff=0.8)
        return f"{match[0]!r} ({OLD_NAMES[match[0]]})" if match else None
    return None


def _namespace_prefix(namespace: str) -> str:
    return namespace.rstrip("_") + "_"


class Settings(MutableMapping[str, Any]):
    """The app's configuration (`app.conf`): the user's settings over Celery's defaults.

    Read and write settings as items or attributes (`conf['broker_url']`, `conf.broker_url`).
    Old UPPERCASE names are accepted for both and stand for the new name (`conf.BROKER_URL`
    is `conf.broker_url`); with a namespace, so is the prefixed form (`CELERY_BROKER_URL`).
    Unknown names are kept as they are (apps keep their own values here), with a warning
    when one looks like a typo of a known setting.

    Args:
        changes: Initial settings, as for `update`.
        namespace: Django-style prefix, e.g. 'CELERY', also accepted in front of names.
    """

    def __init__(
        self, changes: Mapping[str, Any] | None = None, *, namespace: str | None = None
    ) -> None:
        # Names read as attributes are kept in the instance __dict__ (see __getattr__), so
        # the next `conf.name` is a plain attribute read; any change drops them all.
        self._cached: list[str] = []
        #: Counts changes: a cache of values derived from the settings keeps it to see one.
        self._version = 0
        self._changes: dict[str, Any] = {}
        # Each Settings gets its own copy: a default dict (beat_schedule...) may be mutated.
        self._defaults: dict[str, Any] = copy.deepcopy(DEFAULTS)
        self._namespace = namespace
        if changes:
            self.update(changes)

    @property
    def namespace(self) -> str | None:
        """The Django-style prefix accepted in front of names, e.g. 'CELERY', or None."""
        return self._namespace

    @namespace.setter
    def namespace(self, value: str | None) -> None:
        self._forget_cached()
        self._namespace = value

    def _forget_cached(self) -> None:
        self._version += 1
        attrs = self.__dict__
        for name in self._cached:
            attrs.pop(name, None)
        self._cached.clear()

    @property
    def changes(self) -> dict[str, Any]:
        """The settings the user set (new names), without the defaults."""
        return dict(self._changes)

    def _key(self, key: str) -> str:
        """The stored name for `key`: the new name of an old or namespaced setting."""
        if self._namespace:
            prefix = _namespace_prefix(self._namespace)
            if key.startswith(prefix) and len(key) > len(prefix):
                rest = key[len(prefix) :].lower()
                if rest in DEFAULTS:
                    return rest
                return OLD_NAMES.get(key.upper(), rest)
        return OLD_NAMES.get(key, key)

    # -- mapping protocol --------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        name = self._key(key)
        if name in self._changes:
            value = self._changes[name]
        elif name in self._defaults:
            value = self._defaults[name]
        else:
            raise KeyError(key)
        if value is None and name in _FALLBACKS:
            return self[_FALLBACKS[name]]
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        name = self._key(key)
        if name not in self._defaults:
            self._warn_if_typo(key, name)
        self._forget_cached()
        self._changes[name] = value

    def __delitem__(self, key: str) -> None:
        # Like Celery: removes the user's value, so the default shows again.
        self._forget_cached()
        del self._changes[self._key(key)]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        name = self._key(key)
        return name in self._changes or name in self._defaults

    def __iter__(self) -> Iterator[str]:
        yield from self._defaults
        yield from (name for name in self._changes if name not in self._defaults)

    def __len__(self) -> int:
        return len(self._defaults) + sum(1 for n in self._changes if n not in self._defaults)

    def update(  # type: ignore[override]
        self, mapping: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None, /, **kwargs: Any
    ) -> None:
        """Set many settings at once, from a mapping, (key, value) pairs and/or keywords."""
        if mapping is not None:
            items = mapping.items() if isinstance(mapping, Mapping) else mapping
            for key, value in items:
                self[key] = value
        for key, value in kwargs.items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        """Set `key` to `default` unless it has a value (a default value counts), return it."""
        if key in self:
            return self[key]
        self[key] = default
        return default

    def copy(self) -> Settings:
        """A copy whose changes can be altered without touching this one."""
        copied = Settings(namespace=self._namespace)
        copied._changes = dict(self._changes)
        copied._defaults = copy.deepcopy(self._defaults)
        return copied

    __copy__ = copy

    # -- attribute access --------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails; private names must not recurse into
        # __getitem__ (e.g. while unpickling, before _changes exists).
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            value = self[name]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}"
            ) from None
        # Cached for the next read (the hot path reads several settings per message);
        # __setitem__/__delitem__ drop the cache, so a later conf.update() is seen.
        self.__dict__[name] = value
        self._cached.append(name)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or hasattr(type(self), name):
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    def __delattr__(self, name: str) -> None:
        if name.startswith("_") or hasattr(type(self), name):
            object.__delattr__(self, name)
            return
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __dir__(self) -> Iterable[str]:
        return [*super().__dir__(), *self]

    def __repr__(self) -> str:
        # Values are left out on purpose: they hold passwords.
        return f"<Settings: {len(self._changes)} changed, namespace={self._namespace!r}>"

    # -- display -----------------------------------------------------------------------

    def table(self, with_defaults: bool = False, censored: bool = True) -> dict[str, Any]:
        """The settings as a dict, passwords and secrets hidden unless `censored` is False.

        Args:
            with_defaults: Include every setting, not only the ones the user changed.
            censored: Mask passwords in URLs and the values of secret-looking keys.
        """
        settings = dict(self.items()) if with_defaults else self.changes
        if not censored:
            return settings
        return {key: _censor(key, value) for key, value in settings.items()}

    def humanize(
        self, with_defaults: bool = False, censored: bool = True, *, mask: bool | None = None
    ) -> str:
        """Show the changed settings as 'key: value' lines, secrets hidden.

        Args:
            with_defaults: Include every setting, not only the ones the user changed.
            censored: Mask passwords in URLs (via `urls.mask_url`) and the values of keys
                containing PASSWORD, SECRET, KEY or TOKEN. Celery's name for `mask`.
            mask: Same as `censored`; wins when given.
        """
        if mask is not None:
            censored = mask
        table = self.table(with_defaults=with_defaults, censored=censored)
        return "\n".join(
            f"{key}: {pprint.pformat(value, width=80)}" for key, value in table.items()
        )

    def _warn_if_typo(self, key: str, name: str) -> None:
        suggestion = _did_you_mean(name)
        if suggestion is None:
            return
        message = f"Unknown setting {key!r}: did you mean {suggestion}?"
        logger.warning(message)
        # stacklevel 4: warn <- _warn_if_typo <- __setitem__ <- the user's assignment.
        warnings.warn(message, UserWarning, stacklevel=4)


def _censor(key: Any, value: Any) -> Any:
    if isinstance(key, str) and _SECRET_KEY.search(key):
        return _MASK
    if isinstance(value, Mapping):
        return {k: _censor(k, v) for k, v in value.items()}
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    return value


# -- loading configuration ----------------------------------------------------------------


def load_object(spec: str | object) -> object:
    """Import the object a string names, or return a non-string as it is.

    Args:
        spec: 'pkg.mod' (a module), 'pkg.mod:attr' or 'pkg.mod.attr' (an attribute; the
            dotted form is tried as a module first). A name not found on `sys.path` is
            also looked for in the current directory, as Celery does for 'celeryconfig'.

    Returns:
        The module or attribute.

    Raises:
        ImportError: The module cannot be imported or has no such attribute.
    """
    if not isinstance(spec, str):
        return spec
    module_name, sep, attr = spec.partition(":")
    if sep:
        return _get_attr(_import(module_name), attr, spec)
    try:
        return _import(spec)
    except ModuleNotFoundError as exc:
        # 'pkg.mod.attr': only when it is `spec` itself that is missing, not something the
        # module imports.
        if "." not in spec or exc.name != spec:
            raise
    module_name, _, attr = spec.rpartition(".")
    return _get_attr(_import(module_name), attr, spec)


def _import(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        cwd = os.getcwd()
        top = module_name.partition(".")[0]
        if exc.name != top or cwd in sys.path or "" in sys.path:
            raise
    # Console scripts do not put the current directory on sys.path; Celery looks there.
    sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    finally:
        sys.path.remove(cwd)


def _get_attr(obj: object, path: str, spec: str) -> object:
    for part in path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"Cannot import {spec!r}: no attribute {part!r}") from None
    return obj


def _public_attributes(obj: object) -> Iterator[tuple[str, Any]]:
    names = vars(obj) if isinstance(obj, ModuleType) else dir(obj)
    for name in list(names):
        if not name.startswith("_"):
            yield name, getattr(obj, name)


def _is_setting(name: str, value: Any) -> bool:
    """Whether an attribute of a config module is a setting, not an import or a helper."""
    if name in DEFAULTS or name in OLD_NAMES:
        return True  # any value: task_routes or database_engine_callback may be functions
    return not (
        inspect.ismodule(value)
        or inspect.isclass(value)
        or inspect.isroutine(value)
        or isinstance(value, property)
    )


def settings_from_object(obj: object, namespace: str | None = None) -> dict[str, Any]:
    """Read a configuration module, class, object or dict into a dict of new setting names.

    Without a namespace, every public attribute that is not a module, class or function
    is read; old UPPERCASE names become new names. A configuration that mixes old and new
    names is refused, as Celery does, unless the odd ones out are given both ways.

    With a namespace (Django: `namespace='CELERY'`), the attributes starting with 'CELERY_'
    are read, prefix removed and lower-cased ('CELERY_TASK_ALWAYS_EAGER' -> task_always_eager,
    'CELERY_ALWAYS_EAGER' -> task_always_eager too). Like Celery, unprefixed old names
    ('BROKER_URL') are read as well, below the prefixed ones.

    In both forms Django's TIME_ZONE is used for `timezone` when that is not set, as Celery does.

    Args:
        obj: A module, a name for `load_object`, a class, any object or a mapping.
        namespace: The prefix of the settings to read, e.g. 'CELERY'.

    Returns:
        The settings by new name.

    Raises:
        ImproperlyConfigured: Old and new names are mixed (without a namespace).
        ImportError: `obj` names something that cannot be imported.
    """
    loaded = load_object(obj)
    if isinstance(loaded, Mapping):
        source = dict(loaded)
    else:
        source = dict(_public_attributes(loaded))
    if namespace:
        settings = _read_namespaced(source, _namespace_prefix(namespace))
    else:
        if not isinstance(loaded, Mapping):
            # A module's imports and helpers are not settings; a dict holds only settings.
            source = {name: value for name, value in source.items() if _is_setting(name, value)}
        settings = _read_plain(source)
    if settings.get("timezone") is None and source.get("TIME_ZONE") is not None:
        settings["timezone"] = source["TIME_ZONE"]
    return settings


def _read_plain(source: dict[str, Any]) -> dict[str, Any]:
    names = set(source)
    _refuse_mixed_names(names)
    settings: dict[str, Any] = {}
    for name, value in source.items():
        new_name = OLD_NAMES.get(name)
        if new_name is None:
            settings[name] = value
        elif new_name not in names:  # given both ways: the new name wins
            settings[new_name] = value
    return settings


def _refuse_mixed_names(names: set[str]) -> None:
    old = names & OLD_NAMES.keys()
    new = names & DEFAULTS.keys()
    if not old or not new:
        return
    # Like Celery: the majority decides which form is right (new on a tie), and a key
    # also given in the right form is not an error.
    if len(old) > len(new):
        wrong = sorted((name, _NEW_TO_OLD[name]) for name in new if _NEW_TO_OLD[name] not in names)
        advice = "rename these to the old names, or better, all settings to the new names"
    else:
        wrong = sorted((name, OLD_NAMES[name]) for name in old if OLD_NAMES[name] not in names)
        advice = "rename these to the new names"
    if wrong:
        renames = "\n".join(f"    {name:<36} -> {to}" for name, to in wrong)
        raise ImproperlyConfigured(
            f"Cannot mix old (UPPERCASE) and new (lowercase) setting names; {advice}:\n{renames}"
        )


def _read_namespaced(source: dict[str, Any], prefix: str) -> dict[str, Any]:
    old_unprefixed: dict[str, Any] = {}  # 'BROKER_URL'
    old_prefixed: dict[str, Any] = {}  # 'CELERY_ALWAYS_EAGER'
    new_prefixed: dict[str, Any] = {}  # 'CELERY_TASK_ALWAYS_EAGER', 'CELERY_MY_OWN'
    for name, value in source.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            rest = name[len(prefix) :].lower()
            if rest not in DEFAULTS and name.upper() in OLD_NAMES:
                old_prefixed[OLD_NAMES[name.upper()]] = value
            else:
                new_prefixed[rest] = value
        elif name in OLD_NAMES:
            old_unprefixed[OLD_NAMES[name]] = value
    return {**old_unprefixed, **old_prefixed, **new_prefixed}


def settings_from_envvar(
    variable_name: str, silent: bool = False, namespace: str | None = None
) -> dict[str, Any]:
    """Read the configuration module named by an environment variable.

    Args:
        variable_name: The variable, e.g. 'CELERY_CONFIG_MODULE', holding a module name.
        silent: Return {} instead of raising when the variable is unset or the module
            cannot be imported.
        namespace: As for `settings_from_object`.

    Returns:
        The settings by new name.

    Raises:
        ImproperlyConfigured: The variable is not set (unless `silent`).
        ImportError: The module cannot be imported (unless `silent`).
    """
    module_name = os.environ.get(variable_name)
    if not module_name:
        if silent:
            return {}
        raise ImproperlyConfigured(
            f"The environment variable {variable_name!r} is not set, so the configuration "
            "cannot be loaded. Set it to the name of a configuration module, "
            "e.g. 'proj.celeryconfig'."
        )
    try:
        return settings_from_object(module_name, namespace=namespace)
    except ImportError:
        if silent:
            return {}
        raise
