"""Tasks are typed: a type checker flags wrong arguments to delay() and knows get()'s type."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def test_mypy_checks_task_calls(tmp_path: Path) -> None:
    source = tmp_path / "typed_tasks.py"
    source.write_text(textwrap.dedent("""
        from celeriac import Celery, Task

        app = Celery("typed", broker="memory://")

        @app.task
        def add(a: int, b: int) -> int:
            return a + b

        @app.task(bind=True)
        def bound(self: Task, name: str) -> str:
            return name

        ok: int = add.delay(1, 2).get()
        also: str = bound.delay("x").get()
        direct: int = add(1, 2)
        wrong = add.delay("x", 2)
        wrong_result: str = add.delay(1, 2).get()
        wrong_bound = bound.delay(3)
    """))
    out = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--hide-error-context",
                          "--no-error-summary", str(source)], capture_output=True, text=True,
                         timeout=300)
    errors = [line for line in out.stdout.splitlines() if ": error:" in line]
    lines = sorted(int(line.split(":")[1]) for line in errors)
    assert lines == [17, 18, 19], out.stdout
