"""Private RabbitMQ nodes for tests: :class:`RabbitNode` and pytest fixtures built on it.

A node runs Debian's (or any) ``rabbitmq-server`` on free ports with all its state in a temporary
directory, so tests never touch a broker the machine already runs, and can kill, freeze and restart it.
Use the fixtures from a ``conftest.py``::

    pytest_plugins = ["amphora.testing"]

- ``rabbit_node`` (session): one node shared by the whole run; ``amqp_url`` is its URL.
- ``private_rabbit_node`` (function): a node of the test's own, for tests that kill or freeze it.

Set ``RABBITMQ_SERVER_BIN`` if ``rabbitmq-server`` is not in ``/usr/lib/rabbitmq/bin`` or on the PATH.

Why not pytest-rabbitmq: it starts and stops a node per session only, with no kill -9, freeze (SIGSTOP),
restart on the same data directory or memory alarm, which the fault tests need, and it does not switch to
the ``rabbitmq`` user when run as root, which Debian's Erlang cookie and data directories require.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator

import gevent
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


class RabbitNode:
    """One private RabbitMQ node: ``start()``, ``kill()``, ``pause()``/``resume()``, ``restart()``, ``stop()``.

    The node keeps its port, name and data directory across kill and start, so durable queues and
    persistent messages survive a restart as they would on a real broker.
    """

    def __init__(self, name: str | None = None) -> None:
        self.port = free_port()
        self.name = name or f"amphora-test-{uuid.uuid4().hex[:8]}"
        self.nodename = f"{self.name}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.directory = tempfile.mkdtemp(prefix=f"{self.name}-")
        self._dist_port = free_port()
        self._process: subprocess.Popen | None = None
        self._as_rabbitmq_user = os.geteuid() == 0
        self._prepare_directory()

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> RabbitNode:
        """Start the node and wait until it accepts AMQP connections."""
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
        self._wait_for_amqp()
        return self

    def kill(self) -> None:
        """SIGKILL the broker (like ``kill -9``): no clean close reaches any client."""
        self._signal_broker(signal.SIGKILL)
        self._reap()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): sockets stay open but nothing answers."""
        self._signal_broker(signal.SIGSTOP)

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
        with open(self._path("enabled_plugins"), "w") as plugins:
            plugins.write("[].\n")
        os.chmod(self.directory, 0o755)
        if self._as_rabbitmq_user:
            user = pwd.getpwnam("rabbitmq")
            for path in (self.directory, self._path("enabled_plugins")):
                os.chown(path, user.pw_uid, user.pw_gid)

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
            "RABBITMQ_CONFIG_FILE": self._path("rabbitmq"),  # none exists: broker defaults
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

    def _wait_for_amqp(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not self.running:
                raise RabbitNodeError(f"RabbitMQ exited while starting; see {self._path('output.log')}")
            try:
                connect(self.url, connection_timeout=2, heartbeat=0).close()
                return
            except AMQPError:
                gevent.sleep(0.1)
        self.kill()
        raise RabbitNodeError(f"RabbitMQ took over {START_TIMEOUT:.0f} s to start; see {self._path('output.log')}")

    def __enter__(self) -> RabbitNode:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RabbitNode {self.nodename} port={self.port} {'running' if self.running else 'stopped'}>"


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

