"""Private RabbitMQ nodes for tests: :class:`RabbitNode`, :class:`RabbitCluster` and pytest fixtures built on them.

A node runs Debian's (or any) ``rabbitmq-server`` on free ports with all its state in a temporary
directory, so tests never touch a broker the machine already runs, and can kill, freeze and restart it.
Use the fixtures from a ``conftest.py``::

    pytest_plugins = ["amphora.testing"]

- ``rabbit_node`` (session): one node shared by the whole run; ``amqp_url`` is its URL.
- ``private_rabbit_node`` (function): a node of the test's own, for tests that kill or freeze it.
- ``tls_certificates`` (session): a test CA with server and client certificates (:func:`make_certificates`).
- ``tls_rabbit_node`` (session): a node that also listens for TLS; ``tls_url`` is its ``amqps://`` URL.
- ``rabbit_cluster`` (function): three nodes of the test's own joined into a cluster (:class:`RabbitCluster`).

Set ``RABBITMQ_SERVER_BIN`` if ``rabbitmq-server`` is not in ``/usr/lib/rabbitmq/bin`` or on the PATH.

Why not pytest-rabbitmq: it starts and stops a node per session only, with no kill -9, freeze (SIGSTOP),
restart on the same data directory or memory alarm, which the fault tests need, and it does not switch to
the ``rabbitmq`` user when run as root, which Debian's Erlang cookie and data directories require.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import gevent
import gevent.socket
from gevent import subprocess

from .amqp import connect
from .amqp.errors import AMQPError

START_TIMEOUT = 90.0
"""Seconds a node may take to accept AMQP connections before start() gives up."""
STOP_TIMEOUT = 30.0
_SEARCH_PATH = ("/usr/lib/rabbitmq/bin", "/usr/sbin", "/usr/local/sbin")


class RabbitNodeError(RuntimeError):
    """The node could not be started or controlled; the message points at its log."""


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TLSCertificates:
    """PEM files of a test CA, a server certificate for ``localhost`` and a client certificate."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def make_certificates(directory: str, days: int = 30) -> TLSCertificates:
    """Generate, with the ``openssl`` command, a CA and the server and client certificates it signs.

    The server certificate is for ``localhost`` and ``127.0.0.1``; keys are unencrypted. Each call makes a
    new CA, which trusts none of the certificates of another call.
    """
    os.makedirs(directory, exist_ok=True)

    def path(name: str) -> str:
        return os.path.join(directory, name)

    def openssl(*arguments: str) -> None:
        result = subprocess.run(["openssl", *arguments], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"openssl {arguments[0]} failed: {result.stderr.strip()}")

    config = path("openssl.cnf")
    with open(config, "w") as config_file:
        config_file.write(_OPENSSL_CONFIG)
    # fmt: off
    new_key = ("-nodes", "-newkey", "rsa:2048", "-config", config)
    validity = ("-days", str(days))
    openssl("req", "-x509", *new_key, *validity, "-extensions", "ca", "-subj", "/CN=amphora test CA",
            "-keyout", path("ca.key"), "-out", path("ca.pem"))
    for role, common_name in (("server", "localhost"), ("client", "amphora test client")):
        openssl("req", "-new", *new_key, "-subj", f"/CN={common_name}",
                "-keyout", path(f"{role}.key"), "-out", path(f"{role}.csr"))
        openssl("x509", "-req", "-in", path(f"{role}.csr"), "-CA", path("ca.pem"), "-CAkey", path("ca.key"),
                "-set_serial", str(uuid.uuid4().int >> 65), *validity,
                "-extfile", config, "-extensions", role, "-out", path(f"{role}.pem"))
    # fmt: on
    return TLSCertificates(
        ca=path("ca.pem"),
        server_cert=path("server.pem"),
        server_key=path("server.key"),
        client_cert=path("client.pem"),
        client_key=path("client.key"),
    )


def _find_binary(name: str) -> str:
    directory = os.environ.get("RABBITMQ_SERVER_BIN")
    candidates = [directory] if directory else list(_SEARCH_PATH)
    for folder in candidates:
        path = os.path.join(folder, name)
        if os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found is None:
        raise RabbitNodeError(f"{name} not found: install rabbitmq-server or set RABBITMQ_SERVER_BIN")
    return found


def _all_threads_stopped(pid: int) -> bool:
    """Whether every thread of process ``pid`` is stopped (state T in /proc)."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
        stats = [Path(f"/proc/{pid}/task/{tid}/stat").read_text() for tid in threads]
    except OSError:
        return True  # gone, or no /proc: nothing left to wait for
    return all(stat.rsplit(")", 1)[1].split()[0] in ("T", "t") for stat in stats)  # the field after "(name)"


class RabbitNode:
    """One private RabbitMQ node: ``start()``, ``kill()``, ``pause()``/``resume()``, ``restart()``, ``stop()``.

    The node keeps its ports, name and data directory across kill and start, so durable queues and
    persistent messages survive a restart as they would on a real broker.

    With ``tls``, the node also listens for TLS on ``tls_port`` (``tls_url``) with that server certificate,
    and verifies the client certificates that its CA signed; ``fail_if_no_peer_cert`` makes them mandatory.
    """

    def __init__(
        self, name: str | None = None, tls: TLSCertificates | None = None, fail_if_no_peer_cert: bool = False
    ) -> None:
        self.port = free_port()
        self.name = name or f"amphora-test-{uuid.uuid4().hex[:8]}"
        self.nodename = f"{self.name}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self.fail_if_no_peer_cert = fail_if_no_peer_cert
        self.directory = tempfile.mkdtemp(prefix=f"{self.name}-")
        self._dist_port = free_port()
        self._process: subprocess.Popen | None = None
        self._as_rabbitmq_user = os.geteuid() == 0
        self._prepare_directory()

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the node and wait until it accepts AMQP connections (and TLS ones, with ``tls``)."""
        if self.running:
            return self
        with open(self._path("output.log"), "ab") as output:
            self._process = subprocess.Popen(
                self._command(_find_binary("rabbitmq-server")),
                env=self._environment(),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_until_listening()
        return self

    def kill(self) -> None:
        """SIGKILL the broker (like ``kill -9``): no clean close reaches any client."""
        self._signal_broker(signal.SIGKILL)
        self._reap()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): sockets stay open but nothing answers. Returns once every thread
        of the broker is stopped."""
        self._signal_broker(signal.SIGSTOP)
        pid = self._broker_pid()
        deadline = time.monotonic() + 5
        while pid is not None and time.monotonic() < deadline and not _all_threads_stopped(pid):
            gevent.sleep(0.005)

    def resume(self) -> None:
        """Thaw a paused broker (SIGCONT)."""
        self._signal_broker(signal.SIGCONT)

    def restart(self) -> RabbitNode:
        """Kill the broker and start it again on the same port and data."""
        self.kill()
        return self.start()

    def stop(self) -> None:
        """Stop the node politely (SIGTERM), or kill it if it does not go in time."""
        if self._process is None:
            return
        self.resume()
        self._signal_broker(signal.SIGTERM)
        try:
            self._process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reap()

    def close(self) -> None:
        """Stop the node and delete its directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def tls_url(self) -> str:
        """The ``amqps://`` URL of the TLS listener, by the host name its certificate names."""
        if self.tls_port is None:
            raise RabbitNodeError("this node was created without tls")
        return f"amqps://guest:guest@localhost:{self.tls_port}/%2F"

    # --- control -------------------------------------------------------------------------------

    def ctl(self, *arguments: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -n NODE ARGUMENTS`` against this node and return what it printed."""
        command = self._command(_find_binary("rabbitmqctl"), "-n", self.nodename, *arguments)
        result = subprocess.run(
            command, env=self._environment(), capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RabbitNodeError(f"rabbitmqctl {' '.join(arguments)} failed: {result.stderr or result.stdout}")
        return str(result.stdout)

    def set_memory_watermark(self, fraction: float) -> None:
        """Set the memory alarm threshold; 0 raises the alarm at once, so the broker blocks publishers."""
        self.ctl("set_vm_memory_high_watermark", str(fraction))

    # --- internals -----------------------------------------------------------------------------

    def _path(self, *parts: str) -> str:
        return os.path.join(self.directory, *parts)

    def _prepare_directory(self) -> None:
        """Write the plugins file (and for TLS the config and a copy of the PEM files) where the node reads them."""
        with open(self._path("enabled_plugins"), "w") as plugins:
            plugins.write("[].\n")
        if self.tls is not None:
            self._write_tls_config(self.tls)
        os.chmod(self.directory, 0o755)
        if self._as_rabbitmq_user:
            user = pwd.getpwnam("rabbitmq")
            for path in [self.directory, *(self._path(name) for name in os.listdir(self.directory))]:
                os.chown(path, user.pw_uid, user.pw_gid)

    def _write_tls_config(self, tls: TLSCertificates) -> None:
        """Copy the CA and server files in (the user ``rabbitmq`` may not reach theirs) and point a config at them."""
        for source, name in ((tls.ca, "ca.pem"), (tls.server_cert, "server.pem"), (tls.server_key, "server.key")):
            shutil.copyfile(source, self._path(name))
        settings = {
            "listeners.ssl.default": f"127.0.0.1:{self.tls_port}",
            "ssl_options.cacertfile": self._path("ca.pem"),
            "ssl_options.certfile": self._path("server.pem"),
            "ssl_options.keyfile": self._path("server.key"),
            "ssl_options.verify": "verify_peer",
            "ssl_options.fail_if_no_peer_cert": str(self.fail_if_no_peer_cert).lower(),
        }
        with open(self._path("rabbitmq.conf"), "w") as config:
            config.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _environment(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": self.directory,  # the Erlang cookie lives here, shared by the node and rabbitmqctl
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self._dist_port),
            "RABBITMQ_MNESIA_BASE": self._path("mnesia"),
            "RABBITMQ_LOG_BASE": self._path("log"),
            "RABBITMQ_PID_FILE": self._path("pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": self._path("enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": self._path("rabbitmq"),  # .conf is appended; only TLS nodes have one
            "RABBITMQ_ADVANCED_CONFIG_FILE": self._path("advanced.config"),
        }

    def _command(self, binary: str, *arguments: str) -> list[str]:
        if self._as_rabbitmq_user:
            return ["runuser", "-u", "rabbitmq", "--", binary, *arguments]
        return [binary, *arguments]

    def _broker_pid(self) -> int | None:
        try:
            with open(self._path("pid")) as pid_file:
                return int(pid_file.read().strip())
        except (OSError, ValueError):
            return None

    def _signal_broker(self, signum: int) -> None:
        pid = self._broker_pid()
        if pid is None or not self.running:
            return
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def _reap(self) -> None:
        """Wait for the wrapper process (it ends with the VM) and forget the stale pid file."""
        if self._process is not None:
            try:
                self._process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
            self._process = None
        try:
            os.remove(self._path("pid"))
        except OSError:
            pass

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not self.running:
                raise RabbitNodeError(f"RabbitMQ exited while starting; see {self._path('output.log')}")
            if self._listening():
                return
            gevent.sleep(0.1)
        self.kill()
        raise RabbitNodeError(f"RabbitMQ took over {START_TIMEOUT:.0f} s to start; see {self._path('output.log')}")

    def _listening(self) -> bool:
        """Whether the node completes an AMQP handshake and, with TLS, its TLS port accepts connections."""
        try:
            connect(self.url, connection_timeout=2, heartbeat=0).close()
            if self.tls_port is not None:
                gevent.socket.create_connection(("127.0.0.1", self.tls_port), timeout=2).close()
        except (AMQPError, OSError):
            return False
        return True

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        tls = f" tls_port={self.tls_port}" if self.tls_port is not None else ""
        return f"<RabbitNode {self.nodename} port={self.port}{tls} {'running' if self.running else 'stopped'}>"


# --- clusters -------------------------------------------------------------------------------------


class _ClusterNode(RabbitNode):
    """A :class:`RabbitNode` whose Erlang cookie is ``.erlang.cookie`` in its own directory, as given.

    Nodes of one cluster (and ``rabbitmqctl`` talking to them) must share a cookie. A plain node run as root
    gets the ``rabbitmq`` user's home (and cookie) from ``runuser``, and otherwise generates a cookie of its
    own: a cluster node writes the cluster's cookie into its directory and is started with ``HOME`` there.
    """

    def __init__(self, name: str, cookie: str) -> None:
        super().__init__(name)
        path = self._path(".erlang.cookie")
        with open(path, "w") as cookie_file:
            cookie_file.write(cookie)
        os.chmod(path, 0o400)  # Erlang refuses a cookie file others may read
        if self._as_rabbitmq_user:
            user = pwd.getpwnam("rabbitmq")
            os.chown(path, user.pw_uid, user.pw_gid)

    def _command(self, binary: str, *arguments: str) -> list[str]:
        if self._as_rabbitmq_user:  # runuser sets HOME to the rabbitmq user's home: set it back
            return ["runuser", "-u", "rabbitmq", "--", "env", f"HOME={self.directory}", binary, *arguments]
        return [binary, *arguments]


class RabbitCluster:
    """Private RabbitMQ nodes on this machine joined into one cluster (three by default).

    Each node has its own ports, name and directory, as a :class:`RabbitNode`; they share an Erlang cookie.
    :meth:`start` starts them all and joins every node to the first (``rabbitmqctl stop_app``,
    ``join_cluster``, ``start_app``). A node that is killed and started again rejoins by itself, with its
    data, as long as another node of the cluster runs. Queues declared with ``x-queue-type: quorum``
    (amphora's ``queue_type="quorum"``) get a replica on every node.
    """

    def __init__(self, size: int = 3, name: str | None = None) -> None:
        if size < 1:
            raise ValueError(f"a cluster needs at least one node, not {size}")
        prefix = name or f"amphora-cluster-{uuid.uuid4().hex[:6]}"
        cookie = uuid.uuid4().hex.upper()
        self.nodes: list[RabbitNode] = [_ClusterNode(f"{prefix}-{i}", cookie) for i in range(size)]

    @property
    def urls(self) -> list[str]:
        """The AMQP URL of every node, in node order (give them all to clients and servers: ``urls=``)."""
        return [node.url for node in self.nodes]

    def start(self, index: int | None = None) -> Self:
        """Start every node (in parallel) and join them into a cluster; return once all accept AMQP.

        With ``index``, start only that node again (after :meth:`kill`), on its ports and data: it rejoins
        the cluster by itself.
        """
        if index is not None:
            self.nodes[index].start()
            return self
        starting = [gevent.spawn(node.start) for node in self.nodes]
        gevent.joinall(starting)
        for greenlet in starting:
            if greenlet.exception is not None:
                self.close()
                raise greenlet.exception
        first = self.nodes[0]
        try:
            for node in self.nodes[1:]:
                if first.nodename in self.running_nodes(node):
                    continue  # already a member (start() after stop())
                node.ctl("stop_app")
                node.ctl("join_cluster", first.nodename)
                node.ctl("start_app")
                node._wait_until_listening()
            members = self.running_nodes(first)
            expected = {node.nodename for node in self.nodes}
            if set(members) != expected:
                raise RabbitNodeError(f"the cluster runs {sorted(members)}, expected {sorted(expected)}")
        except BaseException:
            self.close()
            raise
        return self

    def running_nodes(self, asked: RabbitNode | None = None) -> list[str]:
        """The names of the cluster's running nodes, as ``asked`` (by default the first running node) sees it."""
        node = asked or next((n for n in self.nodes if n.running), None)
        if node is None:
            return []
        status = json.loads(node.ctl("cluster_status", "--formatter", "json"))
        return list(status.get("running_nodes", []))

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (like ``kill -9``); the others go on."""
        self.nodes[index].kill()

    def restart(self, index: int) -> None:
        """Kill node ``index`` and start it again."""
        self.kill(index)
        self.start(index)

    def pause(self, index: int) -> None:
        """Freeze node ``index`` (SIGSTOP)."""
        self.nodes[index].pause()

    def resume(self, index: int) -> None:
        """Thaw node ``index`` (SIGCONT)."""
        self.nodes[index].resume()

    def index_of_port(self, port: int) -> int:
        """The index of the node listening for AMQP on ``port`` (e.g. ``link.connection.parameters.port``)."""
        for index, node in enumerate(self.nodes):
            if node.port == port:
                return index
        raise ValueError(f"no node of the cluster listens on port {port}")

    def stop(self) -> None:
        """Stop every node politely, the first last."""
        for node in reversed(self.nodes):
            node.stop()

    def close(self) -> None:
        """Stop every node and delete their directories."""
        for node in self.nodes:
            node.kill()  # no need to be polite: everything is thrown away
        for node in self.nodes:
            node.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        states = ", ".join(f"{n.port} {'running' if n.running else 'stopped'}" for n in self.nodes)
        return f"<RabbitCluster {len(self.nodes)} nodes: {states}>"


# --- pytest fixtures (use with ``pytest_plugins = ["amphora.testing"]``) ------------------------

try:
    import pytest
except ImportError:  # amphora itself does not need pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(scope="session")
    def rabbit_node() -> Iterator[RabbitNode]:
        """A private node shared by the whole test session."""
        with RabbitNode() as node:
            yield node

    @pytest.fixture
    def amqp_url(rabbit_node: RabbitNode) -> str:
        """The URL of the session's node."""
        if not rabbit_node.running:  # a test may have stopped it
            rabbit_node.start()
        return rabbit_node.url

    @pytest.fixture
    def private_rabbit_node() -> Iterator[RabbitNode]:
        """A node of the test's own, free to kill, freeze and restart."""
        with RabbitNode() as node:
            yield node

    @pytest.fixture(scope="session")
    def tls_certificates(tmp_path_factory: pytest.TempPathFactory) -> TLSCertificates:
        """A test CA with a server certificate for localhost and a client certificate."""
        return make_certificates(str(tmp_path_factory.mktemp("tls")))

    @pytest.fixture(scope="session")
    def tls_rabbit_node(tls_certificates: TLSCertificates) -> Iterator[RabbitNode]:
        """A node shared by the session that also listens for TLS (client certificates optional)."""
        with RabbitNode(tls=tls_certificates) as node:
            yield node

    @pytest.fixture
    def rabbit_cluster() -> Iterator[RabbitCluster]:
        """A cluster of three private nodes of the test's own (``.urls``, ``.nodes``, ``kill(i)``, ...)."""
        with RabbitCluster() as cluster:
            yield cluster
