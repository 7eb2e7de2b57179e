"""Helpers shared by the tests: servers in child processes, their execution logs, waiting for a condition."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import gevent
from gevent.event import Event

from amphora.amqp import connect

SERVER_SCRIPT = Path(__file__).with_name("rpc_process.py")


class ServerProcess:
    """A server (tests/rpc_process.py) in a child process, logging every execution."""

    def __init__(self, service: str, url: str, log: Path, *options: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT), service, url, str(log), *options],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def terminate(self, timeout: float = 30) -> int:
        self.process.terminate()
        return self.process.wait(timeout)


def executions(log: Path) -> list[tuple[int, str, str]]:
    """``(pid, function, argument)`` of every execution the servers logged, in order."""
    lines = log.read_text().splitlines()
    return [(int(pid), function, argument) for pid, function, argument in (line.split(" ", 2) for line in lines)]


def wait_until(condition, timeout: float = 10, interval: float = 0.02) -> None:
    """Poll ``condition`` until it holds; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        gevent.sleep(interval)


class Occupancy:
    """A handler that takes ``seconds`` per call and records the most calls that ever ran at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.running = self.peak = 0

    def __call__(self) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        gevent.sleep(self.seconds)
        self.running -= 1


def drain(url: str, queue: str) -> list[bytes]:
    """Take every message of ``queue``, in order."""
    connection = connect(url)
    channel = connection.channel()
    bodies: list[bytes] = []
    done = Event()
    count = channel.queue_declare(queue, passive=True).message_count

    def take(message) -> None:
        bodies.append(message.body)
        if len(bodies) == count:
            done.set()

    if count:
        channel.basic_consume(queue, take, no_ack=True)
        done.wait(timeout=30)
    connection.close()
    return bodies
