"""Where the broker is: the original ``amqp_*`` keywords, ``url=``, ``urls=``, or the ``AMQP_URL`` variable."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .amqp import ConnectionParameters

ENVIRONMENT_VARIABLE = "AMQP_URL"
_LEGACY_KEYWORDS = {
    "amqp_host": "host",
    "amqp_port": "port",
    "amqp_user": "user",
    "amqp_password": "password",
    "amqp_vhost": "vhost",
}
_CONNECTION_OPTIONS = ("heartbeat", "connection_timeout", "ssl_context")


def broker_parameters(
    url: str | None = None, urls: Sequence[str] | None = None, **options: Any
) -> list[ConnectionParameters]:
    """Connection parameters for each broker URL, in the order to try them.

    ``urls`` (several brokers of a cluster) wins over ``url``, which wins over ``$AMQP_URL``, which wins
    over the ``amqp_host``/``amqp_port``/``amqp_user``/``amqp_password``/``amqp_vhost`` keywords.
    ``heartbeat``, ``connection_timeout`` and ``ssl_context`` apply to every URL.
    """
    unknown = set(options) - set(_LEGACY_KEYWORDS) - set(_CONNECTION_OPTIONS)
    if unknown:
        raise TypeError(f"unknown connection option(s): {', '.join(sorted(unknown))}")
    common = {name: options[name] for name in _CONNECTION_OPTIONS if name in options}
    if urls is None and url is None:
        url = os.environ.get(ENVIRONMENT_VARIABLE)
    if urls is None and url is not None:
        urls = [url]
    if urls is not None:
        if not urls:
            raise ValueError("urls= is empty: give at least one broker URL")
        return [ConnectionParameters.from_url(u, **common) for u in urls]
    legacy = {field: options[key] for key, field in _LEGACY_KEYWORDS.items() if key in options}
    return [ConnectionParameters(**legacy, **common)]
