"""Turn catalogue hrefs into GDAL paths, refusing anything outside the configured data root.

Why here and strictly: STAC items come from outside (a catalogue API), so an item could name
``/etc/passwd``, ``https://attacker/`` or ``s3://other-bucket/``. Only hrefs that start with
the collection's ``href_prefix`` (``s3://eodata/`` by default) and stay below it after
normalisation are mapped onto the ``data_root`` (a local directory or ``/vsis3/eodata``).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path, PurePosixPath

from server.errors import UpstreamUnavailable

log = logging.getLogger(__name__)


class HrefRefused(UpstreamUnavailable):
    """An item pointed outside the configured data root."""


@lru_cache(maxsize=4096)
def gdal_path(href: str, href_prefix: str, data_root: str) -> str:
    """Map ``s3://eodata/<key>`` onto ``<data_root>/<key>``; raise ``HrefRefused`` otherwise.

    Memoised (refusals are not: they raise each time): resolving a local path walks every
    component with a system call, about 0.1 ms, and a tile maps each band's href several times.
    Files under a data root are not moved while the server runs (the dataset pool keeps them
    open on the same assumption).
    """
    if not href.startswith(href_prefix) or "\x00" in href:
        log.warning("refused asset href outside %s", href_prefix)
        raise HrefRefused("a catalogue item points outside the configured data source")
    key = PurePosixPath(href[len(href_prefix) :])
    if key.is_absolute() or any(part in ("..", "") for part in key.parts) or not key.parts:
        log.warning("refused asset href with a path escape")
        raise HrefRefused("a catalogue item points outside the configured data source")
    if data_root.startswith("/vsi"):
        return f"{data_root.rstrip('/')}/{key}"
    root = Path(data_root).resolve()
    path = (root / key).resolve()
    if not path.is_relative_to(root):
        log.warning("refused asset href resolving outside the data root (symlink?)")
        raise HrefRefused("a catalogue item points outside the configured data source")
    return str(path)
