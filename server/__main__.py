"""The ``eotiler`` command: ``serve``, ``layers`` and ``check-config``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from server.errors import ConfigError
from server.resources import default_config_path


def _registry(path: Path):  # noqa: ANN202 - imported lazily to keep `--help` fast
    from server.catalog.layers import LayerRegistry
    from server.config import load_config

    return LayerRegistry(load_config(path))


def cmd_serve(args: argparse.Namespace) -> int:
    """Validate the configuration, then run uvicorn with one app per worker."""
    import uvicorn

    config = Path(args.config).resolve()
    _registry(config)  # fail fast with a readable message instead of a worker traceback
    # Workers are separate processes built by the factory from EOTILER_* settings.
    os.environ["EOTILER_CONFIG"] = str(config)
    print(f"eotiler serving {config.name} at http://{args.host}:{args.port}", flush=True)
    uvicorn.run(
        "server.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="info",
        proxy_headers=True,
    )
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    """Print the configured layers as a table."""
    from rich.console import Console
    from rich.table import Table

    registry = _registry(Path(args.config))
    table = Table(title=f"Layers in {args.config}")
    for column in ("id", "title", "collection", "script", "output", "scenes", "dates"):
        table.add_column(column)
    for layer in registry.layers.values():
        out = layer.evalscript.output
        dates = sorted({t.date().isoformat() for t in layer.times})
        span = f"{dates[0]} .. {dates[-1]}" if dates else "-"
        table.add_row(
            layer.id,
            layer.config.title,
            layer.collection_id,
            layer.evalscript.name,
            f"{out.bands} x {out.sample_type.value}",
            str(len(layer.catalogue.scenes)),
            span,
        )
    Console(width=160).print(table)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Load the configuration and run every evalscript once; report problems and exit 1."""
    registry = _registry(Path(args.path))
    print(f"{args.path}: OK ({len(registry.layers)} layers, {len(registry.config.collections)} collections)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = argparse.ArgumentParser(prog="eotiler", description="OGC tile and map server for Copernicus data")
    sub = parser.add_subparsers(dest="command", required=True)
    default = os.environ.get("EOTILER_CONFIG") or str(default_config_path())
    serve = sub.add_parser("serve", help="serve the configured layers over HTTP")
    serve.add_argument("--config", default=default, help="configuration file (default: the bundled sample)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=cmd_serve)
    layers = sub.add_parser("layers", help="list the configured layers")
    layers.add_argument("--config", default=default)
    layers.set_defaults(func=cmd_layers)
    check = sub.add_parser("check-config", help="validate a configuration and its evalscripts")
    check.add_argument("path")
    check.set_defaults(func=cmd_check_config)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"configuration error:\n{exc.public_message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
