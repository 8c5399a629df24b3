"""The ``eotiler`` command: ``serve``, ``layers``, ``check-config``, ``seed`` and ``cache``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from server.errors import ConfigError, EotilerError
from server.resources import default_config_path


def _registry(path: Path):  # noqa: ANN202 - imported lazily to keep `--help` fast
    from server.catalog.layers import LayerRegistry
    from server.config import load_config

    return LayerRegistry(load_config(path))


def cmd_serve(args: argparse.Namespace) -> int:
    """Validate the configuration, then run uvicorn with one app per worker."""
    import uvicorn

    config = Path(args.config).resolve()
    # fail fast with a readable message instead of a worker traceback
    from server.serve_workers import validate, validate_apart

    buckets = validate_apart(config) if args.workers > 1 else validate(config)
    # Workers are separate processes built by the factory from EOTILER_* settings.
    os.environ["EOTILER_CONFIG"] = str(config)
    # Each worker takes its share of what the server shares out (EOTILER_RENDER_PIXELS).
    os.environ["EOTILER_WORKERS"] = str(args.workers)
    print(f"eotiler serving {config.name} at http://{args.host}:{args.port}", flush=True)
    with contextlib.ExitStack() as stack:
        if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # /metrics sums over all workers: each one writes its samples here (prometheus-client).
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="eotiler-metrics-")
            )
        if args.workers > 1:
            stack.enter_context(_shared_s3_gateway(frozenset(buckets)))
        options = dict(
            app="server.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            log_level="info",
            access_log=False,  # the app writes its own JSON access log (EOTILER_ACCESS_LOG)
            proxy_headers=True,
            # SIGTERM: stop accepting, let in-flight requests finish (up to this long), then exit.
            timeout_graceful_shutdown=args.graceful_timeout,
        )
        if args.workers > 1 and args.reuse_port:  # one socket per worker: connections spread evenly
            from server.serve_workers import serve

            serve(options, args.workers, args.graceful_timeout)
        else:
            uvicorn.run(**options, workers=args.workers)
    return 0


@contextlib.contextmanager
def _shared_s3_gateway(buckets: frozenset[str]) -> Iterator[None]:
    """One S3 gateway for all workers, so the quota holds for the whole server (not per worker).

    Workers find it through ``EOTILER_S3_GATEWAY_ADDRESS``; its counters reach ``/metrics``
    through the multiprocess directory like every worker's own.
    """
    if not buckets:  # nothing on S3: the supervisor imports nothing of the reading side
        yield
        return
    from prometheus_client import CollectorRegistry

    from server.api.observability import REFRESH_SECONDS, GatewayMetrics
    from server.settings import Settings
    from server.sources.s3_gateway_process import GatewayProcess

    settings = Settings()
    if not settings.s3_gateway or settings.s3_gateway_address:
        yield
        return
    gateway = GatewayProcess(settings.gateway_options(buckets))
    os.environ["EOTILER_S3_GATEWAY_ADDRESS"] = gateway.start()
    stop = GatewayMetrics(gateway.stats, CollectorRegistry()).run_every(REFRESH_SECONDS)
    try:
        yield
    finally:
        stop.set()
        gateway.stop()
        os.environ.pop("EOTILER_S3_GATEWAY_ADDRESS", None)


def cmd_layers(args: argparse.Namespace) -> int:
    """Print the configured layers as a table."""
    from rich.console import Console
    from rich.table import Table

    registry = _registry(Path(args.config))
    table = Table(title=f"Layers in {args.config}")
    for column in ("id", "title", "collection", "script", "runs in", "output", "scenes", "dates"):
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
            layer.evalscript.runtime,
            f"{out.bands} x {out.sample_type.value}",
            str(len(layer.catalogue.scenes)) if layer.catalogue.enumerable else "STAC API",
            span,
        )
    Console(width=160).print(table)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Load the configuration and run every evalscript once; report problems and exit 1."""
    registry = _registry(Path(args.path))
    print(f"{args.path}: OK ({len(registry.layers)} layers, {len(registry.config.collections)} collections)")
    return 0


def _parse_bbox(text: str) -> tuple[float, float, float, float]:
    from server.errors import InvalidParameter
    from server.ogc.crs import parse_bbox

    west, south, east, north = parse_bbox(text, "bbox")
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise InvalidParameter("bbox must be W,S,E,N in degrees", parameter="bbox")
    return west, south, east, north


def cmd_seed(args: argparse.Namespace) -> int:
    """Pre-render tiles of a layer into the shared (Redis) cache, with a progress bar."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from server.cache import seed
    from server.grids import get_tms
    from server.models import ImageFormat, parse_time
    from server.pipeline import Pipeline
    from server.settings import Settings

    settings = Settings(config=Path(args.config))
    if not settings.redis_url:
        print("seeding needs EOTILER_REDIS_URL: tiles seeded into this process's memory would vanish with it")
        return 2
    pipeline = Pipeline(_registry(settings.config), settings)
    layer = pipeline.registry.get(args.layer, parameter="layer")
    tms = get_tms(args.tms, "tms")
    fmt = ImageFormat.from_extension(args.format)
    time_range = parse_time(args.time, "time")
    tiles = seed.tile_list(tms, _parse_bbox(args.bbox), seed.parse_zooms(args.zooms))
    console = Console(stderr=True)
    console.print(f"seeding {len(tiles)} tiles of {layer.id} on {tms.id} ({args.zooms}) into {settings.redis_url}")
    columns = [*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("tiles", total=len(tiles))
        if args.dask:
            summary = seed.seed_dask(
                args.dask,
                layer.id,
                tms.id,
                tiles,
                fmt,
                args.time,
                args.concurrency,
                settings.config.resolve(),
                settings.redis_url,
                lambda n: progress.advance(task, n),
            )
        else:
            summary = seed.seed_local(
                pipeline,
                layer.id,
                tms.id,
                tiles,
                fmt,
                time_range,
                args.concurrency,
                lambda: progress.advance(task),
            )
    pipeline.close()
    print(
        f"rendered {summary.rendered}, skipped {summary.skipped} (already cached), failed {summary.failed}, "
        f"{summary.bytes / 1e6:.1f} MB, {summary.elapsed_s:.1f} s"
    )
    for message in summary.errors:
        print(f"  failed: {message}")
    return 1 if summary.failed else 0


def cmd_cache(args: argparse.Namespace) -> int:
    """``cache stats`` / ``cache clear [--layer L]`` on the shared Redis level."""
    import json

    from server.cache.tile_cache import TileCache
    from server.settings import Settings

    settings = Settings()
    if not settings.redis_url:
        print("EOTILER_REDIS_URL is not set: the only cache is each server process's own memory (see /cache/stats)")
        return 2
    cache = TileCache(0, settings.redis_url, settings.cache_ttl)
    if args.action == "stats":
        print(json.dumps(cache.stats()["redis"], indent=2))
        return 0
    deleted = cache.clear(args.layer)
    print(f"deleted {deleted} cached images" + (f" of layer {args.layer}" if args.layer else ""))
    return 0


def _package_version() -> str:
    try:
        return version("eotiler")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _env(name: str, fallback: str) -> str:
    """An option's default from ``EOTILER_<NAME>``, so a container or unit file sets it without arguments.

    argparse converts a string default with the option's ``type``: a bad value is a usage error naming
    the option. The fallbacks equal ``server.settings.Settings``' defaults (tests/test_cli.py checks).
    """
    return os.environ.get(f"EOTILER_{name}") or fallback


def _add_serve(sub: argparse._SubParsersAction, config_default: str) -> None:
    serve = sub.add_parser(
        "serve",
        help="serve the configured layers over HTTP",
        description="Serve the configured layers over HTTP (XYZ tiles, WMS, WMTS, WCS, viewer at /).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serve.add_argument("--config", default=config_default, help="configuration file; env EOTILER_CONFIG")
    serve.add_argument("--host", default=_env("HOST", "127.0.0.1"), help="address to listen on; env EOTILER_HOST")
    serve.add_argument("--port", type=int, default=_env("PORT", "8000"), help="port to listen on; env EOTILER_PORT")
    serve.add_argument(
        "--workers", type=int, default=_env("WORKERS", "1"), help="server processes; env EOTILER_WORKERS"
    )
    serve.add_argument(
        "--reuse-port",
        action="store_true",
        help="give each worker its own SO_REUSEPORT socket, so keep-alive connections spread evenly "
        "(best with EOTILER_REDIS_URL: each worker's memory cache then sees only its share)",
    )
    serve.add_argument(
        "--graceful-timeout",
        type=float,
        default=_env("GRACEFUL_TIMEOUT", "30"),
        help="seconds in-flight requests get after SIGTERM before the process exits; env EOTILER_GRACEFUL_TIMEOUT",
    )
    serve.set_defaults(func=cmd_serve)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="eotiler", description="OGC tile and map server for Copernicus data")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    default = os.environ.get("EOTILER_CONFIG") or str(default_config_path())
    _add_serve(sub, default)
    layers = sub.add_parser("layers", help="list the configured layers")
    layers.add_argument("--config", default=default)
    layers.set_defaults(func=cmd_layers)
    check = sub.add_parser("check-config", help="validate a configuration and its evalscripts")
    check.add_argument("path")
    check.set_defaults(func=cmd_check_config)
    seed = sub.add_parser("seed", help="pre-render tiles into the shared cache (needs EOTILER_REDIS_URL)")
    seed.add_argument("--config", default=default)
    seed.add_argument("--layer", required=True)
    seed.add_argument("--bbox", required=True, help="W,S,E,N in degrees (write --bbox=-9,53,-8,54 when W is negative)")
    seed.add_argument("--zooms", required=True, help="e.g. 8-12")
    seed.add_argument("--time", default=None, help="TIME as on tile requests (instant, month, start/end)")
    seed.add_argument("--tms", default="WebMercatorQuad")
    seed.add_argument("--format", default="png", help="png, jpg, webp or tif")
    seed.add_argument("--concurrency", type=int, default=4, help="tiles rendered at once (CDSE quota: 4)")
    seed.add_argument(
        "--dask", default=None, metavar="ADDRESS", help="dask.distributed scheduler, e.g. tcp://host:8786"
    )
    seed.set_defaults(func=cmd_seed)
    cache = sub.add_parser("cache", help="statistics of, or clear, the shared Redis cache")
    cache.add_argument("action", choices=["stats", "clear"])
    cache.add_argument("--layer", default=None, help="clear only this layer's images")
    cache.set_defaults(func=cmd_cache)
    if not argv:  # nothing asked: the full help, with argparse's exit status for a usage error
        parser.print_help()
        return 2
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"configuration error:\n{exc.public_message}", file=sys.stderr)
        return 1
    except EotilerError as exc:
        print(f"error: {exc.public_message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
