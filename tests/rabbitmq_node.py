"""A private RabbitMQ node for tests that restart the broker or need a TLS listener.

The shared server on 127.0.0.1:5672 is never touched: `RabbitMQNode` starts a node of its own
(``celeriac-<pid>-<n>@localhost``) on free ports, with its config, database (mnesia), logs and
certificates in one temporary directory, and no plugins. It runs as the user the shared server
runs as when we are root (so the Erlang cookie in that user's home is shared with
`rabbitmqctl`), else as ourselves. `stop()` then `start()` restarts it on the same ports and
database, so durable queues and persistent messages survive, as after a real broker restart.

`make_certificates()` makes a CA, a server certificate (localhost, 127.0.0.1) and a client
certificate with the openssl command, plus a second, unrelated CA for "wrong CA" tests.

A missing RabbitMQ installation or openssl skips the test, or fails it under
``CELERIAC_REQUIRE_SERVICES=1`` (see `amqp_server.unavailable`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import amqp

from amqp_server import unavailable

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")  # the real scripts (the /usr/sbin ones redirect output)
_counter = itertools.count(1)


def _script(name: str) -> str:
    path = RABBITMQ_BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        unavailable(f"{name} is not installed")
    return str(found)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_user() -> pwd.struct_passwd | None:
    """The user to run the node as: the shared server's (for its Erlang cookie) when we are root."""
    if os.geteuid() != 0:
        return None
    out = subprocess.run(["ps", "-o", "user=", "-C", "beam.smp"], capture_output=True, text=True).stdout.split()
    name = out[0] if out else "rabbitmq"
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


@dataclass
class Certificates:
    """PEM files: a CA, a server and a client certificate it signed, and an unrelated CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        unavailable("the openssl command is not installed")
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {done.stderr}")


def make_certificates(directory: Path) -> Certificates:
    """Make a test CA, certificates for localhost/127.0.0.1 and a client, and another CA."""
    directory.mkdir(parents=True, exist_ok=True)
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=celeriac test {ca}",
                 "-keyout", f"{ca}.key", "-out", f"{ca}.pem", cwd=directory)
    (directory / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                          "extendedKeyUsage=serverAuth\n")
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for who in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={'localhost' if who == 'server' else who}",
                 "-keyout", f"{who}.key", "-out", f"{who}.csr", cwd=directory)
        _openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", f"{who}.ext", "-out", f"{who}.pem", cwd=directory)
    return Certificates(ca=directory / "ca.pem", server_cert=directory / "server.pem",
                        server_key=directory / "server.key", client_cert=directory / "client.pem",
                        client_key=directory / "client.key", other_ca=directory / "other-ca.pem")


class RabbitMQNode:
    """One private RabbitMQ node (see the module docstring). Use `running_node()`.

    Args:
        tls: Also listen with TLS (``tls_port``), requiring a client certificate signed by
            ``certificates.ca``.
    """

    def __init__(self, *, tls: bool = False) -> None:
        self.user = _server_user()
        self.dir = Path(tempfile.mkdtemp(prefix="celeriac-rabbitmq-"))
        self.name = f"celeriac-{os.getpid()}-{next(_counter)}@localhost"
        self.port, self.dist_port = _free_port(), _free_port()
        self.tls_port = _free_port() if tls else None
        self.certificates = make_certificates(self.dir / "certs") if tls else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._write_config()
        if self.user is not None:
            for path in [self.dir, *self.dir.rglob("*")]:
                os.chown(path, self.user.pw_uid, self.user.pw_gid)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@localhost:{self.port}//"

    @property
    def tls_url(self) -> str:
        return f"amqps://guest:guest@localhost:{self.tls_port}//"

    def _write_config(self) -> None:
        lines = [f"listeners.tcp.default = 127.0.0.1:{self.port}", "loopback_users = none",
                 "log.console = false", "log.file.level = info"]
        if self.certificates is not None:
            c = self.certificates
            lines += [f"listeners.ssl.default = 127.0.0.1:{self.tls_port}",
                      f"ssl_options.cacertfile = {c.ca}", f"ssl_options.certfile = {c.server_cert}",
                      f"ssl_options.keyfile = {c.server_key}", "ssl_options.verify = verify_peer",
                      "ssl_options.fail_if_no_peer_cert = true"]
        (self.dir / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
        (self.dir / "enabled_plugins").write_text("[].\n")
        # Our own env file: the system's (/etc/rabbitmq/rabbitmq-env.conf) names the shared node.
        (self.dir / "rabbitmq-env.conf").write_text("ERL_EPMD_ADDRESS=127.0.0.1\n")
        (self.dir / "mnesia").mkdir()
        (self.dir / "log").mkdir()

    def _env(self) -> dict[str, str]:
        env = {**os.environ,
               "RABBITMQ_NODENAME": self.name,
               "RABBITMQ_NODE_PORT": str(self.port),
               "RABBITMQ_DIST_PORT": str(self.dist_port),
               "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
               "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
               "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
               "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
               "RABBITMQ_LOG_BASE": str(self.dir / "log"),
               "RABBITMQ_PID_FILE": str(self.dir / "rabbitmq.pid"),
               "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
               "ERL_EPMD_ADDRESS": "127.0.0.1"}
        if self.user is not None:
            env.update(HOME=self.user.pw_dir, USER=self.user.pw_name, LOGNAME=self.user.pw_name)
        return env

    def _run_as(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def ctl(self, *args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
        """``rabbitmqctl -n <this node> ARGS``."""
        return subprocess.run([_script("rabbitmqctl"), "-n", self.name, *args], env=self._env(),
                              capture_output=True, text=True, timeout=timeout, cwd=self.dir, **self._run_as())

    def start(self, timeout: float = 90.0) -> None:
        """Start the node (again) and wait until it serves AMQP connections."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.dir / "server.out", "ab") as out:
            self.proc = subprocess.Popen([_script("rabbitmq-server")], env=self._env(), stdout=out,
                                         stderr=subprocess.STDOUT, cwd=self.dir, start_new_session=True,
                                         **self._run_as())
        deadline = time.monotonic() + timeout
        while True:  # await_startup fails at once until the node has registered with epmd
            done = self.ctl("await_startup", "--timeout", "30", timeout=60)
            if done.returncode == 0 and self.accepts_connections():
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.log()[-3000:]
                self.stop()
                raise RuntimeError(f"private RabbitMQ {self.name} did not start: {done.stderr or done.stdout}\n{log}")
            time.sleep(0.3)

    def accepts_connections(self) -> bool:
        try:
            connection = amqp.Connection(f"127.0.0.1:{self.port}", userid="guest", password="guest",
                                         connect_timeout=1.0)
            connection.connect()
            connection.close()
            return True
        except Exception:
            return False

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the node: `rabbitmqctl stop`, else SIGKILL its process group."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.ctl("stop", timeout=timeout)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL the node's Erlang VM (a crash, not a shutdown)."""
        assert self.proc is not None
        pid = int((self.dir / "rabbitmq.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        self.proc.wait(30)

    def log(self) -> str:
        parts = [p.read_text(errors="replace") for p in sorted((self.dir / "log").glob("*.log"))]
        out = self.dir / "server.out"
        return "\n".join(parts + ([out.read_text(errors="replace")] if out.exists() else []))

    def close(self) -> None:
        """Stop the node and delete its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running_node(*, tls: bool = False) -> Iterator[RabbitMQNode]:
    """A started private node, stopped and deleted after the block."""
    if not Path(_script("rabbitmq-server")).exists():
        unavailable("rabbitmq-server is not installed")
    node = RabbitMQNode(tls=tls)
    try:
        node.start()
        yield node
    finally:
        node.close()
