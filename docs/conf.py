"""Sphinx configuration for amphora's documentation.

Build with ``python -m sphinx -W -b html docs docs/_build/html`` from the repository root.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # document the checkout, installed or not


def _version() -> str:
    for line in (ROOT / "amphora" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split('"')[1]
    return "unknown"


project = "amphora"
author = "the amphora authors"
copyright = "amphora authors"  # noqa: A001 - Sphinx's name
release = version = _version()

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
nitpicky = False
highlight_language = "python3"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True


try:
    import furo  # noqa: F401

    html_theme = "furo"
except ImportError:  # furo is in the docs and test extras; any Sphinx still builds the pages
    html_theme = "alabaster"

html_title = f"amphora {release}"
html_static_path: list[str] = []
