from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Process


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Processes a test starts; any still running at the end are killed."""
    started: list[Process] = []
    yield started
    for proc in started:
        if proc.proc.poll() is None:
            proc.kill()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A scratch directory to hold task modules, on sys.path and as the cwd."""
    import sys

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    # Forget modules imported from this directory, so the next test's `tasks` is its own.
    for name in set(sys.modules) - before:
        origin = getattr(sys.modules[name], "__file__", None) or ""
        if origin.startswith(str(tmp_path)):
            del sys.modules[name]
