"""Configuration that composes: ``base:`` files, so a collection's bands, the layers and their
legends are written once and the CDSE configuration is the sample's plus where the archive is."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.catalog.layers import LayerRegistry
from server.config.loader import load_config
from server.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_cdse_configuration_is_the_sample_one_on_the_real_archive():
    sample = load_config(ROOT / "config" / "eotiler.yaml")
    cdse = load_config(ROOT / "config" / "cdse.yaml")
    assert set(cdse.layers) == set(sample.layers)
    for lid, layer in sample.layers.items():  # same scripts and legends, nothing lost on the way
        assert cdse.layers[lid].evalscript == layer.evalscript and cdse.layers[lid].expression == layer.expression
        assert cdse.layers[lid].legend == layer.legend, lid
    assert cdse.layers["NDVI"].legend is not None and cdse.layers["MOSAIC_NDVI"].legend == sample.layers["NDVI"].legend
    assert cdse.collections["sentinel-2-l2a"].bands == sample.collections["sentinel-2-l2a"].bands
    for cid, collection in cdse.collections.items():
        assert collection.data_root == "/vsis3/eodata"
        assert collection.catalogue.type == "stac-api" and collection.catalogue.collection == cid
    assert [b.resolutions for b in cdse.collections["sentinel-2-global-mosaics"].bands.values()] == [[10.0]] * 4
    assert cdse.layers["TRUE_COLOR"].maxcc == 30 and cdse.layers["TRUE_COLOR"].minzoom == 8
    assert cdse.evalscripts_dir == (ROOT / "evalscripts").resolve()


def test_a_layer_added_once_reaches_every_configuration_built_on_it(tmp_path: Path):
    """Adding a layer: one entry in the base (and, for a new script, one file)."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "red.js").write_text(
        '//VERSION=3\nfunction setup() { return {input: ["B04"], output: {bands: 1}}; }\n'
        "function evaluatePixel(s) { return [s.B04 * 2.5]; }\n"
    )
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "base.yaml").write_text(
        f"base: {ROOT / 'config' / 'eotiler.yaml'}\n"
        f"layers:\n  RED: {{title: Red, collection: sentinel-2-l2a, evalscript: {scripts / 'red.js'}}}\n"
    )
    (tmp_path / "site.yaml").write_text("base: shared/base.yaml\nlayers:\n  RED: {maxcc: 10}\n")
    config = load_config(tmp_path / "site.yaml")
    assert config.evalscripts_dir == (ROOT / "evalscripts").resolve()  # relative to the file that says it
    assert config.layers["RED"].maxcc == 10 and config.layers["RED"].title == "Red"
    sample = config.collections["sentinel-2-l2a"]
    assert sample.catalogue.path == (ROOT / "sample" / "stac" / "sentinel-2-l2a").resolve()  # the base's folder
    registry = LayerRegistry(config)
    assert registry.get("RED").evalscript.output.bands == 1


def test_base_files_that_include_each_other_are_refused(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="include each other"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="missing.yaml: cannot read file"):
        load_config(tmp_path / "c.yaml")
