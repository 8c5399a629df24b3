"""Load ``config/*.yaml`` in stages, reporting every problem with file and key path.

Stages (as MapProxy does it): YAML syntax -> ``base:`` files merged in -> types (pydantic) ->
references (collections, evalscript files, catalogue and data paths, expression band names).
Compiling evalscripts is the last stage and happens where layers are built
(``server.catalog.layers``), because it needs the evalscript package.

``base: other.yaml`` (or a list of files) makes a configuration extend others, so a
collection's band definitions, the layers and their legends are written once: ``cdse.yaml``
is ``eotiler.yaml`` with the catalogues and data root of the real archive. Mappings merge key
by key, the extending file winning; any other value (a list, a number, ``null``) replaces the
base's; a mapping whose ``type`` differs from the base's (a ``stac-api`` catalogue over a
``static`` one) replaces it whole. Relative paths are resolved against the folder of the file
that wrote them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def _absolute_paths(raw: dict[str, Any], folder: Path) -> None:
    """Make the file's own relative paths absolute (before merging: bases live in other folders)."""
    if isinstance(raw.get("evalscripts_dir"), str):
        raw["evalscripts_dir"] = str(_resolve(folder, Path(raw["evalscripts_dir"])))
    collections = raw.get("collections")
    for collection in collections.values() if isinstance(collections, dict) else ():
        if not isinstance(collection, dict):
            continue
        root = collection.get("data_root")
        if isinstance(root, str) and not root.startswith("/vsi"):
            collection["data_root"] = str(_resolve(folder, Path(root)))
        catalogue = collection.get("catalogue")
        if isinstance(catalogue, dict) and isinstance(catalogue.get("path"), str):
            catalogue["path"] = str(_resolve(folder, Path(catalogue["path"])))


def _merge(base: object, override: object) -> object:
    """``override`` over ``base``: mappings key by key (unless their ``type`` differs), else override."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return override
    if "type" in base and "type" in override and base["type"] != override["type"]:
        return override
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(base[key], value) if key in base else value
    return merged


def _read_with_bases(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The file's mapping with its ``base:`` files merged under it (recursively, cycles refused)."""
    if path in chain:
        raise ConfigError(f"{path}: base: files include each other ({' -> '.join(str(p) for p in (*chain, path))})")
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with 'collections' and 'layers'")
    _absolute_paths(raw, path.parent)
    bases = raw.pop("base", None)
    names = [bases] if isinstance(bases, str) else bases if isinstance(bases, list) else None
    if bases is not None and (names is None or not all(isinstance(n, str) for n in names)):
        raise ConfigError(f"{path}: base: must be a file name or a list of file names")
    merged: dict[str, Any] = {}
    for name in names or []:
        merged = _merge(merged, _read_with_bases(_resolve(path.parent, Path(name)), (*chain, path)))  # type: ignore[assignment]
    return _merge(merged, raw)  # type: ignore[return-value]


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
    raw = _read_with_bases(path)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{path}: {_format_loc(err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
    problems = _check_references(config, path.parent)
    if problems:
        raise ConfigError("\n".join(f"{path}: {p}" for p in problems))
    return resolve_paths(config, path.parent)
