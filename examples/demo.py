"""Run the documented math server and client against a broker: ``python examples/demo.py``.

Uses the broker at ``$AMQP_URL`` (or ``amqp://guest:guest@127.0.0.1:5672/``) when one answers; otherwise it
starts a private RabbitMQ node for the demo (``amphora.testing.RabbitNode``) and removes it afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from amphora.amqp import connect
from amphora.amqp.errors import AMQPError
from amphora.testing import RabbitNode

HERE = Path(__file__).parent
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def broker_answers(url: str) -> bool:
    try:
        connect(url, connection_timeout=3).close()
    except AMQPError:
        return False
    return True


def run_demo(url: str) -> int:
    env = {**os.environ, "AMQP_URL": url}
    server = subprocess.Popen([sys.executable, str(HERE / "math_server.py")], env=env)
    try:
        return subprocess.call([sys.executable, str(HERE / "math_client.py")], env=env, timeout=120)
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    url = os.environ.get("AMQP_URL", DEFAULT_URL)
    if broker_answers(url):
        print(f"using the broker at {url.split('@')[-1]}", flush=True)
        return run_demo(url)
    print("no broker answers: starting a private RabbitMQ node for the demo", flush=True)
    with RabbitNode() as node:
        return run_demo(node.url)


if __name__ == "__main__":
    sys.exit(main())
