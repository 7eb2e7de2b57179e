"""The Tornado example (examples/tornado/app.py): an asyncio web app calling the math service, tested with
real HTTP requests, several at once, against examples/math_server.py in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest

pytest.importorskip("tornado")
pytestmark = pytest.mark.timeout(60)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def web_app(amqp_url: str) -> Iterator[str]:
    """The base URL of the web app, with the math server running."""
    env = {**os.environ, "AMQP_URL": amqp_url}
    math = subprocess.Popen([sys.executable, str(EXAMPLES / "math_server.py")], env=env)
    app = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "tornado" / "app.py"), "0"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert app.stdout is not None
        line = app.stdout.readline()
        assert line.startswith("listening on "), line
        yield f"http://127.0.0.1:{int(line.split()[-1])}"
        app.terminate()
        assert app.wait(20) == 0  # SIGTERM stops it cleanly
    finally:
        for process in (app, math):
            process.kill()
            process.wait()


def get(url: str) -> tuple[int, Any]:
    """Status and JSON body of a GET, sent from a thread (real HTTP; the hub keeps running)."""

    def fetch() -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    return gevent.get_hub().threadpool.apply(fetch)


def test_single_calls_and_a_remote_error(web_app):
    assert get(f"{web_app}/add?x=2&y=3") == (200, {"result": 5})
    assert get(f"{web_app}/hypotenuse?a=3&b=4") == (200, {"result": 5.0})
    status, body = get(f"{web_app}/div?x=1&y=0")
    assert status == 400 and body["error"].startswith("ZeroDivisionError")


def test_many_requests_at_once_each_making_many_calls_at_once(web_app):
    requests = [gevent.spawn(get, f"{web_app}/squares?n={n}") for n in range(1, 21)]
    requests += [gevent.spawn(get, f"{web_app}/add?x={n}&y={n}") for n in range(20)]
    gevent.joinall(requests, raise_error=True)
    results = [request.value for request in requests]
    assert results[:20] == [(200, {"result": [i * i for i in range(1, n + 1)]}) for n in range(1, 21)]
    assert results[20:] == [(200, {"result": 2 * n}) for n in range(20)]
