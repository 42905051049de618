"""The admin pages render for a logged-in superuser, and periodic tasks are editable there."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from celeriac import Celery
from celeriac.contrib.django.backend import DatabaseBackend
from celeriac.contrib.django.models import (
    CrontabSchedule,
    GroupResult,
    IntervalSchedule,
    OutboxMessage,
    PeriodicTask,
    PeriodicTasksChanged,
    TaskResult,
)


@pytest.fixture
def client(sqlite_alias: str) -> Iterator[Client]:
    user = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
    client = Client()
    client.force_login(user)
    yield client
    user.delete()


@pytest.fixture
def stored() -> Iterator[dict[str, object]]:
    app = Celery("admintests", broker="memory://", backend="memory://", set_as_current=False,
                 result_extended=True)
    backend = DatabaseBackend(app)
    task_id, group_id = str(uuid.uuid4()), str(uuid.uuid4())
    backend.mark_as_failure(task_id, ValueError("<b>not html</b>"), traceback="Traceback (most recent call last): ...")
    backend.save_group(group_id, [[group_id, None], [[[task_id, None], None]]])
    every = IntervalSchedule.objects.create(every=10, period="seconds")
    cron = CrontabSchedule.objects.create(minute="0", hour="*/2", timezone="Europe/Paris")
    periodic = PeriodicTask.objects.create(name="ping", task="proj.tasks.ping", interval=every,
                                           args="[1]", kwargs='{"a": 2}')
    outbox = OutboxMessage.objects.create(task_id="t1", task_name="proj.tasks.ping", body=b"[[], {}, {}]",
                                          headers={"id": "t1", "task": "proj.tasks.ping"}, properties={},
                                          content_type="application/json", content_encoding="utf-8",
                                          queue="celery", routing_key="celery")
    yield {"task": TaskResult.objects.get(task_id=task_id), "group": GroupResult.objects.get(group_id=group_id),
           "interval": every, "crontab": cron, "periodic": periodic, "outbox": outbox}
    app.close()


PAGES = ["taskresult", "groupresult", "intervalschedule", "crontabschedule", "periodictask", "outboxmessage"]
OBJECTS = {"taskresult": "task", "groupresult": "group", "intervalschedule": "interval",
           "crontabschedule": "crontab", "periodictask": "periodic", "outboxmessage": "outbox"}


@pytest.mark.parametrize("model", PAGES)
def test_changelist_and_change_pages_render(client: Client, stored: dict[str, object], model: str) -> None:
    response = client.get(reverse(f"admin:celeriac_{model}_changelist"))
    assert response.status_code == 200
    obj = stored[OBJECTS[model]]
    response = client.get(reverse(f"admin:celeriac_{model}_change", args=[obj.pk]))  # type: ignore[attr-defined]
    assert response.status_code == 200


def test_task_results_are_listed_and_escaped(client: Client, stored: dict[str, object]) -> None:
    page = client.get(reverse("admin:celeriac_taskresult_changelist")).content.decode()
    assert stored["task"].task_id in page  # type: ignore[attr-defined]
    detail = client.get(reverse("admin:celeriac_taskresult_change", args=[stored["task"].pk])).content.decode()  # type: ignore[attr-defined]
    assert "<b>not html</b>" not in detail and "&lt;b&gt;not html&lt;/b&gt;" in detail
    assert client.get(reverse("admin:celeriac_taskresult_add")).status_code == 403


def test_admin_index_lists_the_app(client: Client, stored: dict[str, object]) -> None:
    page = client.get(reverse("admin:index")).content.decode()
    assert "Celeriac" in page and "Periodic tasks" in page and "Task results" in page


def test_a_periodic_task_added_in_the_admin_marks_the_schedule_changed(client: Client) -> None:
    every = IntervalSchedule.objects.create(every=5, period="minutes")
    before = PeriodicTasksChanged.last_change()
    response = client.post(reverse("admin:celeriac_periodictask_add"), {
        "name": "cleanup", "task": "proj.tasks.cleanup", "enabled": "on", "interval": every.pk,
        "args": "[]", "kwargs": "{}", "description": "",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    assert PeriodicTask.objects.get(name="cleanup").interval == every
    assert PeriodicTasksChanged.last_change() != before


def test_the_admin_refuses_a_task_without_exactly_one_schedule(client: Client) -> None:
    response = client.post(reverse("admin:celeriac_periodictask_add"), {
        "name": "broken", "task": "proj.tasks.x", "args": "[]", "kwargs": "{}"})
    assert response.status_code == 200
    assert "exactly one schedule" in response.content.decode()
    every = IntervalSchedule.objects.create(every=5, period="minutes")
    response = client.post(reverse("admin:celeriac_periodictask_add"), {
        "name": "broken", "task": "proj.tasks.x", "interval": every.pk, "args": "{", "kwargs": "{}"})
    assert "Enter valid JSON" in response.content.decode()
    assert not PeriodicTask.objects.filter(name="broken").exists()


def test_enable_and_disable_actions(client: Client, stored: dict[str, object]) -> None:
    periodic = stored["periodic"]
    url = reverse("admin:celeriac_periodictask_changelist")
    client.post(url, {"action": "disable_tasks", "_selected_action": [periodic.pk]})  # type: ignore[attr-defined]
    assert not PeriodicTask.objects.get(pk=periodic.pk).enabled  # type: ignore[attr-defined]
    client.post(url, {"action": "enable_tasks", "_selected_action": [periodic.pk]})  # type: ignore[attr-defined]
    assert PeriodicTask.objects.get(pk=periodic.pk).enabled  # type: ignore[attr-defined]
