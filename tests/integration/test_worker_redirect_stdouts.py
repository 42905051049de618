"""What a task prints goes to the worker's log, at `worker_redirect_stdouts_level`, from the
solo pool and from a prefork child, stdout and stderr alike; `worker_redirect_stdouts = False`
leaves both alone (Celery 5.x: `worker_redirect_stdouts`, `worker_redirect_stdouts_level`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import start_worker, write_module

pytestmark = pytest.mark.slow


def write_tasks(project: Path, **settings: object) -> None:
    write_module(project, "tasks.py", f"""
        import sys
        from celeriac import Celery

        app = Celery('tasks', broker='sqlite:///{project}/broker.db', backend='sqlite:///{project}/results.db')
        app.conf.update({settings!r})

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
