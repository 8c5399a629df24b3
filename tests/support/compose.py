"""``deploy/compose.yaml`` as data: the tests run its replicas' environment without Docker."""

from __future__ import annotations

from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose.yaml"


def compose() -> dict:
    """The whole compose file."""
    return yaml.safe_load(COMPOSE.read_text())


def compose_environment() -> dict[str, str]:
    """The replicas' environment (``services.eotiler.environment``), values as strings."""
    return {k: str(v) for k, v in compose()["services"]["eotiler"]["environment"].items()}
