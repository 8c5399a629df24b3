"""The ``eotiler`` console script as a newcomer meets it: help, version, defaults, environment."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import threading
import time
from importlib.metadata import version
from pathlib import Path

import httpx

import server
from server.settings import Settings
from tests.support.serve_process import eotiler_process

EOTILER = Path(sys.executable).parent / "eotiler"  # the script pip generated from [project.scripts]


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    assert EOTILER.is_file(), f"{EOTILER} missing: the package is not installed in this venv"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EOTILER_")}
    clean["COLUMNS"] = "500"  # argparse wraps help at the terminal width; long paths must stay whole
    return subprocess.run(
        [str(EOTILER), *args], env={**clean, **env}, capture_output=True, text=True, timeout=60, check=False
    )


def option_defaults(help_text: str) -> dict[str, str]:
    """``--option ... (default: X)`` pairs of an argparse help text, joined across wrapped lines."""
    flat = " ".join(help_text.split())
    return dict(re.findall(r"(--[a-z-]+) [A-Z_]+ .*?\(default: ([^)]*)\)", flat))


def test_no_arguments_prints_the_help():
    result = run()
    assert result.returncode == 2  # argparse's status for a usage error: nothing was done
    assert result.stdout.startswith("usage: eotiler")
    for command in ("serve", "layers", "check-config", "seed", "cache"):
        assert re.search(rf"^\s+{command}\s+\S", result.stdout, re.M), command  # listed with its summary


def test_version_is_the_installed_package_version():
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"eotiler {version('eotiler')}"
    assert re.fullmatch(r"eotiler \d+\.\d+\.\d+\S*", result.stdout.strip())
    assert version("eotiler") == server.__version__  # the version /healthz and /docs report


def test_serve_help_shows_every_default_and_they_match_the_settings():
    result = run("serve", "--help")
    assert result.returncode == 0, result.stderr
    defaults = option_defaults(result.stdout)
    fields = Settings.model_fields
    assert defaults["--host"] == fields["host"].default == "127.0.0.1"
    assert int(defaults["--port"]) == fields["port"].default == 8000
    assert int(defaults["--workers"]) == fields["workers"].default == 1
    assert float(defaults["--graceful-timeout"]) == 30
    assert Path(defaults["--config"]).name == "eotiler.yaml"
    for option in ("--host", "--port", "--workers", "--graceful-timeout", "--config"):
        assert f"EOTILER_{option[2:].upper().replace('-', '_')}" in " ".join(result.stdout.split()), option


def test_serve_options_default_to_their_environment_variables(tmp_path: Path):
    result = run(
        "serve",
        "--help",
        EOTILER_HOST="0.0.0.0",
        EOTILER_PORT="9123",
        EOTILER_WORKERS="3",
        EOTILER_GRACEFUL_TIMEOUT="8",
        EOTILER_CONFIG=str(tmp_path / "mine.yaml"),
    )
    assert option_defaults(result.stdout) == {
        "--config": str(tmp_path / "mine.yaml"),
        "--host": "0.0.0.0",
        "--port": "9123",
        "--workers": "3",
        "--graceful-timeout": "8",
    }
    bad = run("serve", EOTILER_PORT="eighty")
    assert bad.returncode == 2 and "argument --port: invalid int value: 'eighty'" in bad.stderr


SLOW = """//VERSION=3
function setup() { return {input: ["B02", "B03", "B04", "dataMask"], output: {bands: 4}}; }
let waited = false;
function evaluatePixel(s) {
  if (!waited) { const end = Date.now() + 15000; while (Date.now() < end) {} waited = true; }
  return [2.5 * s.B04, 2.5 * s.B03, 2.5 * s.B02, s.dataMask];
}
"""


def test_graceful_timeout_from_the_environment_bounds_shutdown(test_config: Path):
    """The Dockerfile sets EOTILER_GRACEFUL_TIMEOUT below Docker's 10 s stop timeout: SIGTERM then ends the
    process within that window, cutting a 15 s request, instead of waiting up to 30 s for it."""
    env = {**os.environ, "EOTILER_ACCESS_LOG": "false", "EOTILER_JS_TIMEOUT": "30", "EOTILER_GRACEFUL_TIMEOUT": "1"}
    script = base64.b64encode(SLOW.encode()).decode()
    with eotiler_process(test_config, env=env) as (url, process):
        outcome: dict[str, object] = {}

        def slow_request() -> None:
            try:
                response = httpx.get(
                    f"{url}/layers/TRUE_COLOR/tiles/WebMercatorQuad/11/974/666.png?evalscript={script}", timeout=30
                )
                outcome["status"] = response.status_code
            except httpx.HTTPError as exc:  # the connection closed under the request
                outcome["error"] = type(exc).__name__

        thread = threading.Thread(target=slow_request)
        thread.start()
        time.sleep(1.5)  # the request is in the evalscript
        process.send_signal(signal.SIGTERM)
        start = time.monotonic()
        code = process.wait(timeout=30)
        stopped_after = time.monotonic() - start
        thread.join(timeout=30)
    # cut off, not rendered after its 15 s (uvicorn answers a request it cancels at shutdown with a 500)
    assert outcome.get("status") != 200, outcome
    assert stopped_after < 10, stopped_after  # inside Docker's stop timeout, before SIGKILL would come
    assert code in (0, -signal.SIGTERM)
