"""The documented math server: ``python examples/math_server.py`` (broker from $AMQP_URL or localhost).

Its type hints are checked on every call (a call with text for a number is refused) and published by
``amphora describe math`` and ``amphora asyncapi examples.math_server:server`` (docs/contracts.rst).
"""

from math import sqrt

from amphora import AmqpRpcServer

Number = int | float

server = AmqpRpcServer("math")


def add(x: Number, y: Number) -> Number:
    """The sum of x and y."""
    return x + y


def subtract(x: Number, y: Number) -> Number:
    """x minus y."""
    return x - y


server.add_function(add)
server.add_function(subtract, name="sub")


@server.add_function
def multiply(x: Number, y: Number) -> Number:
    """The product of x and y."""
    return x * y


@server.add_function("div")
def divide(x: Number, y: Number) -> float:
    """x divided by y; ZeroDivisionError if y is 0."""
    return x / y


@server.add_function
def sum_numbers(*args: Number) -> Number:
    """The sum of all the numbers given."""
    return sum(args)


@server.add_function
def hypotenuse(cathetus1: Number, cathetus2: Number) -> float:
    """The hypotenuse of a right triangle with these two sides."""
    return sqrt(cathetus1**2 + cathetus2**2)


if __name__ == "__main__":
    server.serve(nowait=False)
