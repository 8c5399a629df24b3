"""Load ``config/*.yaml`` in stages, reporting every problem with file and key path.

Stages (as MapProxy does it): YAML syntax -> types (pydantic) -> references (collections,
evalscript files, catalogue and data paths, expression band names). Compiling evalscripts is
the last stage and happens where layers are built (``server.catalog.layers``), because it needs
the evalscript package.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from server.config.models import Config, StaticCatalogue
from server.errors import ConfigError


def _format_loc(loc: tuple[object, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif str(item) in ("static", "stac-api"):  # discriminator tags add no information
            continue
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _read_yaml(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read file ({exc.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{where}: YAML syntax error: {problem}") from None


def _resolve(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else (base / path).resolve()


def _check_references(config: Config, base: Path) -> list[str]:
    problems: list[str] = []
    scripts_dir = _resolve(base, config.evalscripts_dir)
    for cid, collection in config.collections.items():
        if isinstance(collection.catalogue, StaticCatalogue):
            cat_path = _resolve(base, collection.catalogue.path)
            if not cat_path.is_dir():
                problems.append(f"collections.{cid}.catalogue.path: directory not found: {cat_path}")
        if not collection.data_root.startswith("/vsi"):
            root = _resolve(base, Path(collection.data_root))
            if not root.is_dir():
                problems.append(f"collections.{cid}.data_root: directory not found: {root}")
    for lid, layer in config.layers.items():
        if layer.collection not in config.collections:
            known = ", ".join(config.collections)
            problems.append(f"layers.{lid}.collection: unknown collection '{layer.collection}' (known: {known})")
        if layer.evalscript is not None:
            script = scripts_dir / layer.evalscript
            if not script.is_file():
                problems.append(f"layers.{lid}.evalscript: file not found: {script}")
    return problems


def resolve_paths(config: Config, base: Path) -> Config:
    """Return a copy with every relative path made absolute against the config file's folder."""
    collections = {}
    for cid, collection in config.collections.items():
        update: dict[str, object] = {}
        if isinstance(collection.catalogue, StaticCatalogue):
            update["catalogue"] = collection.catalogue.model_copy(
                update={"path": _resolve(base, collection.catalogue.path)}
            )
        if not collection.data_root.startswith("/vsi"):
            update["data_root"] = str(_resolve(base, Path(collection.data_root)))
        collections[cid] = collection.model_copy(update=update)
    return config.model_copy(
        update={"collections": collections, "evalscripts_dir": _resolve(base, config.evalscripts_dir)}
    )


def load_config(path: Path | str) -> Config:
    """Load and validate a configuration file; raise ``ConfigError`` listing all problems."""
    path = Path(path).resolve()
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with 'collections' and 'layers'")
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{path}: {_format_loc(err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
    problems = _check_references(config, path.parent)
    if problems:
        raise ConfigError("\n".join(f"{path}: {p}" for p in problems))
    return resolve_paths(config, path.parent)
