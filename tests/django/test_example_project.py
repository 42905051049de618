"""examples/django: its own tests (Django's test client + a real worker process) must pass,
with the SQLite broker and with Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import require_service, services_required

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "django"

# What the example needs from celeriac itself: the Django fixup installed by the app, and the
# django-db scheme known to the backends.
PRECONDITION = """
import sys
import proj
from celeriac.contrib.django.fixup import is_installed
from celeriac.backends import backend_from_url
if not is_installed(proj.celery_app):
    sys.exit("the app does not install celeriac.contrib.django.fixup")
try:
    backend_from_url(proj.celery_app, "django-db")
except Exception as exc:
    sys.exit(f"result_backend='django-db' is not mapped: {exc!r}")
"""


def run_example_tests(tmp_path: Path, broker_url: str) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "proj.settings",
        "EXAMPLE_DATABASE": str(tmp_path / "db.sqlite3"),
        "EXAMPLE_TEST_DATABASE": str(tmp_path / "test.sqlite3"),
        "EXAMPLE_MAIL_DIR": str(tmp_path / "mail"),
        "CELERY_BROKER_URL": broker_url,
    }
    check = subprocess.run([sys.executable, "-c", PRECONDITION], cwd=EXAMPLE, env=env,
                           capture_output=True, text=True, timeout=60)
    if check.returncode:
        reason = f"not wired into celeriac yet: {check.stderr.strip().splitlines()[-1]}"
        if services_required():  # CI: never a silent skip
            pytest.fail(reason)
        pytest.skip(reason)
    done = subprocess.run([sys.executable, "manage.py", "test", "accounts", "--noinput"], cwd=EXAMPLE,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stderr


@pytest.mark.slow
def test_example_with_the_sqlite_broker(tmp_path: Path) -> None:
    run_example_tests(tmp_path, f"sqlite:///{tmp_path / 'broker.sqlite3'}")


@pytest.mark.slow
def test_example_with_redis(tmp_path: Path) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    import redis

    url = "redis://127.0.0.1:6379/13"  # this test's own database number
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        run_example_tests(tmp_path, url)
    finally:
        client.flushdb()
        client.close()
