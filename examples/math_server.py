"""The documented math server: ``python examples/math_server.py`` (broker from $AMQP_URL or localhost)."""

from math import sqrt

from amphora import AmqpRpcServer

server = AmqpRpcServer("math")


def add(x, y):
    return x + y


def subtract(x, y):
    return x - y


server.add_function(add)
server.add_function(subtract, name="sub")


@server.add_function
def multiply(x, y):
    return x * y


@server.add_function("div")
def divide(x, y):
    return x / y


@server.add_function
def sum_numbers(*args):
    return sum(args)


@server.add_function
def hypotenuse(cathetus1, cathetus2):
    return sqrt(cathetus1**2 + cathetus2**2)


if __name__ == "__main__":
    server.serve(nowait=False)
