"""Django for these tests: configured in-process (no DJANGO_SETTINGS_MODULE, so apps made by
other tests in this run are not switched to Django mode), test databases made once."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402

from tests.services import require_service  # noqa: E402

from . import routers  # noqa: E402
from . import settings as test_settings  # noqa: E402

if not settings.configured:
    settings.configure(**{name: getattr(test_settings, name) for name in dir(test_settings) if name.isupper()})
    django.setup()

ALIASES = ["default", "postgresql", "mysql"]


@pytest.fixture(scope="session", autouse=True)
def django_test_databases() -> Iterator[None]:
    from django.db import connections
    from django.test.utils import setup_test_environment, teardown_test_environment

    setup_test_environment()
    made = {}
    for alias in settings.DATABASES:
        made[alias] = connections[alias].creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    yield
    connections.close_all()
    for alias, name in made.items():
        connections[alias].creation.destroy_test_db(name, verbosity=0)
    teardown_test_environment()
    shutil.rmtree(test_settings.TMP, ignore_errors=True)


def _empty_tables(alias: str) -> None:
    from celeriac.contrib.django import models

    for model in (models.TaskResult, models.GroupResult, models.ChordCounter, models.OutboxMessage,
                  models.PeriodicTask, models.IntervalSchedule, models.CrontabSchedule,
                  models.PeriodicTasksChanged):
        model.objects.using(alias).all().delete()


def use_alias(alias: str) -> None:
    if alias != "default":
        name, host, port = test_settings.SERVER_DATABASES[alias]
        require_service(name, host, port)
        if alias not in settings.DATABASES:
            pytest.skip(f"{alias}: its driver is not installed")
    routers.CURRENT = alias


@pytest.fixture(params=ALIASES)
def alias(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each of SQLite, PostgreSQL and MariaDB in turn, for the celeriac models."""
    use_alias(request.param)
    _empty_tables(request.param)
    yield request.param
    _empty_tables(request.param)
    routers.CURRENT = "default"


@pytest.fixture
def sqlite_alias() -> Iterator[str]:
    """SQLite only (admin pages, example checks)."""
    use_alias("default")
    _empty_tables("default")
    yield "default"
    _empty_tables("default")
