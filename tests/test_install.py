"""``pip install .`` (not editable) serves the bundled sample without the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

SCRIPT = """
import io, sys
from pathlib import Path
import server
from server.resources import default_config_path, resource_dir
assert Path(server.__file__).is_relative_to(Path(sys.argv[1])), server.__file__
assert "_bundled" in str(default_config_path()), default_config_path()
from fastapi.testclient import TestClient
from server.app import create_app
client = TestClient(create_app())
r = client.get("/layers/TRUE_COLOR/tiles/WebMercatorQuad/12/1948/1332.png")
assert r.status_code == 200 and "T29UNU" in r.headers["x-eotiler-scenes"], r.text
print("installed-ok", resource_dir("sample"))
"""


def test_wheel_install_finds_bundled_files(tmp_path: Path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(ROOT)],
        check=True,
        timeout=300,
    )
    assert (target / "server" / "_bundled" / "sample" / "stac" / "sentinel-2-l2a").is_dir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("EOTILER_CONFIG", None)
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(target)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "installed-ok" in run.stdout and str(target) in run.stdout
    check = subprocess.run(
        [sys.executable, "-m", "server", "check-config", str(target / "server/_bundled/config/eotiler.yaml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0 and "OK (18 layers" in check.stdout, check.stderr
