"""Test helpers: real worker processes started through the CLI, and service checks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REQUIRE_SERVICES = os.environ.get("CELERIAC_REQUIRE_SERVICES") == "1"
CELERIAC = str(Path(sys.executable).with_name("celeriac"))


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def require_port(name: str, host: str, port: int) -> None:
    """Skip when a service is down; fail instead when CI demands every service."""
    if not port_open(host, port):
        message = f"{name} is not reachable on {host}:{port}"
        if REQUIRE_SERVICES:
            pytest.fail(message + " (CELERIAC_REQUIRE_SERVICES=1)")
        pytest.skip(message)


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05,
             message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def write_module(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


class Process:
    """A `celeriac ...` command running in its own process group, with its output in a file."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None,
                 name: str = "proc", program: list[str] | None = None, logdir: Path | None = None) -> None:
        self.args = [*(program or [CELERIAC]), *args]
        self.cwd = cwd
        self.logfile = (logdir or cwd) / f"{name}-{time.monotonic_ns()}.log"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(cwd)}
        full_env.update(env or {})
        with open(self.logfile, "wb") as out:
            self.proc = subprocess.Popen(self.args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                         env=full_env, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 15.0) -> None:
        try:
            wait_for(lambda: text in self.log or self.proc.poll() is not None, timeout, message=repr(text))
        except AssertionError:
            raise AssertionError(f"{text!r} not in log after {timeout}s:\n{self.log}") from None
        if text not in self.log:
            raise AssertionError(f"process exited ({self.proc.returncode}) before {text!r}:\n{self.log}")

    def send_signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send `sig` and wait; kill the whole group if it does not exit in time."""
        self.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"process did not stop within {timeout}s:\n{self.log}") from None

    def kill(self) -> None:
        """SIGKILL the process and everything in its group (pool children too)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


def start_worker(cwd: Path, app: str = "tasks", *args: str, env: dict[str, str] | None = None,
                 ready: bool = True) -> Process:
    """Start `celeriac -A app worker -l info ARGS` and wait until it says it is ready."""
    proc = Process(["-A", app, "worker", "-l", "info", *args], cwd, env, name="worker")
    if ready:
        proc.wait_for_log("ready.", timeout=30)
    return proc


def drain_envelopes(app: Any, queue: str = "celery") -> list[Any]:
    """Every envelope waiting in `queue` of `app`'s broker (acked), in delivery order."""
    sub = app.broker.subscribe([queue], prefetch=0)
    out = []
    while batch := sub.get_many(1000, 0.05):
        out += [d.envelope for d in batch]
        sub.ack_many(batch)
    sub.close()
    return out
