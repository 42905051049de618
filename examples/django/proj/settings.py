"""Settings of the example project: a registration page that sends its mail in the background.

Environment variables (the tests set them): EXAMPLE_DATABASE (the SQLite file),
CELERY_BROKER_URL (default: an SQLite file next to this project), EXAMPLE_MAIL_DIR (where the
file mail backend writes the messages).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "example-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "celeriac.contrib.django",
    "accounts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "proj.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_database = os.environ.get("EXAMPLE_DATABASE", str(BASE_DIR / "db.sqlite3"))
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": _database,
        # The tests run a real worker in another process: it must see the same file.
        "TEST": {"NAME": os.environ.get("EXAMPLE_TEST_DATABASE", str(BASE_DIR / "test-db.sqlite3"))},
        "OPTIONS": {"timeout": 20},
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"

# Mail: written to files, so the test can read what the worker sent.
EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
EMAIL_FILE_PATH = os.environ.get("EXAMPLE_MAIL_DIR", str(BASE_DIR / "sent-mail"))
DEFAULT_FROM_EMAIL = "welcome@example.com"

# celeriac: the same names as Celery's, with the CELERY_ prefix (namespace="CELERY").
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "sqlite:///" + str(BASE_DIR / "broker.sqlite3"))
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_TASK_TRACK_STARTED = True
CELERY_BEAT_SCHEDULER = "celeriac.contrib.django.schedulers:DatabaseScheduler"
