"""RabbitNode: one private RabbitMQ node on free ports, with all its state in a temporary directory."""

from __future__ import annotations

import functools
import os
import pwd
import random
import resource
import shutil
import signal
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Self

import gevent
import gevent.socket
from gevent import subprocess

from ..amqp import connect
from ..amqp.errors import AMQPError
from .tls import TLSCertificates

START_TIMEOUT = 90.0
"""Seconds a node may take to accept AMQP connections before start() gives up."""
STOP_TIMEOUT = 30.0
_SEARCH_PATH = ("/usr/lib/rabbitmq/bin", "/usr/sbin", "/usr/local/sbin")


class RabbitNodeError(RuntimeError):
    """The node could not be started or controlled; the message points at its log."""


def free_port() -> int:
    """A TCP port nothing listens on right now, below the kernel's range of local ports for outgoing
    connections: a node restarted on it finds it free, even with other processes connecting meanwhile (one
    of their connections could take a port of that range while the node is down)."""
    first_outgoing = _first_outgoing_port()
    for _ in range(200):
        port = random.randint(max(1024, first_outgoing - 12_000), first_outgoing - 1)
        if _port_is_free(port):
            return port
    with socket.socket() as sock:  # all taken: any port the kernel gives
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _first_outgoing_port() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _port_is_free(port: int) -> bool:
    """Nothing listens on ``port`` (connections of a killed node, left in TIME_WAIT, do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


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

    ``port`` is its AMQP port (default: a free one).
    With ``tls``, the node also listens for TLS on ``tls_port`` (``tls_url``) with that server certificate,
    and verifies the client certificates that its CA signed; ``fail_if_no_peer_cert`` makes them mandatory.
    """

    def __init__(
        self,
        name: str | None = None,
        tls: TLSCertificates | None = None,
        fail_if_no_peer_cert: bool = False,
        port: int | None = None,
        file_limit: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.file_limit = file_limit
        """The node's limit of open files (``ulimit -n``), if not the machine's: RabbitMQ takes about 90% of
        it, less 100, for sockets (1024 gives 829, the limit of a Debian node started by hand)."""
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
        if not _port_is_free(self.port):
            raise RabbitNodeError(f"port {self.port} is already in use: is another broker running there?")
        with open(self._path("output.log"), "ab") as output:
            self._process = subprocess.Popen(
                self._command(_find_binary("rabbitmq-server")),
                env=self._environment(),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=None if self.file_limit is None else functools.partial(_limit_files, self.file_limit),
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


def _limit_files(limit: int) -> None:
    """In the node's process, before it starts: lower its limit of open files."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
