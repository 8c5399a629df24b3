"""Where the default configuration, evalscripts and bundled sample live.

Why: ``pip install .`` copies ``config/``, ``evalscripts/`` and ``sample/`` into the package as
``server/_bundled/`` (see ``pyproject.toml``), while a source checkout keeps them at the project
root. Every caller asks here, so both installs find the same files.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """Return the directory ``name`` (``config``, ``evalscripts`` or ``sample``)."""
    bundled = _PACKAGE_DIR / "_bundled" / name
    if bundled.is_dir():
        return bundled
    return _PACKAGE_DIR.parent / name


def default_config_path() -> Path:
    """The configuration served when no ``--config`` is given."""
    return resource_dir("config") / "eotiler.yaml"
