"""One adapter per AMQP client library, all behind the same small, callback-driven interface.

The workloads in :mod:`bench.driver` only ever call these methods, so every library runs exactly the
same workload. The setup and teardown methods block the calling greenlet until the broker answers;
``publish_confirmed`` and ``request`` never block, and the callbacks they lead to run wherever the
library delivers events (its reader greenlet, or gevent's hub for pika).

``Client(url)``                     connect
``prepare_confirm(queue)``          declare a durable ``queue`` and open a channel in confirm mode
``purge()``                         purge that queue
``publish_confirmed(body)``         publish a transient message to it; the adapter calls
                                    ``on_confirmed(count, ok)`` as the broker settles publishes
                                    (``count`` of them at once; ``ok`` False for nacks)
``prepare_rpc(request_queue)``      declare ``request_queue`` (transient) and an exclusive reply queue,
                                    and consume the replies (no-ack): ``on_reply(correlation_id, body)``
``request(correlation_id, body)``   publish a request with reply_to = the reply queue (no confirms)
``serve_echo(request_queue)``       in the responder process: consume ``request_queue`` (no-ack) and
                                    publish each body to its reply_to with the same correlation_id
``delete_queue(queue)``, ``close()``
``on_confirmed``, ``on_reply``      attributes the driver sets before a workload
"""

from __future__ import annotations

import importlib

CLIENTS = {
    "amphora": "bench.clients.amphora_amqp",
    "pika": "bench.clients.pika_gevent",
    "raw": "bench.clients.raw_pamqp",
}
"""Client name -> module defining ``Client``. The first is ours: the ratios compare it to the others."""
YARDSTICKS = {"raw-protocol": "bench.clients.raw_protocol"}
"""Further clients ``bench.rpc`` compares with (``bench.amqp_layer`` does not run them)."""


def load(name: str) -> type:
    """The ``Client`` class of the adapter called ``name``."""
    return importlib.import_module({**CLIENTS, **YARDSTICKS}[name]).Client
