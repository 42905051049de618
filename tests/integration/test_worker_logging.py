"""The worker's logging settings, through real workers (Celery 5.x's names and behaviour):

- what a task prints goes to the log at `worker_redirect_stdouts_level`, from the solo pool and
  from a prefork child, stdout and stderr alike; `worker_redirect_stdouts = False` leaves both;
- `get_task_logger` / `Task.logger` lines carry the task's name and id
  (`worker_task_log_format`); `worker_log_format` and `worker_log_datefmt` shape the rest;
- `worker_hijack_root_logger = False` keeps the handlers the application installed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import start_worker, write_module

pytestmark = pytest.mark.slow


def write_tasks(project: Path, prelude: str = "", **settings: object) -> None:
    write_module(project, "tasks.py", f"""
        import logging, sys
        from celeriac import Celery
        from celeriac.utils.log import get_task_logger
        {prelude}
        app = Celery('tasks', broker='sqlite:///{project}/broker.db', backend='sqlite:///{project}/results.db')
        app.conf.update({settings!r})
        logger = get_task_logger(__name__)

        @app.task
        def logs(x):
            logger.info('module logger says %s', x)
            logging.getLogger('app.plain').warning('plain logger says %s', x)
            return x

        @app.task(bind=True)
        def logs_bound(self, x):
            self.logger.warning('task logger says %s', x)
            return x

        @app.task
        def chatty(word):
            print('printed', word)
            print('to stderr', word, file=sys.stderr)
            return word
    """)


@pytest.mark.parametrize("pool", [["-P", "solo"], ["-P", "prefork", "-c", "1"]])
def test_prints_reach_the_log_at_the_configured_level(project: Path, processes: list, pool: list[str]) -> None:
    write_tasks(project, worker_redirect_stdouts_level="ERROR")
    import tasks  # type: ignore[import-not-found]

    worker = start_worker(project, "tasks", *pool)
    processes.append(worker)
    assert tasks.chatty.delay("one").get(timeout=20) == "one"
    worker.stop()
    assert "ERROR/" in worker.log and "] printed one" in worker.log
    lines = [line for line in worker.log.splitlines() if "printed one" in line or "to stderr one" in line]
    assert len(lines) == 2 and all("ERROR/" in line for line in lines), lines


def test_redirect_off_leaves_stdout_and_stderr_alone(project: Path, processes: list) -> None:
    write_tasks(project, worker_redirect_stdouts=False)
    import tasks  # type: ignore[import-not-found]

    worker = start_worker(project, "tasks", "-P", "solo")
    processes.append(worker)
    assert tasks.chatty.delay("two").get(timeout=20) == "two"
    worker.stop()
    lines = [line for line in worker.log.splitlines() if "printed two" in line or "to stderr two" in line]
    assert sorted(lines) == ["printed two", "to stderr two"]  # as printed, not as log records


def test_a_bad_level_is_a_clear_error(project: Path, processes: list) -> None:
    write_tasks(project, worker_redirect_stdouts_level="LOUD")
    worker = start_worker(project, "tasks", "-P", "solo", ready=False)
    processes.append(worker)
    assert worker.proc.wait(30) != 0
    assert "worker_redirect_stdouts_level: not a log level: 'LOUD'" in worker.log


def test_task_loggers_carry_the_task_name_and_id(project: Path, processes: list) -> None:
    write_tasks(project)
    import tasks  # type: ignore[import-not-found]

    worker = start_worker(project, "tasks", "-P", "solo")
    processes.append(worker)
    first, second = tasks.logs.delay(1), tasks.logs_bound.delay(2)
    assert (first.get(timeout=20), second.get(timeout=20)) == (1, 2)
    worker.stop()
    log = worker.log
    assert f"INFO/MainProcess] tasks.logs[{first.id}]: module logger says 1" in log
    assert f"WARNING/MainProcess] tasks.logs_bound[{second.id}]: task logger says 2" in log
    assert "WARNING/MainProcess] plain logger says 1" in log  # the process format: no task fields
    assert log.count("module logger says 1") == 1  # its own handler, not propagated twice


def test_log_format_and_date_format_settings(project: Path, processes: list) -> None:
    write_tasks(project, worker_log_format="%(asctime)s %(levelname)s|%(message)s",
                worker_task_log_format="%(asctime)s TASK %(task_id)s|%(message)s", worker_log_datefmt="%H:%M")
    import tasks  # type: ignore[import-not-found]

    worker = start_worker(project, "tasks", "-P", "solo")
    processes.append(worker)
    result = tasks.logs.delay(3)
    assert result.get(timeout=20) == 3
    worker.stop()
    assert re.search(rf"^\d\d:\d\d TASK {result.id}\|module logger says 3$", worker.log, re.M), worker.log
    assert re.search(r"^\d\d:\d\d WARNING\|plain logger says 3$", worker.log, re.M), worker.log


def test_hijack_off_keeps_the_applications_handlers(project: Path, processes: list) -> None:
    prelude = "logging.basicConfig(format='APP %(name)s %(message)s', stream=sys.stderr)"
    write_tasks(project, prelude, worker_hijack_root_logger=False)
    import tasks  # type: ignore[import-not-found]

    worker = start_worker(project, "tasks", "-P", "solo")
    processes.append(worker)
    assert tasks.logs.delay(4).get(timeout=20) == 4
    worker.stop()
    assert "APP app.plain plain logger says 4" in worker.log
    assert "] plain logger says 4" not in worker.log  # Celery's handler was not put in its place


def test_hijack_on_replaces_them(project: Path, processes: list) -> None:
    write_tasks(project, "logging.basicConfig(format='APP %(name)s %(message)s', stream=sys.stderr)")
    import tasks  # type: ignore[import-not-found]

    worker = start_worker(project, "tasks", "-P", "solo")
    processes.append(worker)
    assert tasks.logs.delay(5).get(timeout=20) == 5
    worker.stop()
    assert "WARNING/MainProcess] plain logger says 5" in worker.log
    assert "APP app.plain" not in worker.log
