"""Configuration errors name the file, the key path and the problem; the CLI exits non-zero."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from server.catalog.layers import LayerRegistry
from server.config import load_config
from server.errors import ConfigError
from tests.conftest import ROOT, write_test_config


def broken(tmp_path: Path, mutate) -> Path:
    path = write_test_config(tmp_path)
    raw = yaml.safe_load(path.read_text())
    mutate(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def check(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        LayerRegistry(load_config(path))
    return info.value.public_message


def test_unknown_key_is_named(tmp_path):
    path = broken(tmp_path, lambda c: c["layers"]["NDVI"].update(maxc=20))
    message = check(path)
    assert str(path) in message and "layers.NDVI.maxc" in message and "Extra inputs" in message


def test_wrong_type_is_named(tmp_path):
    message = check(broken(tmp_path, lambda c: c["layers"]["NDVI"].update(maxcc="lots")))
    assert "layers.NDVI.maxcc" in message


def test_unknown_collection_and_missing_evalscript(tmp_path):
    def mutate(c):
        c["layers"]["NDVI"]["collection"] = "landsat"
        c["layers"]["KNDVI"]["evalscript"] = "missing.py"

    message = check(broken(tmp_path, mutate))
    assert "layers.NDVI.collection: unknown collection 'landsat'" in message
    assert "layers.KNDVI.evalscript: file not found" in message


def test_expression_with_unknown_band(tmp_path):
    message = check(broken(tmp_path, lambda c: c["layers"]["RAW_B04"].update(expression="B99 * 2")))
    assert "layers.RAW_B04" in message and "B99" in message


def test_yaml_syntax_error_has_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("layers:\n  A: {title: x\n")
    message = check(path)
    assert str(path) in message and "line" in message


def test_evalscript_returning_wrong_band_count(tmp_path):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "bad.py").write_text(
        "def setup():\n    return {'input': ['B04', 'dataMask'], 'output': {'bands': 3}}\n"
        "def evaluatePixel(samples):\n    return [samples.B04]\n"
    )

    def mutate(c):
        c["evalscripts_dir"] = str(scripts)
        for layer in list(c["layers"]):
            if "evalscript" in c["layers"][layer]:
                del c["layers"][layer]
        c["layers"]["BAD"] = {"title": "bad", "collection": "sentinel-2-l2a", "evalscript": "bad.py"}

    message = check(broken(tmp_path, mutate))
    assert "layers.BAD" in message and "returned 1 bands" in message


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_check_config_cli(tmp_path):
    ok = run_cli("check-config", str(ROOT / "config" / "eotiler.yaml"))
    assert ok.returncode == 0 and "OK (18 layers" in ok.stdout
    bad = run_cli("check-config", str(broken(tmp_path, lambda c: c["layers"]["NDVI"].update(priority="best"))))
    assert bad.returncode == 1
    assert "layers.NDVI.priority" in bad.stderr and "Traceback" not in bad.stderr


def test_layers_cli_prints_table():
    result = run_cli("layers")
    assert result.returncode == 0
    for layer in ("TRUE_COLOR", "NDVI_FLOAT", "SCL", "MOSAIC_NDVI"):
        assert layer in result.stdout


def test_cdse_configuration_loads_offline():
    """The shipped CDSE configuration validates and compiles without reaching the network."""
    config = load_config(ROOT / "config" / "cdse.yaml")
    registry = LayerRegistry(config)
    layer = registry.get("TRUE_COLOR")
    assert layer.collection.data_root == "/vsis3/eodata" and not layer.catalogue.enumerable
