"""Every test that touches the network runs against a private RabbitMQ node (see amphora.testing)."""

pytest_plugins = ["amphora.testing"]
