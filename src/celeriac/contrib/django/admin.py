"""Admin pages: task and group results (read-only), periodic tasks and schedules, the outbox."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .models import (
    CrontabSchedule,
    GroupResult,
    IntervalSchedule,
    OutboxMessage,
    PeriodicTask,
    PeriodicTasksChanged,
    TaskResult,
)


class _ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by workers: viewable and deletable, not addable or editable."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(TaskResult)
class TaskResultAdmin(_ReadOnlyAdmin):
    date_hierarchy = "date_done"
    list_display = ("task_id", "periodic_task_name", "task_name", "date_done", "status", "worker")
    list_filter = ("status", "date_done", "periodic_task_name", "task_name", "worker")
    search_fields = ("task_name", "task_id", "status", "task_args", "task_kwargs")
    fieldsets = (
        (None, {"fields": ("task_id", "task_name", "periodic_task_name", "status", "worker",
                           "content_type", "content_encoding")}),
        (_("Parameters"), {"fields": ("task_args", "task_kwargs")}),
        (_("Result"), {"fields": ("result", "date_created", "date_started", "date_done",
                                  "traceback", "meta")}),
    )


@admin.register(GroupResult)
class GroupResultAdmin(_ReadOnlyAdmin):
    date_hierarchy = "date_done"
    list_display = ("group_id", "date_done")
    list_filter = ("date_done",)
    search_fields = ("group_id",)


@admin.register(IntervalSchedule)
class IntervalScheduleAdmin(admin.ModelAdmin):
    list_display = ("__str__", "every", "period")


@admin.register(CrontabSchedule)
class CrontabScheduleAdmin(admin.ModelAdmin):
    list_display = ("__str__", "minute", "hour", "day_of_month", "month_of_year", "day_of_week",
                    "timezone")


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(admin.ModelAdmin):
    list_display = ("name", "task", "schedule_row", "enabled", "one_off", "last_run_at",
                    "total_run_count")
    list_filter = ("enabled", "one_off", "task", "date_changed")
    search_fields = ("name", "task", "description")
    readonly_fields = ("last_run_at", "total_run_count", "date_changed")
    actions = ("enable_tasks", "disable_tasks", "run_tasks")
    fieldsets = (
        (None, {"fields": ("name", "task", "enabled", "description")}),
        (_("Schedule"), {"fields": ("interval", "crontab", "start_time", "one_off")}),
        (_("Arguments"), {"fields": ("args", "kwargs")}),
        (_("Execution options"), {"fields": ("queue", "priority", "expire_seconds")}),
        (_("Runs"), {"fields": ("last_run_at", "total_run_count", "date_changed")}),
    )

    @admin.display(description=_("schedule"))
    def schedule_row(self, obj: PeriodicTask) -> str:
        return str(obj.schedule_row or "-")

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet[PeriodicTask], value: bool) -> None:
        count = queryset.update(enabled=value)
        PeriodicTasksChanged.touch()  # update() sends no signal
        self.message_user(request, ngettext("%(n)d task updated.", "%(n)d tasks updated.", count) % {"n": count})

    @admin.action(description=_("Enable selected tasks"))
    def enable_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description=_("Disable selected tasks"))
    def disable_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        self._set_enabled(request, queryset, False)

    @admin.action(description=_("Run selected tasks now"))
    def run_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        from ..._state import get_current_app

        app = get_current_app()
        ids = []
        for row in queryset:
            entry = row.entry()
            result = app.send_task(row.task, args=entry["args"], kwargs=entry["kwargs"],
                                   **entry["options"])
            ids.append(result.id)
        self.message_user(request, _("Sent: %(ids)s") % {"ids": ", ".join(ids) or "-"}, messages.SUCCESS)


@admin.register(OutboxMessage)
class OutboxMessageAdmin(_ReadOnlyAdmin):
    """Messages committed but not relayed yet (normally empty: rows leave right after commit)."""

    list_display = ("id", "task_name", "task_id", "queue", "created")
    list_filter = ("task_name", "queue")
    search_fields = ("task_id", "task_name")
    exclude = ("body",)
    readonly_fields = ("headers_text",)
    actions = ("relay_now",)

    @admin.display(description=_("headers"))
    def headers_text(self, obj: OutboxMessage) -> str:
        return json.dumps(obj.headers, indent=2, default=str)

    @admin.action(description=_("Relay selected messages to the broker now"))
    def relay_now(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> None:
        from ..._state import get_current_app
        from .outbox import relay

        count = relay(get_current_app(), ids=list(queryset.values_list("pk", flat=True)),
                      using=queryset.db)
        self.message_user(request, ngettext("%(n)d message relayed.", "%(n)d messages relayed.",
                                            count) % {"n": count})
