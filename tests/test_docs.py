"""The Sphinx documentation in docs/ builds without a single warning (as ``sphinx -W`` requires)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.timeout(120)
def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="sphinx is not installed: pip install -e '.[docs]' to build the docs")
    output = tmp_path / "html"
    # A fresh interpreter: Sphinx imports amphora for autodoc, and a clean build sees every warning.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-E",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    report = f"sphinx exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, report
    assert "WARNING" not in result.stderr and "ERROR" not in result.stderr, report
    assert (output / "index.html").is_file(), report
