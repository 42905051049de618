"""The embedded SQLite broker with several workers and clients at once: each task runs once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import Process, start_worker, wait_for, write_module

pytestmark = pytest.mark.slow


def test_many_workers_and_clients_share_one_file(project: Path, processes: list[Process]) -> None:
    write_module(project, "tasks.py", """
        import os
        from celeriac import Celery

        app = Celery('fleet')  # zero configuration: ./celeriac.db

        @app.task(bind=True)
        def mark(self, n):
            with open('runs.txt', 'a') as f:
                f.write(f'{self.request.id} {os.getpid()}\\n')
            return n
    """)
    write_module(project, "client.py", """
        import sys
        from tasks import mark
        results = [mark.delay(n) for n in range(400)]
        assert [r.get(timeout=60) for r in results] == list(range(400))
        print('ok', sys.argv[1])
    """)
    for name in ("a", "b", "c"):
        processes.append(start_worker(project, "tasks", "-P", "solo", "-n", f"{name}@%h"))
    clients = [subprocess.Popen([sys.executable, "client.py", str(i)], cwd=project,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
    for client in clients:
        out, err = client.communicate(timeout=120)
        assert client.returncode == 0, err
    runs = project / "runs.txt"
    wait_for(lambda: len(runs.read_text().splitlines()) >= 800, 30, message="800 runs")
    lines = runs.read_text().splitlines()
    ids = [line.split()[0] for line in lines]
    assert len(ids) == 800 and len(set(ids)) == 800  # none lost, none run twice
    assert len({line.split()[1] for line in lines}) == 3  # all three workers took part
