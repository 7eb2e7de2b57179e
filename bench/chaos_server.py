"""A server of the chaos run (``bench.chaos``), in its own process so that it can be killed with -9.

``python -m bench.chaos_server SERVICE URLS_JSON LOG [--queue-type quorum] [--concurrency N]``

It serves ``work(tag, n)``, which appends ``tag n`` to LOG (one line per execution, written before the
reply, line-buffered so that a kill -9 loses no line), waits 0-20 ms like a real handler, and returns
``[tag, n, n * n]``. It prints ``ready`` once serving and stops gracefully on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import random

import gevent

from amphora import AmqpRpcServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("service")
    parser.add_argument("urls", help="a JSON list of broker URLs")
    parser.add_argument("log")
    parser.add_argument("--queue-type", default="classic", choices=("classic", "quorum"))
    parser.add_argument("--concurrency", type=int, default=100)
    options = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s server %(process)d %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("amphora.link").setLevel(logging.INFO)  # reconnections, for the run's record
    server = AmqpRpcServer(
        options.service,
        urls=json.loads(options.urls),
        concurrency=options.concurrency,
        queue_type=options.queue_type,
    )
    log = open(options.log, "a", buffering=1)  # noqa: SIM115 - open until the process ends

    @server.add_function
    def work(tag: str, n: int) -> list[object]:
        log.write(f"{tag} {n}\n")
        gevent.sleep(random.uniform(0, 0.02))
        return [tag, n, n * n]

    server.serve_forever(on_ready=lambda: print("ready", flush=True))


if __name__ == "__main__":
    main()
