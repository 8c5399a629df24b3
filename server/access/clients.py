"""The client registry and the caller of the current request.

Why a context variable: every protocol resolves layers through ``LayerRegistry`` (and request
scripts through ``Layer.request_script``), deep below the code that knows the HTTP request. The
access middleware sets the caller once; Starlette's thread pool copies the context into sync
endpoints, so those two places can refuse a layer or a script without each protocol passing
the caller down. Outside a request (start-up, seeding, the thread pools of a render) there is
no caller and nothing is restricted: the check happens where a request first names a layer.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import TypeAdapter, ValidationError

from server.config.models import ClientConfig, Config
from server.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated client, as the rest of the server sees it (no credential in here)."""

    client_id: str
    layers: frozenset[str] | None  # None: every layer
    evalscripts: bool
    rate_limit: int | None
    instance_id: str | None

    def may_use(self, layer_id: str) -> bool:
        """Whether this client may use ``layer_id``."""
        return self.layers is None or layer_id in self.layers


current_caller: ContextVar[Caller | None] = ContextVar("eotiler_caller", default=None)


def _digest(value: str) -> bytes:
    """Keys are looked up by digest, so the lookup table holds no plain credential."""
    return hashlib.sha256(value.encode()).digest()


class ClientRegistry:
    """The configured clients, found by API key or instance id."""

    def __init__(self, clients: Mapping[str, ClientConfig]) -> None:
        self.clients = dict(clients)
        self.callers = {cid: _caller(cid, client) for cid, client in self.clients.items()}
        self._by_key = {
            _digest(key.get_secret_value()): cid for cid, client in self.clients.items() for key in client.api_keys
        }
        self.instances = {client.instance_id: cid for cid, client in self.clients.items() if client.instance_id}

    @property
    def open(self) -> bool:
        """No clients configured: anyone may use everything."""
        return not self.clients

    def by_key(self, key: str) -> Caller | None:
        """The client an API key belongs to (digests compared in constant time per candidate)."""
        wanted = _digest(key)
        found = next((cid for digest, cid in self._by_key.items() if hmac.compare_digest(digest, wanted)), None)
        return self.callers[found] if found else None

    def by_instance(self, instance_id: str) -> Caller | None:
        """The client of a configuration instance id."""
        cid = self.instances.get(instance_id)
        return self.callers[cid] if cid else None

    def secrets(self) -> list[str]:
        """Every credential value, for the log redaction filter (instance ids too: they admit)."""
        values = [c.secret.get_secret_value() for c in self.clients.values() if c.secret is not None]
        values += [k.get_secret_value() for c in self.clients.values() for k in c.api_keys]
        return values + list(self.instances)


def _caller(client_id: str, client: ClientConfig) -> Caller:
    layers = frozenset(client.layers) if client.layers is not None else None
    return Caller(client_id, layers, client.evalscripts, client.rate_limit, client.instance_id)


def with_clients_file(config: Config, path: Path | None) -> Config:
    """``config`` with the clients of ``path`` (``EOTILER_CLIENTS_FILE``) added.

    Why a separate file: a deployment keeps layers in a ConfigMap and credentials in a Secret.
    The file is a mapping of client id -> client, as under ``clients:``; an id given in both
    places is a configuration error rather than a silent override.
    """
    if path is None:
        return config
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the clients file ({type(exc).__name__})") from None
    if isinstance(raw, dict) and set(raw) == {"clients"}:
        raw = raw["clients"] or {}
    try:
        extra = TypeAdapter(dict[str, ClientConfig]).validate_python(raw)
    except ValidationError as exc:
        lines = [f"{path}: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
    twice = sorted(set(extra) & set(config.clients))
    if twice:
        raise ConfigError(f"{path}: client(s) also in the configuration: {', '.join(twice)}")
    try:  # validated again as a whole: the new clients' layers must exist
        return Config.model_validate({**dict(config), "clients": {**config.clients, **extra}})
    except ValidationError as exc:
        lines = [f"{path}: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
