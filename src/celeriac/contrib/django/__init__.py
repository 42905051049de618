"""celeriac for Django: add ``"celeriac.contrib.django"`` to INSTALLED_APPS.

It brings:

- the ``django-db`` result backend (`backend.DatabaseBackend`), storing results in the
  tables django-celery-results uses, with their migrations and an admin;
- periodic tasks kept in the database and edited in the admin, read by beat through
  `schedule.DatabaseScheduleSource`;
- `task.DjangoTask` with ``delay_on_commit()`` / ``apply_async_on_commit()``, and the
  transactional outbox (`outbox`);
- `fixup.install`, which the app runs when ``DJANGO_SETTINGS_MODULE`` is set: Django is set
  up before task modules are imported, and database connections are not reused across
  tasks or forks.

Nothing here is imported by celeriac itself unless Django is in use.
"""
