"""The S3 gateway's options, and their one-line JSON form for the gateway process's stdin."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from server.sources.gdal_env import S3Settings


def s3_buckets(data_roots: Iterable[str]) -> frozenset[str]:
    """The buckets that ``/vsis3/<bucket>[/...]`` data roots read from."""
    return frozenset(root.split("/")[2] for root in data_roots if root.startswith("/vsis3/") and root.split("/")[2])


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    """How the gateway talks upstream and what it may serve."""

    s3: S3Settings
    buckets: frozenset[str]
    connections: int = 4
    requests_per_minute: int = 2000
    budget: float = 20.0  # seconds one request may wait for the quota and its retries
    timeout: float = 20.0  # seconds one upstream request may take
    stall: float = 5.0  # seconds without a byte from the store before a request is given up
    index_dir: Path | None = None
    redis_url: str | None = None
    jp2_index: bool = True
    tile_part_bytes: int = 256 * 1024**2  # whole JPEG2000 tile-parts kept in memory
    tile_part_dir: Path | None = None  # ... and on disk (a gateway started again does not refetch them)
    tile_part_disk_bytes: int = 0
    linger: float = 0.015  # seconds a connection slot stays taken after its answer (``Governor``)


def options_to_json(options: GatewayOptions) -> str:
    """The options as one JSON line for the gateway process (secrets included: stdin only)."""
    s3 = options.s3
    fields = {
        "s3": {
            "endpoint": s3.endpoint,
            "https": s3.https,
            "virtual_hosting": s3.virtual_hosting,
            "region": s3.region,
            "access_key_id": s3.access_key_id.get_secret_value() if s3.access_key_id else None,
            "secret_access_key": s3.secret_access_key.get_secret_value() if s3.secret_access_key else None,
            "no_sign_request": s3.no_sign_request,
        },
        "buckets": sorted(options.buckets),
        "index_dir": str(options.index_dir) if options.index_dir is not None else None,
        "tile_part_dir": str(options.tile_part_dir) if options.tile_part_dir is not None else None,
    }
    names = ("connections", "requests_per_minute", "budget", "timeout", "stall", "redis_url", "jp2_index", "linger")
    for name in names:
        fields[name] = getattr(options, name)
    fields["tile_part_bytes"] = options.tile_part_bytes
    fields["tile_part_disk_bytes"] = options.tile_part_disk_bytes
    return json.dumps(fields)


def options_from_json(text: str) -> GatewayOptions:
    """The inverse of ``options_to_json``."""
    fields = json.loads(text)
    raw = fields.pop("s3")
    secrets = {k: SecretStr(raw[k]) if raw[k] else None for k in ("access_key_id", "secret_access_key")}
    s3 = S3Settings(**{**raw, **secrets})
    raw_dirs = {name: fields.pop(name) for name in ("index_dir", "tile_part_dir")}
    dirs = {name: Path(value) if value else None for name, value in raw_dirs.items()}
    buckets = frozenset(fields.pop("buckets"))
    return GatewayOptions(s3, buckets, **dirs, **fields)
