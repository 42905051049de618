"""End to end: Django's test client posts the registration form, a real worker sends the mail.

Run with ``python manage.py test accounts``. The worker is a separate process
(``celeriac -A proj worker``) sharing the test database file and the broker with this one.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import TransactionTestCase, override_settings
from django.urls import reverse

from celeriac.contrib.django.models import IntervalSchedule, PeriodicTask, TaskResult

BASE_DIR = Path(settings.BASE_DIR)


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class WorkerProcess:
    """``celeriac -A proj worker`` on the test database, its output in a file."""

    def __init__(self, mail_dir):
        self.log = Path(tempfile.mkstemp(prefix="worker-", suffix=".log")[1])
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "proj.settings",
            "EXAMPLE_DATABASE": connection.settings_dict["NAME"],
            "EXAMPLE_MAIL_DIR": mail_dir,
            "PYTHONUNBUFFERED": "1",
        }
        command = [sys.executable, "-m", "celeriac", "-A", "proj", "worker", "-l", "info", "-P", "solo"]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: "ready." in self.output() or self.proc.poll() is not None, 60, "the worker")
        if self.proc.poll() is not None:
            raise AssertionError(f"the worker exited:\n{self.output()}")

    def output(self):
        return self.log.read_text(errors="replace")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


class RegistrationTests(TransactionTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mail_dir = tempfile.mkdtemp(prefix="mail-")
        cls.worker = WorkerProcess(cls.mail_dir)

    @classmethod
    def tearDownClass(cls):
        cls.worker.stop()
        cls.worker.log.unlink()
        shutil.rmtree(cls.mail_dir, ignore_errors=True)
        super().tearDownClass()

    def mails(self):
        return [path.read_text() for path in Path(self.mail_dir).glob("*.log")]

    def test_the_welcome_mail_is_sent_by_the_worker(self):
        started = time.monotonic()
        response = self.client.post(reverse("accounts:register"), {
            "username": "alice", "email": "alice@example.com", "password": "s3cret-pass"})
        self.assertEqual(response.status_code, 201)
        # The page answers without waiting for the mail.
        self.assertLess(time.monotonic() - started, 5)
        mails = wait_for(lambda: [m for m in self.mails() if "alice@example.com" in m], 30,
                         f"the welcome mail; worker log:\n{self.worker.output()}")
        self.assertIn("Hello alice, thanks for signing up.", mails[0])
        result = wait_for(lambda: TaskResult.objects.filter(status="SUCCESS").first(), 10, "the result")
        self.assertEqual(result.task_name, "accounts.tasks.send_welcome_email")
        self.assertEqual(result.result, '"alice@example.com"')

    def test_an_invalid_form_sends_nothing(self):
        response = self.client.post(reverse("accounts:register"), {"username": "bob", "email": "nope"})
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "Enter a valid email address.")
        time.sleep(1)
        self.assertFalse(TaskResult.objects.exists())

    @override_settings(DEBUG=True)
    def test_the_admin_shows_task_results(self):
        admin = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
        self.client.force_login(admin)
        self.client.post(reverse("accounts:register"), {
            "username": "carol", "email": "carol@example.com", "password": "s3cret-pass"})
        result = wait_for(lambda: TaskResult.objects.filter(status="SUCCESS").first(), 30, "the result")
        page = self.client.get(reverse("admin:celeriac_taskresult_changelist"))
        self.assertContains(page, result.task_id)
        self.assertEqual(self.client.get(reverse("admin:celeriac_periodictask_add")).status_code, 200)

    def test_a_periodic_task_added_in_the_admin_is_run_by_beat(self):
        from proj.celery import app

        from celeriac.beat import EmbeddedBeat

        User = get_user_model()
        dave = User.objects.create_user("dave", "dave@example.com", "s3cret-pass")
        admin = User.objects.create_superuser("admin", "admin@example.com", "pw")
        self.client.force_login(admin)
        every_second = IntervalSchedule.objects.create(every=1, period="seconds")
        response = self.client.post(reverse("admin:celeriac_periodictask_add"), {
            "name": "remind dave", "task": "accounts.tasks.send_welcome_email", "enabled": "on",
            "interval": every_second.pk, "args": f"[{dave.pk}]", "kwargs": "{}"})
        self.assertEqual(response.status_code, 302)
        beat = EmbeddedBeat(app, scheduler_cls="celeriac.contrib.django.schedulers:DatabaseScheduler")
        beat.start()
        try:
            result = wait_for(lambda: TaskResult.objects.filter(periodic_task_name="remind dave",
                                                                status="SUCCESS").first(),
                              30, f"the periodic run; worker log:\n{self.worker.output()}")
        finally:
            beat.stop()
        self.assertEqual(result.result, '"dave@example.com"')
        self.assertTrue([m for m in self.mails() if "dave@example.com" in m])
        self.assertGreaterEqual(PeriodicTask.objects.get(name="remind dave").total_run_count, 1)
