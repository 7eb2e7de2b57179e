"""Fallback private RabbitMQ node, used only while ``amphora.testing.RabbitNode`` does not exist.

A throwaway node on free ports with its data in a temporary directory, run as the ``rabbitmq`` user when
we are root. Same interface as ``RabbitNode``: ``start()``, ``close()``, ``url``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Self

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
START_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RabbitNode:
    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self._dir = ""
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="bench-rabbit-")
        os.chmod(self._dir, 0o755)
        with open(os.path.join(self._dir, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self._dir,
            "RABBITMQ_NODENAME": f"bench-{os.getpid()}-{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(_free_port()),
            "RABBITMQ_MNESIA_BASE": os.path.join(self._dir, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(self._dir, "log"),
            "RABBITMQ_PID_FILE": os.path.join(self._dir, "pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(self._dir, "enabled_plugins"),
        }
        command = [RABBITMQ_SERVER]
        if os.geteuid() == 0:
            shutil.chown(self._dir, "rabbitmq", "rabbitmq")
            shutil.chown(os.path.join(self._dir, "enabled_plugins"), "rabbitmq", "rabbitmq")
            command = ["runuser", "-u", "rabbitmq", "--", *command]
        with open(os.path.join(self._dir, "output.log"), "w") as output:
            self._process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"RabbitMQ exited at start; see {self._dir}/output.log")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        self.close()
        raise RuntimeError(f"RabbitMQ did not listen on port {self.port} within {START_TIMEOUT} s")

    def close(self) -> None:
        if self._process is None:
            return
        try:
            with open(os.path.join(self._dir, "pid")) as f:
                os.kill(int(f.read().strip()), signal.SIGTERM)  # the Erlang VM; the wrapper follows it
        except (OSError, ValueError):
            self._process.terminate()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
        self._process = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
