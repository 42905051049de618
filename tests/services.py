"""Gate tests on a network service: skip when it is down, fail when CI requires it.

`require_service("postgresql", "127.0.0.1", 5432)` returns quietly when something accepts TCP
connections on that port. Otherwise the test is skipped, unless the environment variable
``CELERIAC_REQUIRE_SERVICES=1`` is set (as `.ci/run` sets it): then the test fails, so a
service that CI forgot to start never turns into a silent skip.
"""

from __future__ import annotations

import os
import socket

import pytest

_checked: dict[tuple[str, int], bool] = {}


def service_is_up(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port (remembered per process)."""
    key = (host, port)
    if key not in _checked:
        try:
            with socket.create_connection(key, timeout=timeout):
                _checked[key] = True
        except OSError:
            _checked[key] = False
    return _checked[key]


def services_required() -> bool:
    return os.environ.get("CELERIAC_REQUIRE_SERVICES") == "1"


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or, with CELERIAC_REQUIRE_SERVICES=1, fail) the calling test if the port is closed."""
    if service_is_up(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if services_required():
        pytest.fail(f"{message}, and CELERIAC_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)
