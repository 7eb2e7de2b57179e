"""An "API" server of the long-polling example: serves users' pages and hands them their messages.

Run several, each on its own port, against the same broker (``$AMQP_URL``)::

    python examples/longpoll/api.py --port 8001

``GET /?user=NAME`` is the user's page; its script long-polls ``GET /poll?user=NAME``. A user's first poll
opens a *session* on this process: it makes sure the user's request queue exists and starts one receiver
on it (``receive_from_queue(user, block=False)``), which stays until the user has not polled for a while.
Core's ``show_message(user, text)`` calls, routed by user, run here: each hands its text to the user's next
poll and returns this process's name once a poll has taken it, or ``None`` if no poll came before the
call's deadline. So a poll costs the broker nothing, and a reply that names this process means the text
went out in a poll's response. Messages sent while no session is open wait in the user's (durable) queue.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import re
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import gevent
from gevent.event import Event
from gevent.pywsgi import WSGIServer

from amphora import AmqpRpcServer, RequestContext
from amphora.receiver import QueueReceiver

DEFAULT_SERVICE = "messages"
USER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""Allowed user names: a name becomes part of a queue name and is the routing key of its messages."""
DEADLINE_HEADER = "x-amphora-deadline"
"""Unix time in milliseconds at which Core stops waiting for the reply (docs/protocol.rst)."""
REPLY_MARGIN = 0.5
"""Seconds before the call's deadline at which a message no poll took is answered "not shown"."""
MAX_WAITING_MESSAGES = 50_000
"""Messages this process may hold at once, waiting for their users' polls (the server's concurrency)."""

StartResponse = Callable[[str, list[tuple[str, str]]], Any]

PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Messages for {user}</title></head>
<body>
<h1>Messages for {user}</h1>
<p id="status">connecting</p>
<ul id="messages"></ul>
<script>
"use strict";
const user = {user_json};
const list = document.getElementById("messages");
const status = document.getElementById("status");

async function pollForever() {{
  for (;;) {{
    status.textContent = "waiting for messages";
    try {{
      const response = await fetch("/poll?user=" + encodeURIComponent(user), {{cache: "no-store"}});
      if (!response.ok) throw new Error("HTTP " + response.status);
      for (const text of (await response.json()).messages) {{
        const item = document.createElement("li");
        item.textContent = text;
        list.append(item);
      }}
    }} catch (error) {{
      status.textContent = "connection lost (" + error.message + "), retrying";
      await new Promise(resolve => setTimeout(resolve, 1000));
    }}
  }}
}}
pollForever();
</script>
</body>
</html>
"""


class Offer:
    """A text a ``show_message`` request offers to its user's next poll."""

    __slots__ = ("answered", "shown", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.shown = False
        self.answered = Event()  # set once a poll took it, or its session ended

    def settle(self, shown: bool) -> None:
        self.shown = shown
        self.answered.set()


class Session:
    """One user's long polling on this process: the receiver taking their requests, and the texts those
    requests offer, waiting for a poll."""

    def __init__(self) -> None:
        self.receiver: QueueReceiver | None = None
        self.offers: deque[Offer] = deque()
        self.arrived = Event()
        self.polls = 0  # polls in progress
        self.last_poll = time.monotonic()
        self.ended = False

    def offer(self, text: str, until: float) -> bool:
        """Offer ``text`` to the next poll: True once one took it, False if none did by ``until`` (monotonic)."""
        offer = Offer(text)
        self.offers.append(offer)
        self.arrived.set()
        if not offer.answered.wait(max(0.0, until - time.monotonic())):
            self.offers.remove(offer)  # no poll came: withdraw it (one greenlet runs at a time, so it is there)
        return offer.shown

    def take(self, timeout: float) -> list[str]:
        """The texts offered, waiting up to ``timeout`` seconds for the first; [] if none came."""
        deadline = time.monotonic() + timeout
        while not self.offers and not self.ended:
            self.arrived.clear()
            if not self.arrived.wait(max(0.0, deadline - time.monotonic())):
                break
        texts = []
        while self.offers:
            offer = self.offers.popleft()
            offer.settle(shown=True)
            texts.append(offer.text)
        return texts

    def end(self) -> None:
        """Take no more requests; the texts still offered are answered "not shown" at once."""
        self.ended = True
        if self.receiver is not None:
            self.receiver.stop()
        while self.offers:
            self.offers.popleft().settle(shown=False)
        self.arrived.set()


class LongPollApi:
    """The WSGI application of one API process: its RPC server and the users' sessions."""

    def __init__(
        self, name: str, service: str = DEFAULT_SERVICE, poll_timeout: float = 20.0, session_idle: float | None = None
    ) -> None:
        self.name = name
        self.poll_timeout = poll_timeout
        self.session_idle = 2 * poll_timeout if session_idle is None else session_idle
        self.sessions: dict[str, Session] = {}
        # It serves only the per-key queues of the users it polls for, never the service's default queue.
        self.server = AmqpRpcServer(service, consume_default_queue=False, concurrency=MAX_WAITING_MESSAGES)
        self.server.add_function(self.show_message, name="show_message", context=True)
        self.server.serve()
        self._reaper = gevent.spawn(self._end_idle_sessions)

    def show_message(self, context: RequestContext, user: str, text: str) -> str | None:
        """RPC from Core: hand ``text`` to ``user``'s next poll. Returns this API server's name once a poll took
        it, None if no poll did before the call's deadline (or the session ended first)."""
        session = self.sessions.get(user)
        deadline = context.headers.get(DEADLINE_HEADER)
        if isinstance(deadline, int):
            until = time.monotonic() + deadline / 1000 - time.time() - REPLY_MARGIN
        else:
            until = time.monotonic() + self.poll_timeout
        if session is None or session.ended or not session.offer(text, until):
            return None
        return self.name

    def poll(self, user: str, timeout: float | None = None) -> list[str]:
        """Wait up to ``timeout`` seconds (``poll_timeout`` by default) for messages to ``user``; an empty list
        if none came."""
        session = self._session(user)
        session.polls += 1
        try:
            return session.take(self.poll_timeout if timeout is None else timeout)
        finally:
            session.polls -= 1
            session.last_poll = time.monotonic()

    def _session(self, user: str) -> Session:
        """The user's session, opened now if there is none: their queue made, a receiver started on it."""
        session = self.sessions.get(user)
        if session is not None and not (session.receiver is not None and session.receiver.done):
            return session
        if session is not None:  # its receiver ended: the queue was deleted, or did not survive a broker restart
            session.end()
        session = self.sessions[user] = Session()
        try:
            # gone once nobody polled for a while (and no session consumes it), and at a broker restart:
            # transient messages need no durable queue, and the broker recovers many durable ones slowly
            self.server.create_new_request_queue(user, expires=max(60.0, 3 * self.poll_timeout), durable=False)
            session.receiver = self.server.receive_from_queue(user, block=False)
        except BaseException:
            self.sessions.pop(user, None)
            session.end()
            raise
        return session

    def _end_idle_sessions(self) -> None:
        """End the sessions of users who have not polled for ``session_idle`` seconds (their page is gone)."""
        while True:
            gevent.sleep(max(0.1, self.session_idle / 4))
            idle_since = time.monotonic() - self.session_idle
            for user, session in list(self.sessions.items()):
                if not session.polls and session.last_poll < idle_since:
                    del self.sessions[user]
                    session.end()

    def stop(self) -> None:
        """End the sessions (polls in progress answer empty) and disconnect from the broker."""
        self._reaper.kill()
        for session in self.sessions.values():
            session.end()
        self.sessions.clear()
        self.server.stop()

    # --- WSGI ----------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        user = parse_qs(environ.get("QUERY_STRING", "")).get("user", [""])[0]
        if environ["REQUEST_METHOD"] != "GET" or path not in ("/", "/poll"):
            return _respond(start_response, "404 Not Found", "text/plain", b"not found\n")
        if not USER_NAME.fullmatch(user):
            return _respond(start_response, "400 Bad Request", "text/plain", b"?user=NAME: letters, digits, _.-\n")
        if path == "/":
            page = PAGE.format(user=html.escape(user), user_json=json.dumps(user))
            return _respond(start_response, "200 OK", "text/html; charset=utf-8", page.encode())
        body = json.dumps({"messages": self.poll(user)}).encode()
        return _respond(start_response, "200 OK", "application/json", body)


def _respond(start_response: StartResponse, status: str, content_type: str, body: bytes) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Cache-Control", "no-store")])
    return [body]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="port to listen on; 0 picks a free one")
    parser.add_argument("--service", default=DEFAULT_SERVICE, help="amphora service name (default messages)")
    parser.add_argument("--poll-timeout", type=float, default=20.0, help="seconds a poll waits (default 20)")
    parser.add_argument(
        "--session-idle",
        type=float,
        help="seconds without a poll after which a user's session ends (default: twice the poll timeout)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    http = WSGIServer((args.host, args.port), application=None, log=None)
    http.init_socket()  # bound now: with --port 0 the API's name has the real port
    host, port = http.address[:2]
    http.application = api = LongPollApi(f"{host}:{port}", args.service, args.poll_timeout, args.session_idle)
    http.start()
    print(f"API server {api.name} serving http://{host}:{port}/?user=NAME (service {args.service})", flush=True)

    stopping = Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stopping.set)
    stopping.wait()
    http.close()  # no new connections
    api.stop()  # polls in progress end empty
    http.stop(timeout=2)


if __name__ == "__main__":
    main()
