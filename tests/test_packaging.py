"""The distribution: ``python -m build`` makes an sdist and a wheel, and each installs into a new virtual
environment where the ``amphora`` command runs and a client calls a server through the broker."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import amphora

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTION = "amphora_rpc"

SMOKE = """
import sys
import amphora
from amphora import AmqpRpcClient, AmqpRpcServer

assert amphora.__file__.startswith(sys.prefix), amphora.__file__  # the installed copy, not the checkout
server = AmqpRpcServer("packaging_smoke", url=sys.argv[1])
server.add_function(lambda x, y: x + y, name="add")
server.serve()
client = AmqpRpcClient("packaging_smoke", url=sys.argv[1], timeout=20)
print(client.call.add(2, 3))
assert "orjson" not in sys.modules and "msgpack" not in sys.modules  # msgspec is the only codec
client.stop()
server.stop()
"""

pytestmark = pytest.mark.timeout(600)


def run(*command: str | Path, cwd: Path) -> str:
    # without PYTHONPATH: a checkout on it (and the egg-info the build leaves there) would pass for the install
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    result = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=500, env=env)
    assert result.returncode == 0, f"{' '.join(map(str, command))}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel, built from the checkout."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, ROOT, cwd=out)
    version = amphora.__version__
    return {
        "sdist": out / f"{DISTRIBUTION}-{version}.tar.gz",
        "wheel": out / f"{DISTRIBUTION}-{version}-py3-none-any.whl",
    }


def test_the_wheel_holds_the_package_its_data_and_the_command(built):
    names = set(zipfile.ZipFile(built["wheel"]).namelist())
    for expected in (
        "amphora/__init__.py",
        "amphora/py.typed",
        "amphora/amqp/API.md",
        "amphora/testing/node.py",
        "amphora/memory/broker.py",
    ):
        assert expected in names
    assert not any(name.startswith(("tests/", "bench/", "examples/")) for name in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "amphora = amphora.cli:main" in zipfile.ZipFile(built["wheel"]).read(entry_points).decode()
    metadata = zipfile.ZipFile(built["wheel"]).read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    assert "Requires-Dist: msgspec" in metadata.decode()  # the codec of every install, not an extra's


def test_the_sdist_holds_the_sources_and_the_metadata(built):
    names = {name.split("/", 1)[1] for name in tarfile.open(built["sdist"]).getnames() if "/" in name}
    assert {"pyproject.toml", "README.rst", "amphora/__init__.py", "amphora/py.typed"} <= names


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_it_installs_into_a_new_environment_and_works(kind, built, tmp_path, amqp_url):
    run(sys.executable, "-m", "venv", tmp_path / "venv", cwd=tmp_path)
    python = tmp_path / "venv" / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", built[kind], cwd=tmp_path)
    assert run(tmp_path / "venv" / "bin" / "amphora", "--version", cwd=tmp_path) == f"amphora {amphora.__version__}\n"
    assert run(python, "-c", SMOKE, amqp_url, cwd=tmp_path) == "5\n"
