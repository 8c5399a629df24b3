"""``pip install .`` (not editable) serves the bundled sample without the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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


def pins() -> dict[str, str]:
    """constraints.txt as {canonical name: version}."""
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pairs = [line.split("==") for line in lines if line.strip() and not line.startswith("#")]
    assert all(len(pair) == 2 for pair in pairs), "constraints.txt holds only name==version lines"
    return {canonicalize_name(name): version.strip() for name, version in pairs}


def test_constraints_pin_every_dependency_at_the_tested_version():
    """`make serve`, `make test` and the Dockerfile install with -c constraints.txt: a dependency missing
    there (one added to pyproject.toml without `make constraints`) would float to whatever is newest."""
    pinned = pins()
    assert "eotiler" not in pinned  # the project itself is never pinned
    seen: set[str] = set()
    todo = [(Requirement(r), "eotiler") for r in metadata.requires("eotiler") or []]
    extras = {"test", "dask"}
    while todo:
        requirement, parent = todo.pop()
        if requirement.marker and not any(requirement.marker.evaluate({"extra": e}) for e in extras | {""}):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement} (needed by {parent}) is not in constraints.txt: run make constraints"
        assert requirement.specifier.contains(pinned[name], prereleases=True), f"{parent} needs {requirement}"
        assert metadata.version(requirement.name) == pinned[name], f"the tests run {name} {metadata.version(name)}"
        if name not in seen:
            seen.add(name)
            extras_here = set(requirement.extras)
            for sub in metadata.requires(requirement.name) or []:
                sub_req = Requirement(sub)
                if sub_req.marker is None or any(sub_req.marker.evaluate({"extra": e}) for e in extras_here | {""}):
                    todo.append((sub_req, name))
    assert {"numpy", "rasterio", "mini-racer", "pytest", "moto", "distributed"} <= seen
