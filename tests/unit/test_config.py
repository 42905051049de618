"""Settings: Celery's names and defaults, old names, namespaces, loading config modules."""

from __future__ import annotations

import itertools
import logging
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from celeriac.config import (
    DEFAULTS,
    OLD_NAMES,
    Settings,
    load_object,
    settings_from_envvar,
    settings_from_object,
)
from celeriac.exceptions import ImproperlyConfigured

_counter = itertools.count()


@pytest.fixture
def make_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """Write a module with a unique name into a directory on sys.path; return its name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def make(source: str, package: str | None = None) -> str:
        name = f"celeriac_cfg_{next(_counter)}"
        directory = tmp_path
        if package:
            directory = tmp_path / package
            directory.mkdir(exist_ok=True)
            (directory / "__init__.py").touch()
            names.append(package)
        (directory / f"{name}.py").write_text(textwrap.dedent(source))
        full = f"{package}.{name}" if package else name
        names.append(full)
        return full

    yield make
    for name in names:
        sys.modules.pop(name, None)


# -- DEFAULTS and OLD_NAMES ---------------------------------------------------------------


def test_defaults_that_matter_most() -> None:
    expected: dict[str, Any] = {
        "broker_url": None,
        "result_backend": None,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": None,
        "task_default_queue": "celery",
        "task_default_exchange": None,
        "task_default_exchange_type": "direct",
        "task_default_routing_key": None,
        "task_create_missing_queues": True,
        "task_queues": None,
        "task_routes": None,
        "result_expires": timedelta(days=1),
        "worker_prefetch_multiplier": 4,
        "worker_concurrency": None,
        "task_acks_late": False,
        "broker_connection_retry": True,
        "broker_connection_retry_on_startup": None,
        "broker_connection_max_retries": 100,
        "broker_connection_timeout": 4.0,
        "broker_transport_options": {},
        "timezone": None,
        "enable_utc": True,
        "task_always_eager": False,
        "task_eager_propagates": False,
        "task_track_started": False,
        "task_ignore_result": False,
        "result_extended": False,
        "beat_schedule": {},
        "beat_max_loop_interval": 0,
    }
    assert {key: DEFAULTS[key] for key in expected} == expected


def test_defaults_and_old_names_match_celery() -> None:
    celery_defaults = pytest.importorskip("celery.app.defaults")
    from celeriac.defaults import CELERIAC_SETTINGS

    assert set(DEFAULTS) - set(CELERIAC_SETTINGS) == set(celery_defaults.DEFAULTS)
    assert OLD_NAMES == celery_defaults._TO_NEW_KEY
    different = {k for k, v in DEFAULTS.items()
                 if k not in CELERIAC_SETTINGS and v != celery_defaults.DEFAULTS[k]}
    # accept_content is a list here (a tuple in Celery); the rest name Celery's own classes.
    assert different == {"accept_content", "beat_scheduler", "worker_autoscaler", "worker_consumer"}


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("BROKER_URL", "broker_url"),
        ("CELERY_RESULT_BACKEND", "result_backend"),
        ("CELERY_TASK_SERIALIZER", "task_serializer"),
        ("CELERY_ACCEPT_CONTENT", "accept_content"),
        ("CELERY_ALWAYS_EAGER", "task_always_eager"),
        ("CELERYD_CONCURRENCY", "worker_concurrency"),
        ("CELERYBEAT_SCHEDULE", "beat_schedule"),
        ("CELERY_ROUTES", "task_routes"),
        ("CELERY_QUEUES", "task_queues"),
        ("CELERY_DEFAULT_QUEUE", "task_default_queue"),
        ("CELERY_TIMEZONE", "timezone"),
        ("CELERY_IMPORTS", "imports"),
        ("CELERY_TASK_RESULT_EXPIRES", "result_expires"),
        ("CELERY_EAGER_PROPAGATES_EXCEPTIONS", "task_eager_propagates"),
        ("CELERYD_TASK_TIME_LIMIT", "task_time_limit"),
        ("CELERY_SEND_EVENTS", "worker_send_task_events"),
        ("CELERY_RESULT_DBURI", "database_url"),
        ("RESULT_ACCEPT_CONTENT", "result_accept_content"),
    ],
)
def test_old_names(old: str, new: str) -> None:
    assert OLD_NAMES[old] == new


# -- Settings: access ---------------------------------------------------------------------


def test_settings_read_defaults() -> None:
    conf = Settings()
    assert conf.broker_url is None
    assert conf["task_serializer"] == "json"
    assert conf.get("result_expires") == timedelta(days=1)
    assert conf.changes == {}


def test_attribute_and_item_access() -> None:
    conf = Settings()
    conf.broker_url = "redis://localhost:6379/0"
    conf["result_backend"] = "redis://localhost:6379/1"
    assert conf["broker_url"] == "redis://localhost:6379/0"
    assert conf.result_backend == "redis://localhost:6379/1"
    assert conf.changes == {
        "broker_url": "redis://localhost:6379/0",
        "result_backend": "redis://localhost:6379/1",
    }


def test_old_names_on_set_and_get() -> None:
    conf = Settings()
    conf.BROKER_URL = "amqp://"
    conf["CELERY_ALWAYS_EAGER"] = True
    assert conf.broker_url == "amqp://"
    assert conf.task_always_eager is True
    assert conf.CELERYD_CONCURRENCY is None
    assert conf["CELERY_ALWAYS_EAGER"] is True
    assert "CELERY_RESULT_BACKEND" in conf
    assert conf.changes == {"broker_url": "amqp://", "task_always_eager": True}


def test_namespaced_names_on_set_and_get() -> None:
    conf = Settings(namespace="CELERY")
    conf.CELERY_BROKER_URL = "redis://"
    conf["CELERY_TASK_ALWAYS_EAGER"] = True
    conf["CELERY_ALWAYS_EAGER"] = True  # an old name behind the prefix
    assert conf.broker_url == "redis://"
    assert conf.CELERY_BROKER_URL == "redis://"
    assert conf.changes == {"broker_url": "redis://", "task_always_eager": True}


def test_missing_names() -> None:
    conf = Settings()
    with pytest.raises(KeyError):
        conf["no_such_thing"]
    with pytest.raises(AttributeError):
        conf.no_such_thing  # noqa: B018
    assert not hasattr(conf, "no_such_thing")
    assert conf.get("no_such_thing", 42) == 42
    assert "no_such_thing" not in conf


def test_update_with_mapping_pairs_and_keywords() -> None:
    conf = Settings()
    conf.update({"broker_url": "memory://"}, task_acks_late=True)
    conf.update([("CELERY_IGNORE_RESULT", True)])
    conf.update(BROKER_URL="redis://")
    assert conf.changes == {
        "broker_url": "redis://",
        "task_acks_late": True,
        "task_ignore_result": True,
    }


def test_constructor_takes_changes() -> None:
    assert Settings({"BROKER_URL": "memory://"}).changes == {"broker_url": "memory://"}


def test_setdefault() -> None:
    conf = Settings()
    assert conf.setdefault("my_flag", 1) == 1
    assert conf.setdefault("my_flag", 2) == 1
    # a known setting already has a value (its default): setdefault leaves it alone
    assert conf.setdefault("task_serializer", "pickle") == "json"
    assert conf.changes == {"my_flag": 1}


def test_iteration_yields_defaults_and_custom_keys() -> None:
    conf = Settings({"my_custom_thing": 1, "broker_url": "memory://"})
    keys = list(conf)
    assert set(keys) == set(DEFAULTS) | {"my_custom_thing"}
    assert len(keys) == len(set(keys)) == len(conf)
    assert dict(conf.items())["broker_url"] == "memory://"


def test_delete_restores_default() -> None:
    conf = Settings({"task_serializer": "pickle"})
    del conf.task_serializer
    assert conf.task_serializer == "json"
    with pytest.raises(KeyError):
        del conf["task_serializer"]


def test_copy_is_independent() -> None:
    conf = Settings({"broker_url": "memory://"}, namespace="CELERY")
    conf.beat_schedule["every-minute"] = {"task": "t"}
    copied = conf.copy()
    copied.broker_url = "redis://"
    copied.beat_schedule["other"] = {"task": "u"}
    assert conf.broker_url == "memory://"
    assert list(conf.beat_schedule) == ["every-minute"]
    assert list(copied.beat_schedule) == ["every-minute", "other"]
    assert copied.namespace == "CELERY"


def test_mutable_defaults_are_not_shared() -> None:
    Settings().beat_schedule["x"] = {}
    assert Settings().beat_schedule == {}
    assert DEFAULTS["beat_schedule"] == {}


def test_fallbacks_to_other_settings() -> None:
    conf = Settings({"task_default_queue": "default", "broker_url": "redis://h"})
    assert conf.task_default_exchange == "default"
    assert conf.task_default_routing_key == "default"
    assert conf.broker_read_url == conf.broker_write_url == "redis://h"
    conf.task_default_exchange = "tasks"
    assert conf.task_default_exchange == "tasks"


def test_custom_keys_are_kept() -> None:
    conf = Settings()
    conf.my_custom_thing = {"a": 1}
    conf["SENTRY_DSN"] = "x"
    assert conf.my_custom_thing == {"a": 1}
    assert conf.SENTRY_DSN == "x"


def test_pickle_round_trip() -> None:
    import pickle

    conf = Settings({"broker_url": "memory://"}, namespace="CELERY")
    again = pickle.loads(pickle.dumps(conf))
    assert again.changes == conf.changes
    assert again.namespace == "CELERY"


# -- Settings: typo warnings --------------------------------------------------------------


def test_typo_warns_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    conf = Settings()
    with (
        caplog.at_level(logging.WARNING, logger="celeriac.config"),
        pytest.warns(UserWarning, match="Unknown setting 'broker_ulr': did you mean 'broker_url'"),
    ):
        conf.broker_ulr = "redis://"
    assert "did you mean 'broker_url'" in caplog.text
    assert conf.changes == {"broker_ulr": "redis://"}  # still stored as given


def test_typo_in_old_name_warns() -> None:
    with pytest.warns(UserWarning, match="CELERY_RESULT_BACKEND"):
        Settings().update(CELERY_RESULT_BACKEDN="redis://")


def test_typo_behind_namespace_warns() -> None:
    with pytest.warns(UserWarning, match="did you mean 'broker_url'"):
        Settings(namespace="CELERY")["CELERY_BROKER_ULR"] = "redis://"


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("CELERY_ENABLE_UTC", "enable_utc"), ("CELERY_BROKER_URL", "broker_url")],
)
def test_prefixed_name_without_namespace_warns(key: str, suggestion: str) -> None:
    with pytest.warns(UserWarning, match=f"did you mean '{suggestion}'"):
        Settings()[key] = True


@pytest.mark.parametrize(
    "key",
    ["broker_url", "BROKER_URL", "my_custom_thing", "sentry_dsn", "MY_CONSTANT", "SECRET_KEY"],
)
def test_no_warning_for_known_or_unrelated_names(key: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Settings()[key] = "value"


# -- Settings: humanize -------------------------------------------------------------------


def test_humanize_masks_secrets() -> None:
    conf = Settings(
        {
            "broker_url": "amqp://guest:guest@localhost:5672//",
            "result_backend": "redis://:332572@127.0.0.1:6379/1",
            "security_key_password": "pw",
            "my_api_token": "abc",
            "SECRET_KEY": "django",
            "broker_transport_options": {"sentinel_kwargs": {"password": "s"}},
            "task_default_routing_key": "tasks",
            "task_serializer": "json",
        }
    )
    text = conf.humanize()
    lines = dict(line.split(": ", 1) for line in text.splitlines())
    assert lines["broker_url"] == "'amqp://guest:**@localhost:5672//'"
    assert lines["result_backend"] == "'redis://:**@127.0.0.1:6379/1'"
    assert lines["security_key_password"] == "'********'"
    assert lines["my_api_token"] == "'********'"
    assert lines["SECRET_KEY"] == "'********'"
    assert lines["broker_transport_options"] == "{'sentinel_kwargs': {'password': '********'}}"
    assert lines["task_default_routing_key"] == "'tasks'"
    assert lines["task_serializer"] == "'json'"
    for secret in ("guest:guest", "332572", "'pw'", "abc", "django", "'s'"):
        assert secret not in text


def test_humanize_unmasked() -> None:
    conf = Settings({"broker_url": "redis://:pw@h/0", "redis_password": "pw"})
    assert conf.humanize(mask=False) == "broker_url: 'redis://:pw@h/0'\nredis_password: 'pw'"
    assert conf.humanize(censored=False) == conf.humanize(mask=False)


def test_humanize_only_changes_unless_with_defaults() -> None:
    conf = Settings({"task_acks_late": True})
    assert conf.humanize() == "task_acks_late: True"
    assert len(conf.humanize(with_defaults=True).splitlines()) >= len(DEFAULTS)


# -- load_object --------------------------------------------------------------------------


def test_load_object_variants(make_module: Callable[..., str]) -> None:
    name = make_module(
        """
        class Config:
            broker_url = 'memory://'
        value = 42
        """,
        package="celeriac_cfgpkg",
    )
    module = load_object(name)
    assert isinstance(module, ModuleType)
    assert load_object(f"{name}:value") == 42
    assert load_object(f"{name}.value") == 42
    assert load_object(f"{name}:Config.broker_url") == "memory://"
    assert load_object(f"{name}:Config") is module.Config


def test_load_object_returns_objects_as_is() -> None:
    obj = object()
    assert load_object(obj) is obj
    config = {"broker_url": "memory://"}
    assert load_object(config) is config


def test_load_object_errors(make_module: Callable[..., str]) -> None:
    name = make_module("value = 1\n")
    with pytest.raises(ImportError, match="nothing"):
        load_object(f"{name}:nothing")
    with pytest.raises(ImportError):
        load_object(f"{name}.nothing")
    with pytest.raises(ModuleNotFoundError):
        load_object("celeriac_no_such_module_anywhere")


def test_load_object_reports_broken_imports_inside_module(
    make_module: Callable[..., str],
) -> None:
    name = make_module("import celeriac_missing_dependency\n")
    with pytest.raises(ModuleNotFoundError, match="celeriac_missing_dependency"):
        load_object(name)


def test_load_object_looks_in_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "celeriac_cwd_config.py").write_text("broker_url = 'memory://'\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "celeriac_cwd_config", raising=False)
    try:
        assert load_object("celeriac_cwd_config:broker_url") == "memory://"
    finally:
        sys.modules.pop("celeriac_cwd_config", None)
    assert str(tmp_path) not in sys.path


# -- settings_from_object -----------------------------------------------------------------


def test_tutorial_celeryconfig_old_names(make_module: Callable[..., str]) -> None:
    # proj/celeryconfig.py from the Celery 3 tutorial
    name = make_module(
        """
        BROKER_URL = 'amqp://'
        CELERY_RESULT_BACKEND = 'rpc://'
        CELERY_TASK_SERIALIZER = 'json'
        CELERY_ACCEPT_CONTENT = ['json']
        CELERY_TIMEZONE = 'Europe/Oslo'
        CELERY_ENABLE_UTC = True
        """
    )
    settings = settings_from_object(name)
    assert settings == {
        "broker_url": "amqp://",
        "result_backend": "rpc://",
        "task_serializer": "json",
        "accept_content": ["json"],
        "timezone": "Europe/Oslo",
        # not a Celery setting (enable_utc's old name is ENABLE_UTC): kept as written
        "CELERY_ENABLE_UTC": True,
    }


def test_module_imports_and_helpers_are_skipped(make_module: Callable[..., str]) -> None:
    name = make_module(
        """
        import os
        from datetime import timedelta
        from collections import OrderedDict

        def route_task(name, args, kwargs, options, task=None, **kw):
            return {'queue': 'q'}

        def helper():
            pass

        broker_url = 'redis://'
        result_expires = timedelta(hours=1)
        task_routes = route_task
        MY_CONSTANT = 3
        _private = 1
        """
    )
    settings = settings_from_object(name)
    assert settings.keys() == {"broker_url", "result_expires", "task_routes", "MY_CONSTANT"}
    assert settings["task_routes"].__name__ == "route_task"


def test_class_config_with_inheritance() -> None:
    class Base:
        broker_url = "redis://"
        task_acks_late = True

    class Config(Base):
        task_acks_late = False

    assert settings_from_object(Config) == {"broker_url": "redis://", "task_acks_late": False}


def test_dict_config_keeps_everything() -> None:
    config = {"BROKER_URL": "memory://", "my_class": dict}
    assert settings_from_object(config) == {"broker_url": "memory://", "my_class": dict}


def test_mixing_old_and_new_names_is_refused() -> None:
    config = {
        "broker_url": "redis://",
        "result_backend": "redis://",
        "CELERY_ALWAYS_EAGER": True,
    }
    with pytest.raises(ImproperlyConfigured) as info:
        settings_from_object(config)
    message = str(info.value)
    assert "CELERY_ALWAYS_EAGER" in message
    assert "task_always_eager" in message


def test_mixing_with_old_majority_names_the_new_keys() -> None:
    config = {"BROKER_URL": "redis://", "CELERY_RESULT_BACKEND": "redis://", "task_acks_late": 1}
    with pytest.raises(ImproperlyConfigured, match="task_acks_late .*-> CELERY_ACKS_LATE"):
        settings_from_object(config)


def test_same_setting_both_ways_is_allowed_and_new_wins() -> None:
    config = {
        "CELERY_TASK_RESULT_EXPIRES": 10,
        "result_expires": 20,
        "broker_url": "redis://",
    }
    assert settings_from_object(config) == {"result_expires": 20, "broker_url": "redis://"}


class DjangoSettings:
    """Stands in for django.conf.settings."""

    DEBUG = True
    INSTALLED_APPS = ["django.contrib.admin"]
    TIME_ZONE = "Europe/Paris"
    SECRET_KEY = "django-secret"
    CELERY_BROKER_URL = "redis://localhost:6379/0"
    CELERY_RESULT_BACKEND = "redis://localhost:6379/1"
    CELERY_TASK_ALWAYS_EAGER = True
    CELERY_ALWAYS_EAGER = False  # old name behind the prefix: the new one wins
    CELERY_EAGER_PROPAGATES_EXCEPTIONS = True  # old name behind the prefix
    CELERY_MY_OWN_FLAG = 1
    CELERYD_CONCURRENCY = 3  # old name without the prefix: read, as Celery does

    @staticmethod
    def CELERY_TASK_ROUTES(name: str, *args: Any, **kwargs: Any) -> dict[str, str]:  # noqa: N802
        return {"queue": "q"}


@pytest.mark.parametrize("namespace", ["CELERY", "CELERY_"])
def test_django_namespace(namespace: str) -> None:
    settings = settings_from_object(DjangoSettings, namespace=namespace)
    routes = settings.pop("task_routes")
    assert routes("t") == {"queue": "q"}
    assert settings == {
        "broker_url": "redis://localhost:6379/0",
        "result_backend": "redis://localhost:6379/1",
        "task_always_eager": True,
        "task_eager_propagates": True,
        "my_own_flag": 1,
        "worker_concurrency": 3,
        "timezone": "Europe/Paris",  # Django's TIME_ZONE, as Celery does
    }


def test_django_namespace_celery_timezone_wins() -> None:
    config = {"TIME_ZONE": "Europe/Paris", "CELERY_TIMEZONE": "UTC"}
    assert settings_from_object(config, namespace="CELERY") == {"timezone": "UTC"}


def test_namespace_never_refuses_mixed_names() -> None:
    config = {"CELERY_BROKER_URL": "redis://", "BROKER_URL": "amqp://"}
    assert settings_from_object(config, namespace="CELERY") == {"broker_url": "redis://"}


@pytest.mark.parametrize(
    ("config", "namespace"),
    [
        ({"BROKER_URL": "amqp://", "CELERY_RESULT_BACKEND": "rpc://"}, None),
        ({"broker_url": "amqp://", "result_backend": "rpc://", "task_acks_late": True}, None),
        ({"CELERY_TASK_RESULT_EXPIRES": 10, "result_expires": 20}, None),
        (
            {
                "CELERY_BROKER_URL": "redis://",
                "CELERY_TASK_ALWAYS_EAGER": True,
                "CELERY_EAGER_PROPAGATES_EXCEPTIONS": True,
                "CELERYD_CONCURRENCY": 3,
                "TIME_ZONE": "Europe/Paris",
            },
            "CELERY",
        ),
    ],
)
def test_same_values_as_celery(config: dict[str, Any], namespace: str | None) -> None:
    celery = pytest.importorskip("celery")
    app = celery.Celery(set_as_current=False)
    app.config_from_object(config, namespace=namespace)
    ours = Settings(settings_from_object(config, namespace=namespace))
    for key in ("broker_url", "result_backend", "task_always_eager", "task_eager_propagates",
                "worker_concurrency", "result_expires", "task_acks_late", "timezone"):  # fmt: skip
        theirs = app.conf[key] if key != "timezone" else app.conf.timezone
        assert ours[key] == theirs, key


@pytest.mark.parametrize(
    "config",
    [
        {"broker_url": "redis://", "result_backend": "x", "CELERY_ALWAYS_EAGER": True},
        {"BROKER_URL": "redis://", "CELERY_RESULT_BACKEND": "x", "task_acks_late": True},
    ],
)
def test_refuses_what_celery_refuses(config: dict[str, Any]) -> None:
    celery = pytest.importorskip("celery")
    app = celery.Celery(set_as_current=False)
    app.config_from_object(config)
    with pytest.raises(celery.exceptions.ImproperlyConfigured):
        app.conf.broker_url  # noqa: B018
    with pytest.raises(ImproperlyConfigured):
        settings_from_object(config)


# -- settings_from_envvar -----------------------------------------------------------------


def test_settings_from_envvar(
    make_module: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    name = make_module("broker_url = 'memory://'\n")
    monkeypatch.setenv("CELERIAC_TEST_CONFIG_MODULE", name)
    assert settings_from_envvar("CELERIAC_TEST_CONFIG_MODULE") == {"broker_url": "memory://"}


def test_settings_from_envvar_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELERIAC_TEST_CONFIG_MODULE", raising=False)
    with pytest.raises(ImproperlyConfigured, match="CELERIAC_TEST_CONFIG_MODULE"):
        settings_from_envvar("CELERIAC_TEST_CONFIG_MODULE")
    assert settings_from_envvar("CELERIAC_TEST_CONFIG_MODULE", silent=True) == {}


def test_settings_from_envvar_missing_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERIAC_TEST_CONFIG_MODULE", "celeriac_no_such_config_module")
    with pytest.raises(ImportError):
        settings_from_envvar("CELERIAC_TEST_CONFIG_MODULE")
    assert settings_from_envvar("CELERIAC_TEST_CONFIG_MODULE", silent=True) == {}
