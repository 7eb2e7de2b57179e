"""The documented math client: ``python examples/math_client.py`` (broker from $AMQP_URL or localhost)."""

from amphora import AmqpRpcClient, RemoteException, WrongRequest


def main() -> None:
    client = AmqpRpcClient("math")  # no sleep needed before the first call
    print("add(2, 3) =", client.call.add(2, 3))
    print("sub(10, 3) =", client.call.sub(10, 3))
    print("multiply(5, 5) =", client.call.multiply(5, 5))
    print("div(64, 16) =", client.call.div(64, 16))
    print("sum_numbers(1, 2, 3, 4) =", client.call.sum_numbers(1, 2, 3, 4))
    print("hypotenuse(3, 4) =", client.call.hypotenuse(3, 4))
    pending = [client.defer.multiply(n, n) for n in range(1, 6)]
    print("squares, deferred:", [result.get() for result in pending])
    try:
        client.call.div(1, 0)
    except RemoteException as exc:
        print("div(1, 0) raised remotely:", exc)
    try:
        client.call.hypotenuse("foo", "bar")
    except (WrongRequest, RemoteException) as exc:  # refused by this typed server; an untyped one raises
        print("hypotenuse('foo', 'bar') failed:", exc)
    client.stop()


if __name__ == "__main__":
    main()
