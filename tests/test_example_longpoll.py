"""The long-polling example (examples/longpoll) end to end: API processes, Core, and headless Chromium.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON messages ended
by a NUL byte, Chromium reading fd 3 and writing fd 4), so no port, WebSocket library or browser download
is needed: only Debian's ``chromium`` package, which ``./run`` installs.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
import gevent.os
import gevent.socket
import pytest
from gevent import subprocess
from gevent.event import AsyncResult

from amphora.amqp import connect
from amphora.amqp.errors import NotFound

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "longpoll"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
]
BROWSER_TEST_TIMEOUT = 60 if os.path.exists(CHROMIUM) else 600  # generous only to install Chromium first
POLL_TIMEOUT = 5.0
"""The API processes' poll timeout in these tests (their default is 20 s)."""


# --- helpers ---------------------------------------------------------------------------------------


def eventually(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Call ``check`` until it returns something true (returned), for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        gevent.sleep(0.05)


def queue_state(amqp_url: str, queue: str) -> tuple[int, int] | None:
    """(messages, consumers) of ``queue``, or None if it does not exist."""
    connection = connect(amqp_url)
    try:
        ok = connection.channel().queue_declare(queue, passive=True)
        return ok.message_count, ok.consumer_count
    except NotFound:
        return None
    finally:
        connection.close()


def http_get(url: str, timeout: float = 15.0) -> tuple[int, bytes]:
    """GET ``url`` (http://host:port/path) on a gevent socket; returns the status code and the body."""
    match = re.fullmatch(r"http://([^:/]+):(\d+)(/.*)", url)
    assert match, url
    host, port, path = match.group(1), int(match.group(2)), match.group(3)
    too_long = AssertionError(f"GET {url} took over {timeout} s")
    with gevent.Timeout(timeout, too_long), gevent.socket.create_connection((host, port)) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        response = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def stop_process(process: subprocess.Popen, group: bool = False) -> None:
    """Terminate ``process`` (and with ``group`` every process of its group), killing what lingers."""

    def send(signum: int) -> None:
        try:
            if group:
                os.killpg(process.pid, signum)
            else:
                process.send_signal(signum)
        except ProcessLookupError:
            pass

    if process.poll() is None:
        send(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            process.wait(timeout=10)
    if group:
        send(signal.SIGKILL)  # children that outlived their parent
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


# --- the example's processes -----------------------------------------------------------------------


@dataclass
class Api:
    """A running ``api.py``: its process, base URL (``http://127.0.0.1:PORT``) and name (``127.0.0.1:PORT``)."""

    process: subprocess.Popen
    base_url: str
    name: str
    log: Path

    def page(self, user: str) -> str:
        return f"{self.base_url}/?user={user}"


@pytest.fixture
def example_env(amqp_url: str) -> dict[str, str]:
    return {**os.environ, "AMQP_URL": amqp_url}


@pytest.fixture
def start_api(example_env: dict[str, str], service: str, tmp_path: Path) -> Iterator[Callable[..., Api]]:
    """Starts ``api.py`` processes on free ports (waiting until each serves); all stopped at teardown."""
    started: list[Api] = []

    def start(*options: str) -> Api:
        log = tmp_path / f"api{len(started) + 1}.log"
        command = [sys.executable, str(EXAMPLE / "api.py"), "--port", "0", "--service", service]
        command += ["--poll-timeout", str(POLL_TIMEOUT), *options]
        with open(log, "wb") as stderr:
            process = subprocess.Popen(command, env=example_env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        api = Api(process, "", "", log)
        started.append(api)
        with gevent.Timeout(30, False):
            line = process.stdout.readline()  # printed once it listens and is connected to the broker
        match = re.search(r"API server (\S+) serving (http://[^/]+)/", line or "")
        if match is None:
            raise AssertionError(f"api.py did not start: {line!r}; its log: {log.read_text()[-2000:]}")
        api.name, api.base_url = match.group(1), match.group(2)
        return api

    yield start
    for api in started:
        stop_process(api.process)


@pytest.fixture
def core(example_env: dict[str, str], service: str) -> Iterator[Callable[..., subprocess.Popen]]:
    """Starts ``core.py USER TEXT [options]``; returns the process (stdout piped, text). All stopped at
    teardown."""
    started: list[subprocess.Popen] = []

    def send(user: str, text: str, *options: str) -> subprocess.Popen:
        command = [sys.executable, str(EXAMPLE / "core.py"), user, text, "--service", service, *options]
        process = subprocess.Popen(
            command, env=example_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        started.append(process)
        return process

    yield send
    for process in started:
        stop_process(process)


def finish(process: subprocess.Popen, timeout: float = 30.0) -> tuple[int, str]:
    """Wait for a core.py process; its exit status and output."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"core.py took over {timeout} s: {output}") from None
    return process.returncode, output


# --- Chromium over the DevTools protocol -----------------------------------------------------------


class Chromium:
    """Headless Chromium, driven over the DevTools protocol on a pipe."""

    def __init__(self, profile: Path, log: Path) -> None:
        commands_read, commands_write = os.pipe()  # we write commands, Chromium reads them on its fd 3
        replies_read, replies_write = os.pipe()  # Chromium writes replies and events on its fd 4

        def on_fds_3_and_4() -> None:  # in the child, before the fds not in pass_fds are closed
            high_read = fcntl.fcntl(commands_read, fcntl.F_DUPFD, 10)
            high_write = fcntl.fcntl(replies_write, fcntl.F_DUPFD, 10)
            os.dup2(high_read, 3)
            os.dup2(high_write, 4)

        command = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
        with open(log, "wb") as output:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                pass_fds=(3, 4),
                preexec_fn=on_fds_3_and_4,
                start_new_session=True,  # its own process group: stop() ends the renderers too
            )
        os.close(commands_read)
        os.close(replies_write)
        self._out, self._in = commands_write, replies_read
        gevent.os.make_nonblocking(self._out)
        gevent.os.make_nonblocking(self._in)
        self._ids = itertools.count(1)
        self._replies: dict[int, AsyncResult] = {}
        self._event_waiters: dict[tuple[str | None, str], list[AsyncResult]] = {}
        self._reader = gevent.spawn(self._read)

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Send a command and wait for its result; raises AssertionError on a protocol error or timeout."""
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        reply = self._replies[message_id] = AsyncResult()
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[gevent.os.nb_write(self._out, data) :]
        try:
            answer = reply.get(timeout=timeout)
        except gevent.Timeout:
            raise AssertionError(f"Chromium did not answer {method} within {timeout} s") from None
        finally:
            self._replies.pop(message_id, None)
        if "error" in answer:
            raise AssertionError(f"Chromium refused {method}: {answer['error']}")
        return dict(answer.get("result", {}))

    def expect_event(self, method: str, session: str | None = None) -> AsyncResult:
        """An AsyncResult set to the params of the next ``method`` event (register before causing it)."""
        waiter = AsyncResult()
        self._event_waiters.setdefault((session, method), []).append(waiter)
        return waiter

    def open(self, url: str, timeout: float = 15.0) -> Page:
        """Open ``url`` in a new tab and wait for its load event."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable", session=session)
        loaded = self.expect_event("Page.loadEventFired", session)
        self.send("Page.navigate", {"url": url}, session=session)
        try:
            loaded.get(timeout=timeout)
        except gevent.Timeout:
            raise AssertionError(f"{url} did not load within {timeout} s") from None
        return Page(self, session, url)

    def stop(self) -> None:
        self._reader.kill()
        stop_process(self.process, group=True)
        for fd in (self._out, self._in):
            os.close(fd)

    def _read(self) -> None:
        buffer = b""
        while chunk := gevent.os.nb_read(self._in, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                self._dispatch(json.loads(raw))
        for reply in self._replies.values():
            reply.set({"error": "Chromium closed the DevTools pipe (it exited)"})

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message:
            reply = self._replies.get(message["id"])
            if reply is not None:
                reply.set(message)
            return
        waiters = self._event_waiters.pop((message.get("sessionId"), message.get("method", "")), [])
        for waiter in waiters:
            waiter.set(message.get("params", {}))


WAIT_FOR_CONDITION = """new Promise(resolve => {
  const met = () => { try { return Boolean(%s); } catch (error) { return false; } };
  if (met()) return resolve(true);
  const observer = new MutationObserver(() => { if (met()) { observer.disconnect(); resolve(true); } });
  observer.observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
})"""


@dataclass
class Page:
    """A tab of :class:`Chromium`."""

    browser: Chromium
    session: str
    url: str

    def evaluate(self, expression: str, timeout: float = 10.0) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        params = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        result = self.browser.send("Runtime.evaluate", params, session=self.session, timeout=timeout)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} raised in {self.url}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def html(self) -> str:
        return str(self.evaluate("document.documentElement.outerHTML"))

    def messages(self) -> list[str]:
        return list(self.evaluate("[...document.querySelectorAll('#messages li')].map(li => li.textContent)"))

    def wait_for(self, condition: str, timeout: float = 15.0) -> None:
        """Wait until the JavaScript ``condition`` holds: checked now and on every change of the DOM."""
        try:
            self.evaluate(WAIT_FOR_CONDITION % condition, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{condition} still false in {self.url} ({exc}); its DOM: {self.html()}") from None


@pytest.fixture(scope="module")
def chromium_binary() -> str:
    """/usr/bin/chromium, installed with apt-get if missing (skip only if that is impossible)."""
    if not os.path.exists(CHROMIUM):
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip(f"{CHROMIUM} is missing and cannot be installed here (apt-get as root needed)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        result = subprocess.run(
            "apt-get update -qq && apt-get install -y -qq chromium",
            shell=True,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not os.path.exists(CHROMIUM):
            pytest.skip(f"{CHROMIUM} is missing and `apt-get install chromium` failed: {result.stderr[-500:]}")
    return CHROMIUM


@pytest.fixture
def browser(chromium_binary: str, tmp_path: Path) -> Iterator[Chromium]:
    """A fresh headless Chromium (own profile directory), stopped with all its processes at teardown."""
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    chromium = Chromium(profile, tmp_path / "chromium.log")
    try:
        chromium.send("Browser.getVersion", timeout=30)  # it answers once started
        yield chromium
    finally:
        chromium.stop()


# --- tests -----------------------------------------------------------------------------------------


def wait_until_polling(amqp_url: str, service: str, user: str) -> None:
    """Wait until an API server consumes ``user``'s request queue, i.e. a poll for them is under way."""
    queue = f"rpc_{service}_queue_{user}"
    eventually(lambda: (queue_state(amqp_url, queue) or (0, 0))[1] >= 1, f"a poll for {user}")


@pytest.mark.timeout(BROWSER_TEST_TIMEOUT)
def test_message_reaches_only_the_page_of_its_user(browser, start_api, core, amqp_url, service):
    api1, api2 = start_api(), start_api()
    alice = browser.open(api1.page("alice"))
    bob = browser.open(api2.page("bob"))
    for page, user in ((alice, "alice"), (bob, "bob")):
        page.wait_for("document.getElementById('status').textContent.startsWith('waiting')")
        wait_until_polling(amqp_url, service, user)

    status, output = finish(core("alice", "Hello, Alice!"))
    assert status == 0, output
    assert f"Delivered to 'alice': the API server {api1.name}" in output  # Core did not know which one

    alice.wait_for("document.getElementById('messages').textContent.includes('Hello, Alice!')")
    assert alice.messages() == ["Hello, Alice!"]
    assert "<li>Hello, Alice!</li>" in alice.html()
    assert "Hello, Alice!" not in bob.html()

    status, output = finish(core("bob", "Hi, Bob!"))  # Bob's page, on the other API server, works too
    assert status == 0 and api2.name in output, output
    bob.wait_for("document.getElementById('messages').textContent.includes('Hi, Bob!')")
    assert bob.messages() == ["Hi, Bob!"]
    assert alice.messages() == ["Hello, Alice!"]
    assert "waiting" in alice.evaluate("document.getElementById('status').textContent")


@pytest.mark.timeout(60)
def test_message_sent_between_polls_waits_for_the_next_poll(start_api, core, amqp_url, service):
    api = start_api()
    first_poll = gevent.spawn(http_get, f"{api.base_url}/poll?user=carol")
    wait_until_polling(amqp_url, service, "carol")
    assert finish(core("carol", "first"))[0] == 0
    assert first_poll.get(timeout=15) == (200, b'{"messages": ["first"]}')

    sending = core("carol", "between polls")  # no poll is open: her session holds it for the next one
    assert http_get(f"{api.base_url}/poll?user=carol") == (200, b'{"messages": ["between polls"]}')
    status, output = finish(sending)
    assert status == 0 and api.name in output, output

    # No poll of hers takes a message before its call's deadline: Core hears "not delivered", at once.
    started = time.monotonic()
    status, output = finish(core("carol", "too late", "--timeout", "2"))
    assert status == 2 and output.startswith("Not delivered: 'carol' has a session"), output
    assert time.monotonic() - started < 10
    assert http_get(f"{api.base_url}/poll?user=carol", timeout=POLL_TIMEOUT + 5) == (200, b'{"messages": []}')


@pytest.mark.timeout(60)
def test_a_session_ends_when_its_user_stops_polling(start_api, amqp_url, service):
    api = start_api("--session-idle", "1")
    queue = f"rpc_{service}_queue_erin"
    assert http_get(f"{api.base_url}/poll?user=erin", timeout=POLL_TIMEOUT + 5) == (200, b'{"messages": []}')
    # one queue and one consumer for the whole session, not one per poll; gone once she stopped polling
    eventually(lambda: queue_state(amqp_url, queue) == (0, 0), "erin's session to end")


@pytest.mark.timeout(60)
def test_a_session_whose_queue_vanished_opens_again_at_the_next_poll(start_api, core, amqp_url, service):
    api = start_api()
    queue = f"rpc_{service}_queue_frank"
    assert http_get(f"{api.base_url}/poll?user=frank", timeout=POLL_TIMEOUT + 5) == (200, b'{"messages": []}')
    connection = connect(amqp_url)
    connection.channel().queue_delete(queue)  # as a broker restart does to a queue that is not durable
    connection.close()
    eventually(lambda: queue_state(amqp_url, queue) is None, "frank's queue to be gone")
    poll = gevent.spawn(http_get, f"{api.base_url}/poll?user=frank")
    wait_until_polling(amqp_url, service, "frank")  # the poll made his queue again, with a new receiver
    status, output = finish(core("frank", "back"))
    assert status == 0, output
    assert poll.get(timeout=15) == (200, b'{"messages": ["back"]}')


@pytest.mark.timeout(60)
def test_message_to_a_user_nobody_polls_for_is_unroutable(start_api, core):
    start_api()
    status, output = finish(core("dave", "anyone there?"))
    assert status == 1, output
    assert output.startswith("Unroutable: nobody polls for 'dave'"), output


@pytest.mark.timeout(60)
def test_bad_requests_are_refused(start_api):
    api = start_api()
    assert http_get(f"{api.base_url}/poll?user=no%20spaces")[0] == 400
    assert http_get(f"{api.base_url}/poll")[0] == 400
    assert http_get(f"{api.base_url}/elsewhere?user=erin")[0] == 404
    status, page = http_get(api.page("erin"))
    assert status == 200 and b'<ul id="messages">' in page
