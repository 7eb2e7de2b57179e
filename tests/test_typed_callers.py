"""Typed callers: a Protocol bound to ``client.call`` calls as ``client.call`` does, and mypy checks the calls."""

from __future__ import annotations

import textwrap
from typing import Protocol

import pytest
from mypy import api as mypy_api

from amphora import RemoteException, typed

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def amqp_url(any_broker_url: str) -> str:
    """Every test here given a broker runs on the RabbitMQ node and on the in-process broker (memory://)."""
    return any_broker_url


class MathService(Protocol):
    def add(self, x: int, y: int) -> int: ...

    def div(self, x: float, y: float) -> float: ...


def test_a_typed_caller_calls_like_client_call(make_server, make_client):
    server = make_server()
    server.add_function(lambda x, y: x + y, name="add")
    server.add_function(lambda x, y: x / y, name="div")
    server.add_function(lambda: "hidden", name="other")
    server.serve()
    client = make_client(timeout=10)
    math = typed(client.call, MathService)
    assert math.add(2, 3) == 5
    with pytest.raises(RemoteException, match="ZeroDivisionError"):
        math.div(1, 0)
    assert typed(client.call(timeout=5), MathService).add(x=1, y=1) == 2
    with pytest.raises(AttributeError, match="'other' is not a function of this service's protocol"):
        math.other()  # type: ignore[attr-defined]


def test_a_protocol_without_functions_is_refused():
    class Empty(Protocol):
        pass

    with pytest.raises(TypeError, match="Empty declares no functions"):
        typed(object(), Empty)  # type: ignore[arg-type]


def test_mypy_checks_the_calls_of_a_typed_caller(tmp_path):
    program = tmp_path / "caller.py"
    program.write_text(
        textwrap.dedent("""
        from typing import Protocol
        from amphora import AmqpRpcClient, typed

        class MathService(Protocol):
            def add(self, x: int, y: int) -> int: ...

        math = typed(AmqpRpcClient("math").call, MathService)
        total: int = math.add(1, 2)
        text: str = math.add(1, 2)
        math.add("1", 2)
        math.subtract(1, 2)
    """)
    )
    out, _, status = mypy_api.run([str(program), "--no-incremental", "--follow-imports=silent"])
    assert status == 1
    errors = [line.split(": error: ")[1] for line in out.splitlines() if ": error: " in line]
    assert len(errors) == 3, out
    assert 'Incompatible types in assignment (expression has type "int", variable has type "str")' in errors[0]
    assert 'Argument 1 to "add" of "MathService" has incompatible type "str"; expected "int"' in errors[1]
    assert '"MathService" has no attribute "subtract"' in errors[2]
