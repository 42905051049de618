"""Shared helpers of the test_worker_* modules (no tests here).

`Project` writes a task module into a directory with the broker and backend URLs at its top
(SQLite files in that directory, or the shared Redis: broker db 3, results db 4), imports it
in the test process, and starts real `celeriac worker` processes on it. A module-scoped
fixture can keep one project, and its workers, for several tests.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Process, start_worker, wait_for

REDIS_BROKER_DB = 3
REDIS_RESULT_DB = 4


def redis_urls() -> tuple[str, str]:
    """The shared Redis's dbs 3 and 4, flushed; skips (or fails in CI) when Redis is down."""
    from tests.redis_server import redis_url, require_redis

    require_redis(REDIS_BROKER_DB)
    require_redis(REDIS_RESULT_DB)
    return redis_url(REDIS_BROKER_DB), redis_url(REDIS_RESULT_DB)


class Project:
    """A task module `name` in `root`, on `kind`: "sqlite", "redis", or "amqp" (results in Redis)."""

    def __init__(self, root: Path, name: str, source: str, kind: str = "sqlite") -> None:
        self.root = root
        self.name = name
        self.kind = kind
        if kind == "redis":
            self.broker_url, self.backend_url = redis_urls()
        elif kind == "amqp":  # the shared RabbitMQ: give queues and node names of your own
            from tests.amqp_server import require_amqp

            self.backend_url = redis_urls()[1]
            self.broker_url = require_amqp()
        else:
            self.broker_url = f"sqlite:///{root}/broker.db"
            self.backend_url = f"sqlite:///{root}/results.db"
        header = (f"BROKER = {self.broker_url!r}\nBACKEND = {self.backend_url!r}\n"
                  f"HERE = {str(root)!r}\n")
        (root / f"{name}.py").write_text(header + textwrap.dedent(source))
        self.processes: list[Process] = []
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        sys.modules.pop(name, None)
        self.module: Any = importlib.import_module(name)

    @property
    def app(self) -> Any:
        return self.module.app

    def worker(self, *args: str, env: dict[str, str] | None = None, ready: bool = True) -> Process:
        """Start `celeriac -A <module> worker -l info ARGS` in the project directory."""
        proc = start_worker(self.root, self.name, *args, env=env, ready=ready)
        self.processes.append(proc)
        return proc

    def celeriac(self, *args: str, timeout: float = 30) -> tuple[int, str]:
        """Run a `celeriac -A <module> ...` command; return (exit code, output)."""
        proc = Process(["-A", self.name, *args], self.root, name="cli")
        self.processes.append(proc)
        code = proc.proc.wait(timeout)
        return code, proc.log

    def marks(self, name: str = "marks") -> list[dict[str, Any]]:
        """JSON lines written by tasks with `mark(...)` (see MARK below)."""
        path = self.root / f"{name}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def wait_marks(self, count: int, name: str = "marks", timeout: float = 20) -> list[dict[str, Any]]:
        wait_for(lambda: len(self.marks(name)) >= count, timeout, message=f"{count} marks in {name}")
        return self.marks(name)

    def close(self) -> None:
        for proc in self.processes:
            if proc.proc.poll() is None:
                proc.kill()
        self.app.close()
        sys.modules.pop(self.name, None)
        if str(self.root) in sys.path:
            sys.path.remove(str(self.root))


#: Source to put at the top of a task module: `mark(**fields)` appends a JSON line.
MARK = """
import json, os, time, threading
_mark_lock = threading.Lock()

def mark(_file='marks', **fields):
    fields.setdefault('pid', os.getpid())
    fields.setdefault('t', time.time())
    with _mark_lock, open(os.path.join(HERE, _file + '.jsonl'), 'a') as f:
        f.write(json.dumps(fields, default=repr) + '\\n')
"""


def project_fixture(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                    name: str, source: str, kind: str = "sqlite") -> Project:
    """Build a Project in a fresh directory, closed at the end of the fixture's scope."""
    root = tmp_path_factory.mktemp(name)
    project = Project(root, f"{name}_{kind}", source, kind)
    request.addfinalizer(project.close)
    return project


def wait_state(result: Any, state: str, timeout: float = 15) -> None:
    wait_for(lambda: result.state == state, timeout, interval=0.02, message=f"state {state}")


def elapsed(since: float) -> float:
    return time.monotonic() - since
