"""The "Core" of the long-polling example: sends a message to a user, whichever API server they poll.

    python examples/longpoll/core.py alice "Hello, Alice!"      (broker from $AMQP_URL)

Core does not know which API server Alice's page polls: it calls ``show_message(user, text)`` with the
user as routing key (``tune_function``), so the request lands in Alice's own request queue, and the API
server polling for her takes it. Exit status: 0 delivered, 1 nobody polls for the user (Unroutable),
2 not delivered in time (no poll of the user took the message before the timeout: their session answered
"not shown", or it expired unread in their queue, unless an API server took it and died before answering:
RabbitMQ cannot tell), 3 no answer at all.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from amphora import AmqpRpcClient, NoResult, RequestExpired, RequestMayHaveRun, Unroutable

DEFAULT_SERVICE = "messages"
USER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""Allowed user names, as in api.py: a name is the routing key of the user's messages."""


def user_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The routing key of a ``show_message(user, text)`` call: its user."""
    return str(args[0] if args else kwargs["user"])


def send(user: str, text: str, service: str = DEFAULT_SERVICE, timeout: float = 10.0) -> tuple[int, str]:
    """Send ``text`` to ``user``'s page; returns the exit status and what happened, in words."""
    # A one-shot client: its reply queue outlives it by reply_queue_expires, so keep that short.
    # Transient messages: each goes to its user's own queue, where persisting it costs the broker a disk write
    # per queue (docs/longpolling.rst); if the broker restarts meanwhile, the call ends in NoResult, not silence.
    client = AmqpRpcClient(service, timeout=timeout, reply_queue_expires=max(30.0, 2 * timeout), persistent=False)
    client.tune_function("show_message", user_of)
    try:
        api = client.call.show_message(user, text)
    except Unroutable:
        return 1, (
            f"Unroutable: nobody polls for {user!r}. No API server has a request queue for this user "
            "(they never opened their page, or their queue was removed), so the message was not sent."
        )
    except (RequestExpired, RequestMayHaveRun) as exc:
        unless = "" if isinstance(exc, RequestExpired) else " (unless an API server took it and died before answering)"
        return 2, (
            f"Not delivered: {user!r} has a request queue, but no API server took the message within "
            f"{timeout:g} s ({user!r} is not polling now); it expired unread{unless}."
        )
    except NoResult:
        return 3, f"No answer within {timeout:g} s: the message to {user!r} may or may not have been shown."
    finally:
        client.stop()
    if api is None:
        return 2, (
            f"Not delivered: {user!r} has a session on an API server, but no poll of theirs took the message "
            f"within {timeout:g} s (their page is closed or offline)."
        )
    return 0, f"Delivered to {user!r}: the API server {api} handed it to their page."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("user", help="whom to send the message to")
    parser.add_argument("text", help="the message")
    parser.add_argument("--service", default=DEFAULT_SERVICE, help="amphora service name (default messages)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for delivery (default 10)")
    args = parser.parse_args(argv)
    if not USER_NAME.fullmatch(args.user):
        parser.error("a user name has 1 to 64 letters, digits, '_', '.' or '-'")
    status, outcome = send(args.user, args.text, args.service, args.timeout)
    print(outcome, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
