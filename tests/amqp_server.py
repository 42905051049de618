"""RabbitMQ for tests: the shared server on 127.0.0.1:5672 (guest/guest).

`require_amqp()` skips a test when RabbitMQ is down, but fails it when
``CELERIAC_REQUIRE_SERVICES=1`` (CI), so nothing is skipped silently where it counts.
Tests that stop or restart RabbitMQ use a private node instead (tests/rabbitmq_node.py).
`Cleanup` deletes the queues and exchanges a test made.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from typing import Any

import amqp
import pytest

HOST = "127.0.0.1"
PORT = 5672
URL = f"amqp://guest:guest@{HOST}:{PORT}//"


def services_required() -> bool:
    """True when service-backed tests must run (CI sets CELERIAC_REQUIRE_SERVICES=1)."""
    return os.environ.get("CELERIAC_REQUIRE_SERVICES") == "1"


def unavailable(reason: str) -> None:
    """Skip the test, or fail it when services are required."""
    if services_required():
        pytest.fail(f"{reason} (CELERIAC_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def connect(timeout: float = 2.0) -> amqp.Connection:
    """A plain py-amqp connection to the shared RabbitMQ (for checks beside the broker)."""
    connection = amqp.Connection(f"{HOST}:{PORT}", userid="guest", password="guest",
                                 virtual_host="/", connect_timeout=timeout)
    connection.connect()
    return connection


def require_amqp() -> str:
    """The URL of the shared RabbitMQ; skip (or fail in CI) when it is not running."""
    try:
        connect().close()
    except Exception as exc:
        unavailable(f"RabbitMQ is not running on {HOST}:{PORT}: {exc!r}")
    return URL


def unique(prefix: str = "t") -> str:
    """A queue/exchange name no other test uses."""
    return f"celeriac-test.{prefix}.{uuid.uuid4().hex[:10]}"


class Cleanup:
    """Remembers queues and exchanges to delete when the test ends."""

    def __init__(self) -> None:
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def queue(self, name: str) -> str:
        self.queues.append(name)
        return name

    def exchange(self, name: str) -> str:
        self.exchanges.append(name)
        return name

    def run(self) -> None:
        try:
            connection = connect()
        except Exception:  # RabbitMQ down (a failed restart test): nothing to clean
            return
        with contextlib.closing(connection):
            for name in self.queues:
                connection.channel().queue_delete(name)
            for name in self.exchanges:
                connection.channel().exchange_delete(name)


# -- rabbitmqctl ---------------------------------------------------------------------------


def rabbitmqctl(*args: str, timeout: float = 60.0) -> str:
    """Run rabbitmqctl; skip (or fail in CI) when it is not installed or not allowed."""
    if shutil.which("rabbitmqctl") is None:
        unavailable("rabbitmqctl is not installed")
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        unavailable(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def list_queues() -> dict[str, dict[str, Any]]:
    """Queues of vhost '/' by name: durable, auto_delete, exclusive, arguments (a dict), type."""
    out = rabbitmqctl("list_queues", "-q", "--formatter", "json",
                      "name", "durable", "auto_delete", "exclusive", "arguments", "type")
    queues = {}
    for row in json.loads(out or "[]"):
        row["arguments"] = {name: value for name, _type, value in row["arguments"]}
        row["exclusive"] = row["exclusive"] not in ("", False, "false")
        queues[row["name"]] = row
    return queues


def list_exchanges() -> dict[str, dict[str, Any]]:
    """Exchanges of vhost '/' by name: type, durable, auto_delete."""
    out = rabbitmqctl("list_exchanges", "-q", "--formatter", "json", "name", "type", "durable", "auto_delete")
    return {row["name"]: row for row in json.loads(out or "[]")}


def list_bindings() -> list[tuple[str, str, str, str]]:
    """Bindings as (source, destination, destination kind, routing key)."""
    out = rabbitmqctl("list_bindings", "-q", "--formatter", "json",
                      "source_name", "destination_name", "destination_kind", "routing_key")
    return [(r["source_name"], r["destination_name"], r["destination_kind"], r["routing_key"])
            for r in json.loads(out or "[]")]
