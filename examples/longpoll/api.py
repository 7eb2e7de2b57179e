"""An "API" server of the long-polling example: serves users' pages and hands them their messages.

Run several, each on its own port, against the same broker (``$AMQP_URL``)::

    python examples/longpoll/api.py --port 8001

``GET /?user=NAME`` is the user's page; its script long-polls ``GET /poll?user=NAME``. Each poll makes sure
the user's request queue exists, then lets this process's RPC server take one request from it
(``receive_from_queue(user, max_calls=1, timeout=...)``): Core's ``show_message(user, text)`` call, routed
by user, runs here and leaves the text in the user's mailbox, which the poll returns. A message sent
between two polls waits in the (durable) queue until the next poll takes it.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import re
import signal
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import gevent
from gevent.event import Event
from gevent.pywsgi import WSGIServer

from amphora import AmqpRpcServer

DEFAULT_SERVICE = "messages"
USER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""Allowed user names: a name becomes part of a queue name and is the routing key of its messages."""

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


class Mailboxes:
    """Messages the RPC handler took for each user, until that user's poll picks them up."""

    def __init__(self) -> None:
        self._boxes: defaultdict[str, deque[str]] = defaultdict(deque)

    def put(self, user: str, text: str) -> None:
        self._boxes[user].append(text)

    def take_all(self, user: str) -> list[str]:
        box = self._boxes.pop(user, None)
        return list(box) if box else []


class LongPollApi:
    """The WSGI application of one API process, with its RPC server and the mailboxes it fills."""

    def __init__(self, name: str, service: str = DEFAULT_SERVICE, poll_timeout: float = 20.0) -> None:
        self.name = name
        self.poll_timeout = poll_timeout
        self.mailboxes = Mailboxes()
        # It serves only the per-key queues of the users it polls for, never the service's default queue.
        self.server = AmqpRpcServer(service, consume_default_queue=False)
        self.server.add_function(self.show_message, name="show_message")
        self.server.serve()

    def show_message(self, user: str, text: str) -> str:
        """RPC from Core: keep ``text`` for ``user``'s poll; the reply names the API server that took it."""
        self.mailboxes.put(user, text)
        return self.name

    def poll(self, user: str) -> list[str]:
        """Wait up to ``poll_timeout`` seconds for messages to ``user``; an empty list if none came."""
        waiting = self.mailboxes.take_all(user)  # taken earlier, e.g. for a poll whose browser went away
        if waiting:
            return waiting
        # harmless if it exists (it keeps what waits in it); gone once nobody polled for a while
        self.server.create_new_request_queue(user, expires=max(60.0, 3 * self.poll_timeout))
        try:
            self.server.receive_from_queue(user, max_calls=1, timeout=self.poll_timeout)
        except gevent.Timeout:
            pass  # nothing for this user: the page polls again
        except ValueError:
            pass  # the queue was removed meanwhile: the next poll creates it again
        return self.mailboxes.take_all(user)

    def stop(self) -> None:
        """End the polls in progress (they answer empty) and disconnect from the broker."""
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    http = WSGIServer((args.host, args.port), application=None, log=None)
    http.init_socket()  # bound now: with --port 0 the API's name has the real port
    host, port = http.address[:2]
    http.application = api = LongPollApi(f"{host}:{port}", args.service, args.poll_timeout)
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
