"""Models: task results (django-celery-results' tables), periodic tasks, and the outbox.

The three result models use django-celery-results' table names, columns and index names, so
a project can move from django-celery-results to celeriac (or run both) on the same tables:
``django_celery_results_taskresult``, ``..._groupresult``, ``..._chordcounter``.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from ... import states
from ...schedules import crontab, schedule

# -- results ---------------------------------------------------------------------------------


class TaskResult(models.Model):
    """One task's state and result (django-celery-results' ``TaskResult``)."""

    task_id = models.CharField(max_length=255, unique=True, verbose_name=_("Task ID"),
                               help_text=_("Celery ID for the Task that was run"))
    periodic_task_name = models.CharField(null=True, max_length=255,
                                          verbose_name=_("Periodic Task Name"),
                                          help_text=_("Name of the Periodic Task which was run"))
    task_name = models.CharField(null=True, max_length=255, verbose_name=_("Task Name"),
                                 help_text=_("Name of the Task which was run"))
    task_args = models.TextField(null=True, verbose_name=_("Task Positional Arguments"),
                                 help_text=_("JSON representation of the positional arguments "
                                             "used with the task"))
    task_kwargs = models.TextField(null=True, verbose_name=_("Task Named Arguments"),
                                   help_text=_("JSON representation of the named arguments "
                                               "used with the task"))
    status = models.CharField(max_length=50, default=states.PENDING, verbose_name=_("Task State"),
                              help_text=_("Current state of the task being run"))
    worker = models.CharField(max_length=100, default=None, null=True, verbose_name=_("Worker"),
                              help_text=_("Worker that executes the task"))
    content_type = models.CharField(max_length=128, verbose_name=_("Result Content Type"),
                                    help_text=_("Content type of the result data"))
    content_encoding = models.CharField(max_length=64, verbose_name=_("Result Encoding"),
                                        help_text=_("The encoding used to save the task result data"))
    result = models.TextField(null=True, default=None, editable=False, verbose_name=_("Result Data"),
                              help_text=_("The data returned by the task.  "
                                          "Use content_encoding and content_type fields to read."))
    date_created = models.DateTimeField(auto_now_add=True, verbose_name=_("Created DateTime"),
                                        help_text=_("Datetime field when the task result was created in UTC"))
    date_started = models.DateTimeField(null=True, default=None, verbose_name=_("Started DateTime"),
                                        help_text=_("Datetime field when the task was started in UTC"))
    date_done = models.DateTimeField(auto_now=True, verbose_name=_("Completed DateTime"),
                                     help_text=_("Datetime field when the task was completed in UTC"))
    traceback = models.TextField(blank=True, null=True, verbose_name=_("Traceback"),
                                 help_text=_("Text of the traceback if the task generated one"))
    meta = models.TextField(null=True, default=None, editable=False,
                            verbose_name=_("Task Meta Information"),
                            help_text=_("JSON meta information about the task, "
                                        "such as information on child tasks"))

    class Meta:
        db_table = "django_celery_results_taskresult"
        ordering = ["-date_done"]
        verbose_name = _("task result")
        verbose_name_plural = _("task results")
        # django-celery-results' index names, so both apps agree on the schema.
        indexes = [
            models.Index(fields=["task_name"], name="django_cele_task_na_08aec9_idx"),
            models.Index(fields=["status"], name="django_cele_status_9b6201_idx"),
            models.Index(fields=["worker"], name="django_cele_worker_d54dd8_idx"),
            models.Index(fields=["date_created"], name="django_cele_date_cr_f04a50_idx"),
            models.Index(fields=["date_done"], name="django_cele_date_do_f59aad_idx"),
            models.Index(fields=["periodic_task_name"], name="django_cele_periodi_1993cf_idx"),
        ]

    def __str__(self) -> str:
        return f"<Task: {self.task_id} ({self.status})>"


class GroupResult(models.Model):
    """A saved GroupResult (django-celery-results' ``GroupResult``)."""

    group_id = models.CharField(max_length=255, unique=True, verbose_name=_("Group ID"),
                                help_text=_("Celery ID for the Group that was run"))
    date_created = models.DateTimeField(auto_now_add=True, verbose_name=_("Created DateTime"),
                                        help_text=_("Datetime field when the group result was created in UTC"))
    date_done = models.DateTimeField(auto_now=True, verbose_name=_("Completed DateTime"),
                                     help_text=_("Datetime field when the group was completed in UTC"))
    content_type = models.CharField(max_length=128, verbose_name=_("Result Content Type"),
                                    help_text=_("Content type of the result data"))
    content_encoding = models.CharField(max_length=64, verbose_name=_("Result Encoding"),
                                        help_text=_("The encoding used to save the task result data"))
    result = models.TextField(null=True, default=None, editable=False, verbose_name=_("Result Data"),
                              help_text=_("The data returned by the task.  "
                                          "Use content_encoding and content_type fields to read."))

    class Meta:
        db_table = "django_celery_results_groupresult"
        ordering = ["-date_done"]
        verbose_name = _("group result")
        verbose_name_plural = _("group results")
        indexes = [
            models.Index(fields=["date_created"], name="django_cele_date_cr_bd6c1d_idx"),
            models.Index(fields=["date_done"], name="django_cele_date_do_caae0e_idx"),
        ]

    def __str__(self) -> str:
        return f"<Group: {self.group_id}>"


class ChordCounter(models.Model):
    """A running chord's header (django-celery-results' ``ChordCounter``).

    ``sub_tasks`` is the JSON list of the header's result tuples (``[[task_id, null], null]``);
    for a chord started by celeriac the slots fill in as header tasks finish. ``count`` is
    how many header tasks are still to finish.
    """

    group_id = models.CharField(max_length=255, unique=True, verbose_name=_("Group ID"),
                                help_text=_("Celery ID for the Chord header group"))
    sub_tasks = models.TextField(help_text=_("JSON serialized list of task result tuples. "
                                             "use .group_result() to decode"))
    count = models.PositiveIntegerField(help_text=_("Starts at len(chord header) and decrements "
                                                    "after each task is finished"))

    class Meta:
        db_table = "django_celery_results_chordcounter"

    def __str__(self) -> str:
        return f"<ChordCounter: {self.group_id} ({self.count} to go)>"


# -- periodic tasks ----------------------------------------------------------------------------

PERIOD_CHOICES = [
    ("days", _("Days")),
    ("hours", _("Hours")),
    ("minutes", _("Minutes")),
    ("seconds", _("Seconds")),
    ("microseconds", _("Microseconds")),
]


class IntervalSchedule(models.Model):
    """Run every N days, hours, minutes, seconds or microseconds."""

    every = models.PositiveIntegerField(_("number of periods"),
                                        help_text=_("Number of interval periods to wait before running the task again"))
    period = models.CharField(_("interval period"), max_length=24, choices=PERIOD_CHOICES,
                              help_text=_("The type of period between task runs (example: days)"))

    class Meta:
        db_table = "celeriac_intervalschedule"
        verbose_name = _("interval")
        verbose_name_plural = _("intervals")
        ordering = ["period", "every"]

    def __str__(self) -> str:
        unit = self.period[:-1] if self.every == 1 else self.period
        return f"every {self.every} {unit}"

    def clean(self) -> None:
        if not self.every:
            raise ValidationError({"every": _("The interval must be at least 1.")})

    def schedule(self, app: Any = None) -> schedule:
        """The celeriac schedule this row describes."""
        return schedule(timedelta(**{self.period: self.every}), app=app)


def _validate_timezone(value: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(_("Unknown time zone: %(tz)s"), params={"tz": value}) from exc


class CrontabSchedule(models.Model):
    """A cron expression (Celery's `crontab` fields), in a time zone."""

    minute = models.CharField(_("minute(s)"), max_length=240, default="*",
                              help_text=_('Cron Minutes to Run. Use "*" for "all". (Example: "0,30")'))
    hour = models.CharField(_("hour(s)"), max_length=96, default="*",
                            help_text=_('Cron Hours to Run. Use "*" for "all". (Example: "8,20")'))
    day_of_month = models.CharField(_("day(s) of month"), max_length=124, default="*",
                                    help_text=_('Cron Days Of The Month to Run. Use "*" for "all". (Example: "1,15")'))
    month_of_year = models.CharField(_("month(s) of year"), max_length=64, default="*",
                                     help_text=_('Cron Months (1-12) Of The Year to Run. Use "*" for "all". (Example: "1,12")'))
    day_of_week = models.CharField(_("day(s) of week"), max_length=64, default="*",
                                   help_text=_('Cron Days Of The Week to Run. Use "*" for "all", Sunday is 0 or 7, '
                                               'Monday is 1. (Example: "0,5")'))
    timezone = models.CharField(_("cron timezone"), max_length=63, default="UTC",
                                validators=[_validate_timezone],
                                help_text=_("Timezone to run the cron schedule in (example: Europe/Paris)"))

    class Meta:
        db_table = "celeriac_crontabschedule"
        verbose_name = _("crontab")
        verbose_name_plural = _("crontabs")
        ordering = ["month_of_year", "day_of_month", "day_of_week", "hour", "minute", "timezone"]

    def __str__(self) -> str:
        return (f"{self.minute} {self.hour} {self.day_of_month} {self.month_of_year} "
                f"{self.day_of_week} (m/h/dM/MY/d) {self.timezone}")

    def schedule(self, app: Any = None) -> crontab:
        """The celeriac crontab this row describes."""
        return crontab(minute=self.minute, hour=self.hour, day_of_week=self.day_of_week,
                       day_of_month=self.day_of_month, month_of_year=self.month_of_year,
                       app=app, tz=ZoneInfo(self.timezone))

    def clean(self) -> None:
        try:
            self.schedule()
        except (ValueError, ZoneInfoNotFoundError) as exc:
            raise ValidationError(str(exc)) from exc


def _json_of(value: str, kind: type, field: str) -> Any:
    try:
        data = json.loads(value or ("[]" if kind is list else "{}"))
    except ValueError as exc:
        raise ValidationError({field: _("Enter valid JSON: %(err)s") % {"err": exc}}) from exc
    if not isinstance(data, kind):
        raise ValidationError({field: _("Enter a JSON %(kind)s.") % {"kind": "list" if kind is list else "object"}})
    return data


class PeriodicTask(models.Model):
    """A task that beat sends on an interval or crontab schedule."""

    name = models.CharField(_("name"), max_length=200, unique=True,
                            help_text=_("Short description of this periodic task"))
    task = models.CharField(_("task name"), max_length=200,
                            help_text=_('The name of the task to run (example: "proj.tasks.cleanup")'))
    interval = models.ForeignKey(IntervalSchedule, on_delete=models.CASCADE, null=True, blank=True,
                                 verbose_name=_("interval schedule"))
    crontab = models.ForeignKey(CrontabSchedule, on_delete=models.CASCADE, null=True, blank=True,
                                verbose_name=_("crontab schedule"))
    args = models.TextField(_("positional arguments"), blank=True, default="[]",
                            help_text=_('JSON encoded positional arguments (example: ["arg1", "arg2"])'))
    kwargs = models.TextField(_("keyword arguments"), blank=True, default="{}",
                              help_text=_('JSON encoded keyword arguments (example: {"argument": "value"})'))
    queue = models.CharField(_("queue"), max_length=200, blank=True, null=True, default=None,
                             help_text=_("Queue defined in task_queues; leave empty for the default"))
    priority = models.PositiveIntegerField(_("priority"), blank=True, null=True, default=None,
                                           help_text=_("Priority number between 0 and 255"))
    expire_seconds = models.PositiveIntegerField(_("expires (seconds)"), blank=True, null=True,
                                                 help_text=_("Seconds after which a sent run that has not "
                                                             "started is discarded"))
    one_off = models.BooleanField(_("one-off task"), default=False,
                                  help_text=_("Run once, then disable"))
    start_time = models.DateTimeField(_("start time"), blank=True, null=True,
                                      help_text=_("Do not run before this time"))
    enabled = models.BooleanField(_("enabled"), default=True)
    last_run_at = models.DateTimeField(_("last run at"), blank=True, null=True, editable=False)
    total_run_count = models.PositiveIntegerField(_("total run count"), default=0, editable=False)
    date_changed = models.DateTimeField(_("last modified"), auto_now=True)
    description = models.TextField(_("description"), blank=True)

    class Meta:
        db_table = "celeriac_periodictask"
        verbose_name = _("periodic task")
        verbose_name_plural = _("periodic tasks")
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name}: {self.schedule_row or _('no schedule')}"

    @property
    def schedule_row(self) -> IntervalSchedule | CrontabSchedule | None:
        return self.interval or self.crontab

    def clean(self) -> None:
        if bool(self.interval_id) == bool(self.crontab_id):
            raise ValidationError(_("Choose exactly one schedule: an interval or a crontab."))
        _json_of(self.args, list, "args")
        _json_of(self.kwargs, dict, "kwargs")
        if self.priority is not None and self.priority > 255:
            raise ValidationError({"priority": _("The priority is between 0 and 255.")})

    def entry(self, app: Any = None) -> dict[str, Any]:
        """This task as a `beat_schedule` entry (`app`: whose clock the schedule uses)."""
        # As django-celery-beat: the worker's result row names the periodic task.
        options: dict[str, Any] = {"headers": {"periodic_task_name": self.name}}
        if self.queue:
            options["queue"] = self.queue
        if self.priority is not None:
            options["priority"] = self.priority
        if self.expire_seconds:
            options["expires"] = self.expire_seconds
        row = self.schedule_row
        return {
            "task": self.task,
            "schedule": row.schedule(app) if row is not None else None,
            "args": tuple(_json_of(self.args, list, "args")),
            "kwargs": _json_of(self.kwargs, dict, "kwargs"),
            "options": options,
            "last_run_at": self.last_run_at,
            "total_run_count": self.total_run_count,
            "one_off": self.one_off,
            "start_time": self.start_time,
        }


class PeriodicTasksChanged(models.Model):
    """One row whose ``last_update`` moves whenever a schedule is edited: beat polls it."""

    ident = models.SmallIntegerField(default=1, primary_key=True, unique=True)
    last_update = models.DateTimeField(null=False)

    class Meta:
        db_table = "celeriac_periodictaskschanged"
        verbose_name = _("schedule change marker")

    @classmethod
    def touch(cls, using: str | None = None) -> None:
        """Record that the schedule changed now."""
        cls.objects.using(using).update_or_create(ident=1, defaults={"last_update": timezone.now()})

    @classmethod
    def last_change(cls, using: str | None = None) -> Any:
        row = cls.objects.using(using).filter(ident=1).first()
        return row.last_update if row is not None else None

    def __str__(self) -> str:
        return f"schedule changed at {self.last_update}"


# -- the outbox ----------------------------------------------------------------------------------


class OutboxMessage(models.Model):
    """A task message written in the sender's transaction, relayed to the broker after commit.

    The row holds the message as it will travel (body, headers, properties, route), so the
    relay publishes exactly what the sender built.
    """

    id = models.BigAutoField(primary_key=True)
    created = models.DateTimeField(default=timezone.now, db_index=True)
    task_id = models.CharField(max_length=255, db_index=True)
    task_name = models.CharField(max_length=255)
    body = models.BinaryField()
    headers = models.JSONField()
    properties = models.JSONField()
    content_type = models.CharField(max_length=128)
    content_encoding = models.CharField(max_length=64)
    queue = models.CharField(max_length=255)
    exchange = models.CharField(max_length=255, blank=True, default="")
    routing_key = models.CharField(max_length=255, blank=True, default="")
    exchange_type = models.CharField(max_length=32, default="direct")
    not_before = models.FloatField(null=True, blank=True,
                                   help_text=_("ETA as a Unix time, for countdown/eta tasks"))

    class Meta:
        db_table = "celeriac_outboxmessage"
        ordering = ["id"]
        verbose_name = _("outbox message")
        verbose_name_plural = _("outbox messages")

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}]"
