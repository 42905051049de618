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
from datetime import timedelta
from types import ModuleType
from typing import Any

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

_PROCESS_LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
_TASK_LOG_FORMAT = (
    "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s"
)

#: Every Celery 5 setting and its default (Celery's `celery.app.defaults`, flattened).
DEFAULTS: dict[str, Any] = {
    # -- general
    "accept_content": ["json"],
    "result_accept_content": None,  # None: same as accept_content
    "enable_utc": True,
    "imports": (),
    "include": (),
    "timezone": None,
    # -- beat
    "beat_enable_remote_control": False,
    "beat_remote_control_max_tick_age": None,
    "beat_max_loop_interval": 0,
    "beat_schedule": {},
    "beat_scheduler": "celeriac.beat:PersistentScheduler",
    "beat_schedule_filename": "celerybeat-schedule",
    "beat_sync_every": 0,
    "beat_cron_starting_deadline": None,
    # -- broker
    "broker_url": None,
    "broker_read_url": None,  # None: broker_url
    "broker_write_url": None,  # None: broker_url
    "broker_transport": None,
    "broker_transport_options": {},
    "broker_connection_timeout": 4.0,
    "broker_connection_retry": True,
    "broker_connection_retry_on_startup": None,  # None: follow broker_connection_retry
    "broker_connection_max_retries": 100,
    "broker_channel_error_retry": False,
    "broker_failover_strategy": None,
    "broker_heartbeat": 120,
    "broker_heartbeat_checkrate": 3.0,
    "broker_login_method": None,
    "broker_native_delayed_delivery_queue_type": "quorum",
    "broker_pool_limit": 10,
    "broker_pool_acquire_timeout": None,
    "broker_use_ssl": False,
    "broker_host": None,
    "broker_port": None,
    "broker_user": None,
    "broker_password": None,
    "broker_vhost": None,
    # -- cache result backend
    "cache_backend": None,
    "cache_backend_options": {},
    # -- cassandra result backend
    "cassandra_entry_ttl": None,
    "cassandra_keyspace": None,
    "cassandra_port": None,
    "cassandra_read_consistency": None,
    "cassandra_servers": None,
    "cassandra_bundle_path": None,
    "cassandra_table": None,
    "cassandra_write_consistency": None,
    "cassandra_auth_provider": None,
    "cassandra_auth_kwargs": None,
    "cassandra_options": {},
    # -- s3 result backend
    "s3_access_key_id": None,
    "s3_secret_access_key": None,
    "s3_bucket": None,
    "s3_base_path": None,
    "s3_endpoint_url": None,
    "s3_region": None,
    # -- azure block blob result backend
    "azureblockblob_container_name": "celery",
    "azureblockblob_retry_initial_backoff_sec": 2,
    "azureblockblob_retry_increment_base": 2,
    "azureblockblob_retry_max_attempts": 3,
    "azureblockblob_base_path": "",
    "azureblockblob_connection_timeout": 20,
    "azureblockblob_read_timeout": 120,
    # -- google cloud storage result backend
    "gcs_bucket": None,
    "gcs_project": None,
    "gcs_base_path": "",
    "gcs_ttl": 0,
    # -- remote control (broadcast) queues
    "control_queue_ttl": 300.0,
    "control_queue_expires": 10.0,
    "control_queue_exclusive": True,
    "control_queue_durable": False,
    "control_exchange": "celery",
    # -- document store result backends
    "couchbase_backend_settings": None,
    "arangodb_backend_settings": None,
    "mongodb_backend_settings": None,
    "cosmosdbsql_database_name": "celerydb",
    "cosmosdbsql_collection_name": "celerycol",
    "cosmosdbsql_consistency_level": "Session",
    "cosmosdbsql_max_retry_attempts": 9,
    "cosmosdbsql_max_retry_wait_time": 30,
    # -- events
    "event_queue_expires": 60.0,
    "event_queue_ttl": 5.0,
    "event_queue_prefix": "celeryev",
    "event_queue_exclusive": True,
    "event_queue_durable": False,
    "event_serializer": "json",
    "event_exchange": "celeryev",
    # -- redis result backend
    "redis_backend_use_ssl": None,
    "redis_db": None,
    "redis_host": None,
    "redis_max_connections": None,
    "redis_username": None,
    "redis_password": None,
    "redis_port": None,
    "redis_socket_timeout": 120.0,
    "redis_socket_connect_timeout": None,
    "redis_retry_on_timeout": False,
    "redis_socket_keepalive": False,
    # -- results
    "result_backend": None,
    "result_cache_max": -1,
    "result_compression": None,
    "result_exchange": "celeryresults",
    "result_exchange_type": "direct",
    "result_expires": timedelta(days=1),
    "result_chord_expires": None,
    "result_failure_expires": None,
    "result_persistent": None,
    "result_extended": False,
    "result_serializer": "json",
    "result_backend_transport_options": {},
    "result_chord_retry_interval": 1.0,
    "result_chord_join_timeout": 3.0,
    "result_backend_max_sleep_between_retries_ms": 10000,
    "result_backend_max_retries": float("inf"),
    "result_backend_base_sleep_between_retries_ms": 10,
    "result_backend_always_retry": False,
    # -- elasticsearch result backend
    "elasticsearch_retry_on_timeout": None,
    "elasticsearch_max_retries": None,
    "elasticsearch_timeout": None,
    "elasticsearch_save_meta_as_text": True,
    # -- message signing
    "security_certificate": None,
    "security_cert_store": None,
    "security_key": None,
    "security_key_password": None,
    "security_digest": "sha256",
    # -- SQL result backend
    "database_url": None,
    "database_engine_options": {"pool_pre_ping": True, "pool_recycle": 3600},
    "database_engine_callback": None,
    "database_short_lived_sessions": False,
    "database_table_schemas": None,
    "database_table_names": None,
    "database_create_tables_at_setup": True,
    # -- tasks
    "task_acks_late": False,
    "task_acks_on_failure_or_timeout": True,
    "task_acks_on_failure": None,
    "task_acks_on_timeout": None,
    "task_always_eager": False,
    "task_annotations": None,
    "task_compression": None,
    "task_create_missing_queues": True,
    "task_create_missing_queue_type": "classic",
    "task_create_missing_queue_exchange_type": None,
    "task_inherit_parent_priority": False,
    "task_default_delivery_mode": 2,
    "task_default_queue": "celery",
    "task_default_queue_type": "classic",
    "task_default_exchange": None,  # None: task_default_queue
    "task_default_exchange_type": "direct",
    "task_default_routing_key": None,  # None: task_default_queue
    "task_default_rate_limit": None,
    "task_default_priority": None,
    "task_eager_propagates": False,
    "task_ignore_result": False,
    "task_store_eager_result": False,
    "task_protocol": 2,
    "task_publish_retry": True,
    "task_publish_retry_policy": {
        "max_retries": 3,
        "interval_start": 0,
        "interval_max": 1,
        "interval_step": 0.2,
    },
    "task_queues": None,
    "task_queue_max_priority": None,
    "task_reject_on_worker_lost": None,
    "task_retry_on_worker_lost": False,
    "task_remote_tracebacks": False,
    "task_repr_maxlevels": 3,
    "task_routes": None,
    "task_send_sent_event": False,
    "task_serializer": "json",
    "task_soft_time_limit": None,
    "task_time_limit": None,
    "task_store_errors_even_if_ignored": False,
    "task_track_started": False,
    "task_allow_error_cb_on_chord_header": False,
    # -- worker
    "worker_agent": None,
    # Celery's defaults for these two name its own bootstep classes; celeriac has no such
    # plug points, so None (the names stay known, so configs that set them still load).
    "worker_autoscaler": None,
    "worker_consumer": None,
    "worker_cancel_long_running_tasks_on_connection_loss": False,
    "worker_soft_shutdown_timeout": 0.0,
    "worker_enable_soft_shutdown_on_idle": False,
    "worker_concurrency": None,  # None: the number of CPUs
    "worker_direct": False,
    "worker_disable_rate_limits": False,
    "worker_deduplicate_successful_tasks": False,
    "worker_enable_remote_control": True,
    "worker_hijack_root_logger": True,
    "worker_log_color": None,
    "worker_log_datefmt": None,
    "worker_log_format": _PROCESS_LOG_FORMAT,
    "worker_lost_wait": 10.0,
    "worker_max_memory_per_child": None,
    "worker_max_tasks_per_child": None,
    "worker_pool": "prefork",
    "worker_pool_putlocks": True,
    "worker_pool_restarts": False,
    "worker_pool_start_method": "fork",
    "worker_proc_alive_timeout": 4.0,
    "worker_prefetch_multiplier": 4,
    "worker_eta_task_limit": None,
    "worker_enable_prefetch_count_reduction": True,
    "worker_disable_prefetch": False,
    "worker_redirect_stdouts": True,
    "worker_redirect_stdouts_level": "WARNING",
    "worker_send_task_events": False,
    "worker_state_db": None,
    "worker_task_log_datefmt": None,
    "worker_task_log_format": _TASK_LOG_FORMAT,
    "worker_timer": None,
    "worker_timer_precision": 1.0,
    "worker_detect_quorum_queues": True,
}

# Celery 4 renamed the settings group by group. The old name of a 'task_x' setting was
# 'CELERY_X', of 'worker_x' 'CELERYD_X', of 'beat_x' 'CELERYBEAT_X'; the groups below kept
# their name behind a 'CELERY_' prefix; all other settings were simply upper-cased.
_OLD_RULES = (("task_", "CELERY_"), ("worker_", "CELERYD_"), ("beat_", "CELERYBEAT_"))
_OLD_CELERY_PREFIXED = (
    "accept_content", "imports", "include", "timezone",
    "result_", "redis_", "cache_", "couchbase_", "arangodb_", "mongodb_",
    "event_", "elasticsearch_", "security_",
)  # fmt: skip
# ...and these did not follow the rules.
_OLD_IRREGULAR = {
    "database_url": "CELERY_RESULT_DBURI",
    "database_engine_options": "CELERY_RESULT_ENGINE_OPTIONS",
    "database_short_lived_sessions": "CELERY_RESULT_DB_SHORT_LIVED_SESSIONS",
    "database_table_names": "CELERY_RESULT_DB_TABLENAMES",
    "result_accept_content": "RESULT_ACCEPT_CONTENT",
    "result_cache_max": "CELERY_MAX_CACHED_RESULTS",
    "result_expires": "CELERY_TASK_RESULT_EXPIRES",
    "task_compression": "CELERY_MESSAGE_COMPRESSION",
    "task_eager_propagates": "CELERY_EAGER_PROPAGATES_EXCEPTIONS",
    "task_protocol": "CELERY_TASK_PROTOCOL",
    "task_publish_retry": "CELERY_TASK_PUBLISH_RETRY",
    "task_publish_retry_policy": "CELERY_TASK_PUBLISH_RETRY_POLICY",
    "task_send_sent_event": "CELERY_SEND_TASK_SENT_EVENT",
    "task_serializer": "CELERY_TASK_SERIALIZER",
    "task_soft_time_limit": "CELERYD_TASK_SOFT_TIME_LIMIT",
    "task_time_limit": "CELERYD_TASK_TIME_LIMIT",
    "worker_direct": "CELERY_WORKER_DIRECT",
    "worker_disable_rate_limits": "CELERY_DISABLE_RATE_LIMITS",
    "worker_enable_remote_control": "CELERY_ENABLE_REMOTE_CONTROL",
    "worker_lost_wait": "CELERYD_WORKER_LOST_WAIT",
    "worker_redirect_stdouts": "CELERY_REDIRECT_STDOUTS",
    "worker_redirect_stdouts_level": "CELERY_REDIRECT_STDOUTS_LEVEL",
    "worker_send_task_events": "CELERY_SEND_EVENTS",
}


def _old_name(name: str) -> str:
    if name in _OLD_IRREGULAR:
        return _OLD_IRREGULAR[name]
    for new_prefix, old_prefix in _OLD_RULES:
        if name.startswith(new_prefix):
            return old_prefix + name[len(new_prefix) :].upper()
    if name.startswith(_OLD_CELERY_PREFIXED):
        return "CELERY_" + name.upper()
    return name.upper()


#: Pre-4.0 UPPERCASE setting names -> the new names (e.g. 'CELERY_ALWAYS_EAGER' ->
#: 'task_always_eager'), exactly as Celery maps them.
OLD_NAMES: dict[str, str] = {_old_name(name): name for name in DEFAULTS}
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
        self._namespace = value

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
        self._changes[name] = value

    def __delitem__(self, key: str) -> None:
        # Like Celery: removes the user's value, so the default shows again.
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
            return self[name]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}"
            ) from None

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
