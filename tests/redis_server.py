"""Redis for tests: the shared server on 127.0.0.1:6379, or a private one started by a test.

`require_redis(db)` gives a client of the shared server on a flushed db; it skips the test when
Redis is absent, but fails it when ``CELERIAC_REQUIRE_SERVICES=1`` (CI), so nothing is skipped
silently where it counts. `RedisServer` starts an own ``redis-server`` on a free port (password,
append-only file) and stops it by its pid, for tests that restart Redis.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

HOST = "127.0.0.1"
PORT = 6379


def services_required() -> bool:
    """True when service-backed tests must run (CI sets CELERIAC_REQUIRE_SERVICES=1)."""
    return os.environ.get("CELERIAC_REQUIRE_SERVICES") == "1"


def unavailable(reason: str) -> None:
    """Skip the test, or fail it when services are required."""
    if services_required():
        pytest.fail(f"{reason} (CELERIAC_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def redis_url(db: int) -> str:
    """URL of the shared server's db `db`."""
    return f"redis://{HOST}:{PORT}/{db}"


def require_redis(db: int) -> redis.Redis:
    """A client of the shared Redis on db `db`, flushed; skip (or fail in CI) if it is down.

    Use dbs 10-15 in broker/backend tests; 0-2 belong to others.
    """
    client = redis.Redis(host=HOST, port=PORT, db=db, socket_connect_timeout=2)
    try:
        redis.Redis(host=HOST, port=PORT, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)).ping()
    except redis.ConnectionError as exc:
        unavailable(f"Redis is not running on {HOST}:{PORT}: {exc}")
    client.flushdb()
    return client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None = None, timeout: float = 10.0) -> None:
    """Wait until something listens on `port` (and `process`, if given, is still alive)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return
        except OSError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class RedisServer:
    """A private ``redis-server`` on a free port, stopped by pid.

    Args:
        password: Start with ``--requirepass``.
        appendonly: Persist every write (``--appendonly yes``) so a restart keeps the data.
        extra: More ``redis-server`` arguments, e.g. ``["--port", "0", "--tls-port", ...]``.
    """

    def __init__(self, password: str | None = None, appendonly: bool = False, extra: list[str] | None = None) -> None:
        if shutil.which("redis-server") is None:
            unavailable("redis-server is not installed")
        self.port = free_port()
        self.password = password
        self.appendonly = appendonly
        self.extra = extra or []
        self.dir = tempfile.mkdtemp(prefix="celeriac-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, db=db, password=self.password)

    def start(self) -> RedisServer:
        args = ["redis-server", "--port", str(self.port), "--bind", HOST, "--dir", self.dir,
                "--save", "", "--appendonly", "yes" if self.appendonly else "no"]
        if self.appendonly:
            args += ["--appendfsync", "always"]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args + self.extra, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        wait_for_port(self.port, self.process, timeout)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server by its pid (SIGTERM saves the append-only file; SIGKILL does not)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()
