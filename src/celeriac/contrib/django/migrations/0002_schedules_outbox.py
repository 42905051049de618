"""Periodic tasks (edited in the admin, read by beat) and the transactional outbox."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

import celeriac.contrib.django.models


class Migration(migrations.Migration):

    dependencies = [
        ("celeriac", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name='IntervalSchedule',
            fields=[
                ('id', models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('every', models.PositiveIntegerField(help_text='Number of interval periods to wait before running the task again', verbose_name='number of periods')),
                ('period', models.CharField(choices=[('days', 'Days'), ('hours', 'Hours'), ('minutes', 'Minutes'), ('seconds', 'Seconds'), ('microseconds', 'Microseconds')], help_text='The type of period between task runs (example: days)', max_length=24, verbose_name='interval period')),
            ],
            options={
                'verbose_name': 'interval',
                'verbose_name_plural': 'intervals',
                'db_table': 'celeriac_intervalschedule',
                'ordering': ['period', 'every'],
            },
        ),
        migrations.CreateModel(
            name='CrontabSchedule',
            fields=[
                ('id', models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('minute', models.CharField(default='*', help_text='Cron Minutes to Run. Use "*" for "all". (Example: "0,30")', max_length=240, verbose_name='minute(s)')),
                ('hour', models.CharField(default='*', help_text='Cron Hours to Run. Use "*" for "all". (Example: "8,20")', max_length=96, verbose_name='hour(s)')),
                ('day_of_month', models.CharField(default='*', help_text='Cron Days Of The Month to Run. Use "*" for "all". (Example: "1,15")', max_length=124, verbose_name='day(s) of month')),
                ('month_of_year', models.CharField(default='*', help_text='Cron Months (1-12) Of The Year to Run. Use "*" for "all". (Example: "1,12")', max_length=64, verbose_name='month(s) of year')),
                ('day_of_week', models.CharField(default='*', help_text='Cron Days Of The Week to Run. Use "*" for "all", Sunday is 0 or 7, Monday is 1. (Example: "0,5")', max_length=64, verbose_name='day(s) of week')),
                ('timezone', models.CharField(default='UTC', help_text='Timezone to run the cron schedule in (example: Europe/Paris)', max_length=63, validators=[celeriac.contrib.django.models._validate_timezone], verbose_name='cron timezone')),
            ],
            options={
                'verbose_name': 'crontab',
                'verbose_name_plural': 'crontabs',
                'db_table': 'celeriac_crontabschedule',
                'ordering': ['month_of_year', 'day_of_month', 'day_of_week', 'hour', 'minute', 'timezone'],
            },
        ),
        migrations.CreateModel(
            name='PeriodicTask',
            fields=[
                ('id', models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(help_text='Short description of this periodic task', max_length=200, unique=True, verbose_name='name')),
                ('task', models.CharField(help_text='The name of the task to run (example: "proj.tasks.cleanup")', max_length=200, verbose_name='task name')),
                ('args', models.TextField(blank=True, default='[]', help_text='JSON encoded positional arguments (example: ["arg1", "arg2"])', verbose_name='positional arguments')),
                ('kwargs', models.TextField(blank=True, default='{}', help_text='JSON encoded keyword arguments (example: {"argument": "value"})', verbose_name='keyword arguments')),
                ('queue', models.CharField(blank=True, default=None, help_text='Queue defined in task_queues; leave empty for the default', max_length=200, null=True, verbose_name='queue')),
                ('priority', models.PositiveIntegerField(blank=True, default=None, help_text='Priority number between 0 and 255', null=True, verbose_name='priority')),
                ('expire_seconds', models.PositiveIntegerField(blank=True, help_text='Seconds after which a sent run that has not started is discarded', null=True, verbose_name='expires (seconds)')),
                ('one_off', models.BooleanField(default=False, help_text='Run once, then disable', verbose_name='one-off task')),
                ('start_time', models.DateTimeField(blank=True, help_text='Do not run before this time', null=True, verbose_name='start time')),
                ('enabled', models.BooleanField(default=True, verbose_name='enabled')),
                ('last_run_at', models.DateTimeField(blank=True, editable=False, null=True, verbose_name='last run at')),
                ('total_run_count', models.PositiveIntegerField(default=0, editable=False, verbose_name='total run count')),
                ('date_changed', models.DateTimeField(auto_now=True, verbose_name='last modified')),
                ('description', models.TextField(blank=True, verbose_name='description')),
                ('crontab', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, to='celeriac.crontabschedule', verbose_name='crontab schedule')),
                ('interval', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, to='celeriac.intervalschedule', verbose_name='interval schedule')),
            ],
            options={
                'verbose_name': 'periodic task',
                'verbose_name_plural': 'periodic tasks',
                'db_table': 'celeriac_periodictask',
                'ordering': ['name'],
            },
        ),
        migrations.CreateModel(
            name='PeriodicTasksChanged',
            fields=[
                ('ident', models.SmallIntegerField(default=1, primary_key=True, serialize=False, unique=True)),
                ('last_update', models.DateTimeField()),
            ],
            options={
                'verbose_name': 'schedule change marker',
                'db_table': 'celeriac_periodictaskschanged',
            },
        ),
        migrations.CreateModel(
            name='OutboxMessage',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('created', models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                ('task_id', models.CharField(db_index=True, max_length=255)),
                ('task_name', models.CharField(max_length=255)),
                ('body', models.BinaryField()),
                ('headers', models.JSONField()),
                ('properties', models.JSONField()),
                ('content_type', models.CharField(max_length=128)),
                ('content_encoding', models.CharField(max_length=64)),
                ('queue', models.CharField(max_length=255)),
                ('exchange', models.CharField(blank=True, default='', max_length=255)),
                ('routing_key', models.CharField(blank=True, default='', max_length=255)),
                ('exchange_type', models.CharField(default='direct', max_length=32)),
                ('not_before', models.FloatField(blank=True, help_text='ETA as a Unix time, for countdown/eta tasks', null=True)),
            ],
            options={
                'verbose_name': 'outbox message',
                'verbose_name_plural': 'outbox messages',
                'db_table': 'celeriac_outboxmessage',
                'ordering': ['id'],
            },
        ),
    ]
