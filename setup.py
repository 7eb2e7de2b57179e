"""amphora: reliable RPC for gevent over AMQP 0-9-1 (RabbitMQ)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = next(
    line.split('"')[1]
    for line in (HERE / "amphora" / "__init__.py").read_text().splitlines()
    if line.startswith("__version__")
)

setup(
    name="amphora",
    version=VERSION,
    description="Reliable RPC for gevent over AMQP 0-9-1 (RabbitMQ): no request or reply lost",
    long_description=(HERE / "README.rst").read_text(),
    long_description_content_type="text/x-rst",
    license="MIT",
    packages=find_packages(include=["amphora", "amphora.*"]),
    package_data={"amphora": ["py.typed"], "amphora.amqp": ["API.md"]},
    python_requires=">=3.11",
    install_requires=["gevent>=23.9", "pamqp>=3.2,<5"],
    entry_points={"console_scripts": ["amphora = amphora.cli:main"]},
    extras_require={
        "msgpack": ["msgpack>=1.0"],
        "fast": ["orjson>=3.9", "msgspec>=0.18"],
        "prometheus": ["prometheus_client>=0.17"],
        "test": [
            "pytest>=7",
            "pytest-timeout>=2.1",
            "hypothesis>=6",
            "msgpack>=1.0",
            "orjson>=3.9",
            "msgspec>=0.18",
            "prometheus_client>=0.17",
            "ruff>=0.17,<0.18",  # pinned to a minor version: formatting rules change between them
            "mypy>=2.4,<2.5",
            "sphinx>=7",
            "furo>=2024.1.29",
            "pika>=1.3",  # docs/protocol.rst's example of a foreign client, run by tests/test_docs_examples.py
        ],
        "bench": ["pika>=1.3"],
        "docs": ["sphinx>=7", "furo>=2024.1.29"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Framework :: gevent",
        "Topic :: System :: Networking",
        "Topic :: System :: Distributed Computing",
    ],
)
