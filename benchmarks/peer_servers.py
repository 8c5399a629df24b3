"""Start eotiler, TiTiler and MapServer on 127.0.0.1 and watch their process trees.

Why process trees: every peer runs several processes (uvicorn workers, eotiler's JavaScript
workers, lighttpd's FastCGI mapserv processes), so CPU seconds and resident memory are summed
over the server's whole tree from /proc, the same way for all three.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from harness import free_port, rss_mb

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
_TICKS = os.sysconf("SC_CLK_TCK")


def gdal_env() -> dict[str, str]:
    """eotiler's GDAL options as environment variables, for the peers (same caches, same I/O)."""
    from server.settings import CLOUD_GDAL_OPTIONS

    return {**{k: str(v) for k, v in CLOUD_GDAL_OPTIONS.items()}, "GDAL_CACHEMAX": "256"}


@dataclass
class Server:
    """A running peer: its URL and the root of its process tree."""

    name: str
    url: str
    process: subprocess.Popen
    workdir: Path | None = None
    _peak: float = field(default=0.0, init=False)
    _sampling: threading.Event | None = field(default=None, init=False)

    def tree(self) -> list[int]:
        """The root process and all its descendants."""
        pids, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    todo += [int(p) for p in (task / "children").read_text().split()]
                except OSError:
                    continue
        return pids

    def cpu_seconds(self) -> float:
        """User + system CPU of the tree (live processes)."""
        total = 0
        for pid in self.tree():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / _TICKS

    def rss_mb(self) -> float:
        """Resident memory of the tree."""
        return sum(rss_mb(pid) for pid in self.tree())

    def start_sampling(self) -> None:
        """Track the peak resident memory until ``peak_rss_mb``."""
        self._peak = self.rss_mb()
        self._sampling = threading.Event()

        def loop(stop: threading.Event) -> None:
            while not stop.wait(0.25):
                self._peak = max(self._peak, self.rss_mb())

        threading.Thread(target=loop, args=(self._sampling,), daemon=True).start()

    def peak_rss_mb(self) -> float:
        """Stop sampling; the peak since ``start_sampling``."""
        if self._sampling is not None:
            self._sampling.set()
        return round(max(self._peak, self.rss_mb()), 1)

    def stop(self) -> None:
        """Terminate the tree's root, wait, then kill what it left behind (lighttpd's mapserv)."""
        tree = self.tree()
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pid in tree[1:]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _wait(name: str, url: str, probe: str, process: subprocess.Popen, workdir: Path | None = None) -> Server:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        try:
            if httpx.get(url + probe, timeout=2).status_code < 500:
                return Server(name, url, process, workdir)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{name} did not start")


def _log_to(log: Path | None):  # noqa: ANN202 - a file object or DEVNULL
    """Where a server's output goes: appended to ``log`` (kept to explain failed requests), or nowhere."""
    return log.open("ab") if log is not None else subprocess.DEVNULL


def start_eotiler(config: Path, workers: int, env: dict[str, str] | None = None, log: Path | None = None) -> Server:
    """``eotiler serve`` on ``config``, tile cache off unless ``env`` says otherwise."""
    port = free_port()
    environment = {
        **os.environ,
        "EOTILER_CACHE_MEMORY_BYTES": "0",
        "EOTILER_ACCESS_LOG": "false",
        "EOTILER_LOG_LEVEL": "warning",
        **(env or {}),
    }
    environment.pop("EOTILER_REDIS_URL", None)
    command = [str(BIN / "eotiler"), "serve", "--config", str(config), "--port", str(port), "--workers", str(workers)]
    output = _log_to(log)
    process = subprocess.Popen(command, env=environment, stdout=output, stderr=output)
    if log is not None:
        output.close()  # the child holds its own copy
    return _wait("eotiler", f"http://127.0.0.1:{port}", "/healthz", process)


def start_titiler(workers: int, env: dict[str, str] | None = None, log: Path | None = None) -> Server:
    """``benchmarks/titiler_app.py`` under uvicorn with eotiler's GDAL options."""
    port = free_port()
    environment = {**os.environ, **gdal_env(), "PYTHONPATH": str(ROOT), **(env or {})}
    command = [
        str(BIN / "python"),
        "-m",
        "uvicorn",
        "benchmarks.titiler_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    output = _log_to(log)
    process = subprocess.Popen(command, env=environment, cwd=ROOT, stdout=output, stderr=output)
    if log is not None:
        output.close()  # the child holds its own copy
    return _wait("titiler", f"http://127.0.0.1:{port}", "/healthz", process)


LIGHTTPD_CONF = """
server.port = {port}
server.bind = "127.0.0.1"
server.document-root = "{root}"
server.errorlog = "{root}/error.log"
server.modules += ("mod_fastcgi")
fastcgi.server = ("/mapserv" => ((
    "bin-path" => "/usr/bin/mapserv",
    "socket" => "{root}/mapserv.sock",
    "max-procs" => {workers},
    "check-local" => "disable",
    "bin-environment" => ("MAPSERVER_CONFIG_FILE" => "{root}/mapserver.conf", {gdal})
)))
"""


def start_mapserver(mapfile: Path, workers: int) -> Server:
    """MapServer 8 (Debian's FastCGI ``mapserv``) behind lighttpd, ``workers`` mapserv processes."""
    port = free_port()
    root = Path(tempfile.mkdtemp(prefix="eotiler-bench-mapserver-"))
    gdal = ", ".join(f'"{k}" => "{v}"' for k, v in gdal_env().items())
    # MapServer 8 reads its settings (here: which mapfile to serve) from a configuration file.
    (root / "mapserver.conf").write_text(f'CONFIG\n  ENV\n    "MS_MAPFILE" "{mapfile}"\n  END\nEND\n')
    conf = root / "lighttpd.conf"
    conf.write_text(LIGHTTPD_CONF.format(port=port, root=root, workers=workers, mapfile=mapfile, gdal=gdal))
    process = subprocess.Popen(
        ["lighttpd", "-D", "-f", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return _wait("mapserver", f"http://127.0.0.1:{port}", "/mapserv?SERVICE=WMS&REQUEST=GetCapabilities", process, root)
