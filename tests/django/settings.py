"""Django settings for tests/django: SQLite always, PostgreSQL and MariaDB when reachable.

Test databases get this process's id in their names, so test runs on one machine don't
collide. The celeriac models are routed to `routers.CURRENT`, which a fixture sets per test.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile

from tests.services import service_is_up

PID = os.getpid()
TMP = tempfile.mkdtemp(prefix="celeriac-django-")

SECRET_KEY = "tests"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["testserver"]
ROOT_URLCONF = "tests.django.urlconf"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "celeriac.contrib.django",
]
# django-celery-results (a test dependency) shares our tables: its models read and write
# them in the interop tests, and it never migrates (see routers.py).
HAS_DJANGO_CELERY_RESULTS = importlib.util.find_spec("django_celery_results") is not None
if HAS_DJANGO_CELERY_RESULTS:
    INSTALLED_APPS.append("django_celery_results")
SILENCED_SYSTEM_CHECKS = ["models.E028"]  # the shared table names, on purpose

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]

DATABASES: dict[str, dict] = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(TMP, "db.sqlite3"),
        "TEST": {"NAME": os.path.join(TMP, "test.sqlite3")},
        "OPTIONS": {"timeout": 20},
    },
}
#: The aliases of the server databases, and the (name, host, port) each needs.
SERVER_DATABASES = {
    "postgresql": ("PostgreSQL", "127.0.0.1", 5432),
    "mysql": ("MariaDB", "127.0.0.1", 3306),
}
if service_is_up("127.0.0.1", 5432):
    DATABASES["postgresql"] = {
        "ENGINE": "django.db.backends.postgresql", "NAME": "test", "USER": "postgres",
        "HOST": "127.0.0.1", "PORT": "5432", "TEST": {"NAME": f"celeriac_django_{PID}"},
    }
if service_is_up("127.0.0.1", 3306) and importlib.util.find_spec("pymysql") is not None:
    import pymysql

    pymysql.install_as_MySQLdb()
    DATABASES["mysql"] = {
        "ENGINE": "django.db.backends.mysql", "NAME": "test", "USER": "root",
        "HOST": "127.0.0.1", "PORT": "3306", "OPTIONS": {"charset": "utf8mb4"},
        "TEST": {"NAME": f"celeriac_django_{PID}", "CHARSET": "utf8mb4"},
    }
DATABASE_ROUTERS = ["tests.django.routers.AliasRouter"]
