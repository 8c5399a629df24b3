"""Byte-bounded file directories shared by several processes (``server/cache/disk_lru.py``).

Several gateways (and workers) use one directory at once: each one's view of the directory's
size is only an estimate, files vanish under it when another evicts, and a crash leaves
temporaries behind. The tile-part cache (``DiskTileParts``) is the user exercised here.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from server.sources.s3_tile_part_cache import DiskTileParts


def key(i: int, etag: str = '"e"') -> tuple[str, str, int, int]:
    return ("/eodata/x.jp2", etag, i * 1000, 1000)


def on_disk(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.iterdir() if not f.name.startswith("."))


def test_two_instances_evicting_at_once_never_raise(tmp_path: Path) -> None:
    """Writers in two "processes" (instances) on one small directory: files vanish while each counts."""
    directory = tmp_path / "parts"
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            for round_ in range(40):
                disk = DiskTileParts(directory, max_bytes=200_000)  # a fresh process counts the directory
                for i in range(25):
                    disk.put(key(offset + round_ * 25 + i), bytes([i]) * 1000)
        except BaseException as exc:  # noqa: BLE001 - what the test looks for
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n * 100_000,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert on_disk(directory) <= 200_000


def test_budget_holds_across_two_instances(tmp_path: Path) -> None:
    """Each instance sees the other's files: together they stay within the one budget."""
    directory = tmp_path / "parts"
    a = DiskTileParts(directory, max_bytes=50_000)
    b = DiskTileParts(directory, max_bytes=50_000)
    for i in range(200):
        (a if i % 2 else b).put(key(i), bytes([i % 256]) * 1000)
        assert on_disk(directory) <= 50_000, i
    assert a.get(key(199)) == bytes([199]) * 1000  # the newest stays


def test_stale_temporaries_are_removed(tmp_path: Path) -> None:
    """A temporary left by a crashed writer goes once it is old; one being written stays."""
    directory = tmp_path / "parts"
    directory.mkdir()
    stale = directory / ".abc.123.456.tmp"
    stale.write_bytes(b"x" * 5000)
    old = time.time() - 3600
    os.utime(stale, (old, old))
    fresh = directory / ".def.123.789.tmp"
    fresh.write_bytes(b"y" * 10)
    disk = DiskTileParts(directory, max_bytes=1_000_000)
    disk.put(key(0), b"z" * 1000)
    assert not stale.exists()
    assert fresh.exists()


def test_a_failing_directory_logs_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    disk = DiskTileParts(blocker / "parts", max_bytes=1_000_000)  # a directory that cannot be made
    with caplog.at_level(logging.WARNING):
        for i in range(20):
            disk.put(key(i), b"z" * 1000)
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    assert disk.get(key(0)) is None


def test_a_read_only_directory_is_still_read() -> None:
    """Files another user wrote, in a directory this process cannot write: read, never reordered."""
    directory = Path(tempfile.mkdtemp(prefix="eotiler-read-only-"))  # not under root's private tmp
    try:
        DiskTileParts(directory / "parts", max_bytes=1_000_000).put(key(0), b"z" * 1000)
        for f in (directory / "parts").iterdir():
            f.chmod(0o444)
        (directory / "parts").chmod(0o555)
        directory.chmod(0o755)
        code = (
            "from pathlib import Path; from server.sources.s3_tile_part_cache import DiskTileParts; "
            f"print(len(DiskTileParts(Path({str(directory / 'parts')!r}), 1_000_000).get({key(0)!r}) or b''))"
        )
        command = [sys.executable, "-c", code]
        if os.geteuid() == 0:  # root writes anywhere: read as nobody
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("needs setpriv to read as another user")
            command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        repo = Path(__file__).resolve().parents[1]
        env = {**os.environ, "PYTHONPATH": str(repo), "PYTHONDONTWRITEBYTECODE": "1"}
        out = subprocess.run(command, capture_output=True, text=True, cwd=repo, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "1000"
    finally:
        (directory / "parts").chmod(0o755)
        shutil.rmtree(directory)


def test_index_store_removes_stale_temporaries_and_logs_a_failing_disk_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from server.sources.jp2_index import TilePartIndex
    from server.sources.jp2_index_store import IndexStore

    index = TilePartIndex('"e"', 1000, 10, b"\xff\x4f" * 8, "Mon, 05 Oct 2026 11:54:11 GMT")
    directory = tmp_path / "index"
    directory.mkdir()
    stale = directory / ".0123abcd.99.1"  # a crashed writer's temporary
    stale.write_bytes(b"x" * 100)
    os.utime(stale, (time.time() - 3600,) * 2)
    IndexStore(directory, None).store("/eodata/a.jp2", index)
    assert not stale.exists()
    assert IndexStore(directory, None).load("/eodata/a.jp2") == index

    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    failing = IndexStore(blocker / "index", None)
    with caplog.at_level(logging.WARNING):
        for i in range(10):
            failing.store(f"/eodata/{i}.jp2", index)
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
