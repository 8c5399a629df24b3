"""The Dockerfile's promises, checked without a Docker engine: what it installs, as whom, how it is
probed and stopped, and what the build context leaves out. The health probe runs for real."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys

from tests.conftest import ROOT, free_port

DOCKER_STOP_TIMEOUT_S = 10  # `docker stop` sends SIGKILL this long after SIGTERM unless told otherwise


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines if line and line[0] != "#"]


def args_of(name: str) -> list[str]:
    return [args for instruction, args in instructions() if instruction == name]


def env() -> dict[str, str]:
    return {k: v for args in args_of("ENV") for k, v in (item.split("=", 1) for item in shlex.split(args))}


def healthcheck_command() -> list[str]:
    (args,) = args_of("HEALTHCHECK")
    return json.loads(args.split(" CMD ", 1)[1])


def dockerignored(path: str) -> bool:
    """Docker's rule for the patterns this file uses: a match on the path or a parent folder
    excludes it; ``**/name`` matches ``name`` at any depth."""
    patterns = [p.strip().rstrip("/") for p in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    anywhere = [p.removeprefix("**/") for p in patterns if p.startswith("**/")]
    return any(fnmatch.fnmatch(prefix, p) for prefix in prefixes for p in patterns) or any(
        fnmatch.fnmatch(part, p) for part in parts for p in anywhere
    )


def test_base_image_runs_the_python_the_constraints_were_made_with():
    (image,) = args_of("FROM")
    match = re.fullmatch(r"python:(\d+)\.(\d+)-slim\S*", image)
    assert match, image
    assert (int(match[1]), int(match[2])) == sys.version_info[:2]


def test_install_uses_the_constraints_file_and_no_extras():
    copied = " ".join(args_of("COPY"))
    assert "constraints.txt" in copied.split()
    (install,) = [args for args in args_of("RUN") if "pip install" in args]
    words = shlex.split(install.split("&&")[0])
    assert words[words.index("-c") + 1] == "constraints.txt"
    assert words[-1] == "."  # the package alone: the test extras stay out of the image


def test_every_copied_path_exists_and_reaches_the_build_context():
    for args in args_of("COPY"):
        for source in shlex.split(args)[:-1]:
            assert (ROOT / source).exists(), source
            assert not dockerignored(source), f"{source} is copied but .dockerignore drops it"


def test_build_context_leaves_out_the_venv_and_git():
    assert dockerignored(".venv") and dockerignored(".venv/lib/python3.11/site-packages/numpy/__init__.py")
    assert dockerignored(".git") and dockerignored(".git/objects/pack")
    assert dockerignored("server/__pycache__/app.cpython-311.pyc")
    assert not dockerignored("server/app.py") and not dockerignored("sample/stac")


def test_runs_as_an_unprivileged_user_created_in_the_image():
    users = args_of("USER")
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith("0:")
    order = [name for name, _ in instructions()]
    assert order.index("USER") < order.index("CMD")
    assert any("useradd" in args and args.split()[-1] == users[-1] for args in args_of("RUN"))


def test_serves_on_all_interfaces_at_the_exposed_port_and_stops_before_sigkill():
    variables = env()
    assert variables["EOTILER_HOST"] == "0.0.0.0"
    assert args_of("EXPOSE") == [variables["EOTILER_PORT"]]
    assert float(variables["EOTILER_GRACEFUL_TIMEOUT"]) <= DOCKER_STOP_TIMEOUT_S - 2  # room to exit on its own
    assert args_of("STOPSIGNAL") in ([], ["SIGTERM"])  # uvicorn's graceful shutdown listens for SIGTERM
    (cmd,) = args_of("CMD")
    assert json.loads(cmd) == ["eotiler", "serve"]  # host, port and grace come from the ENV above


def test_healthcheck_probes_healthz_and_fails_when_nothing_answers(live_url: str):
    command = healthcheck_command()
    assert command[0] == "python" and "/healthz" in command[-1]
    port = live_url.rsplit(":", 1)[1]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EOTILER_")}
    probe = [sys.executable, *command[1:]]
    alive = subprocess.run(probe, env={**clean, "EOTILER_PORT": port}, capture_output=True, text=True, timeout=30)
    assert alive.returncode == 0, alive.stderr
    dead = subprocess.run(
        probe, env={**clean, "EOTILER_PORT": str(free_port())}, capture_output=True, text=True, timeout=30
    )
    assert dead.returncode != 0 and "Connection refused" in dead.stderr
