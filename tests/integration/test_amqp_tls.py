"""amqps:// with `broker_use_ssl` against a real RabbitMQ TLS listener.

A private RabbitMQ node (tests/rabbitmq_node.py) listens with TLS and requires a client
certificate; the certificates are made for the test with openssl. A worker process and a
client both connect with ``amqps://`` and Celery's dict form of ``broker_use_ssl``
(ca_certs, certfile, keyfile, cert_reqs), and results come back over ``rpc://`` on the same
TLS listener. A client or worker with the wrong CA, or without a client certificate, gets a
clear error at once instead of retrying into a hang.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac import Celery
from celeriac.exceptions import OperationalError
from tests.helpers import Process, start_worker, write_module

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from rabbitmq_node import RabbitMQNode, running_node  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def node() -> Iterator[RabbitMQNode]:
    with running_node(tls=True) as started:
        yield started


def ssl_options(node: RabbitMQNode, *, ca: Path | None = None, client_cert: bool = True) -> dict[str, object]:
    certs = node.certificates
    assert certs is not None
    options: dict[str, object] = {"ca_certs": str(ca or certs.ca), "cert_reqs": ssl.CERT_REQUIRED}
    if client_cert:
        options.update(certfile=str(certs.client_cert), keyfile=str(certs.client_key))
    return options


def write_app(project: Path, node: RabbitMQNode, queue: str, ssl_dict: dict[str, object]) -> None:
    write_module(project, "tlsapp.py", f"""
        import ssl
        from celeriac import Celery

        app = Celery('tlsapp', broker={node.tls_url!r}, backend='rpc://')
        app.conf.broker_use_ssl = {{
            'ca_certs': {ssl_dict['ca_certs']!r},
            'certfile': {ssl_dict.get('certfile')!r},
            'keyfile': {ssl_dict.get('keyfile')!r},
            'cert_reqs': ssl.CERT_REQUIRED,
        }}
        app.conf.task_default_queue = {queue!r}
        app.conf.broker_connection_max_retries = 3

        @app.task
        def add(x, y):
            return x + y
    """)


def ssl_connections(node: RabbitMQNode) -> list[str]:
    """`ssl` of each client connection to the node (True / False)."""
    done = node.ctl("list_connections", "-q", "--formatter", "json", "ssl")
    assert done.returncode == 0, done.stderr
    return [row["ssl"] for row in json.loads(done.stdout or "[]")]


def test_worker_and_client_over_tls(node: RabbitMQNode, project: Path, processes: list[Process]) -> None:
    write_app(project, node, "tls-tasks", ssl_options(node))
    worker = start_worker(project, "tlsapp", "-c", "2")
    processes.append(worker)
    assert f"amqps://guest:**@localhost:{node.tls_port}//" in worker.log
    client = subprocess.run([sys.executable, "-c", """
import tlsapp
results = [tlsapp.add.delay(i, i) for i in range(20)]
print("sum:", sum(r.get(timeout=30) for r in results))
"""], cwd=project, capture_output=True, text=True, timeout=90)
    assert client.returncode == 0, client.stderr + worker.log
    assert "sum: 380" in client.stdout
    connections = ssl_connections(node)
    assert connections and set(connections) == {True}, connections  # nothing on the plain port
    worker.stop()
    assert "succeeded" in worker.log


def test_publish_with_the_wrong_ca_fails_at_once(node: RabbitMQNode) -> None:
    app = Celery("wrongca", broker=node.tls_url)
    app.conf.broker_use_ssl = ssl_options(node, ca=node.certificates.other_ca)  # type: ignore[union-attr]
    started = time.monotonic()
    with pytest.raises(OperationalError, match="certificate verify failed") as caught:
        app.send_task("tlsapp.add", (1, 1), queue="tls-wrong-ca")
    assert time.monotonic() - started < 5
    assert f"localhost:{node.tls_port}" in str(caught.value) and "guest:guest" not in str(caught.value)
    app.close()


def test_no_client_certificate_is_refused_at_once(node: RabbitMQNode) -> None:
    app = Celery("nocert", broker=node.tls_url)
    app.conf.broker_use_ssl = ssl_options(node, client_cert=False)
    started = time.monotonic()
    with pytest.raises(OperationalError, match="(?i)certificate"):
        app.send_task("tlsapp.add", (1, 1), queue="tls-no-cert")
    assert time.monotonic() - started < 5
    app.close()


def test_worker_with_the_wrong_ca_says_why(node: RabbitMQNode, project: Path, processes: list[Process]) -> None:
    write_app(project, node, "tls-wrong-ca", ssl_options(node, ca=node.certificates.other_ca))  # type: ignore[union-attr]
    worker = start_worker(project, "tlsapp", "-P", "solo", ready=False)
    processes.append(worker)
    worker.wait_for_log("certificate verify failed", timeout=20)
    assert "ready." not in worker.log
