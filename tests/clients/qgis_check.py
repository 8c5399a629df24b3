"""Add eotiler's WMS, WMTS, WCS and WFS to QGIS (PyQGIS, headless) and render every layer; step
a WMS-T layer through three dates with the temporal controller's settings.

Run by hand with Debian's QGIS (``apt-get install qgis python3-qgis``): ``make qgis-check``.
It is not part of ``make test``: QGIS is a 1 GB install. The script starts ``eotiler serve`` on a
free 127.0.0.1 port, loads each service the way the QGIS "Add layer" dialogs do (provider URIs
as QGIS writes them), renders 800x600 maps with QgsMapRendererSequentialJob, and reports what
QGIS requested (from the server's access log) and how many pixels each map drew.

Usage: /usr/bin/python3 tests/clients/qgis_check.py [--eotiler .venv/bin/eotiler] [--out DIR]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import yaml  # noqa: E402 - python3-yaml, a dependency of Debian's QGIS
from qgis.core import (  # noqa: E402 - the platform must be chosen before Qt loads
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsDateTimeRange,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsNetworkAccessManager,
    QgsProject,
    QgsRasterDataProviderTemporalCapabilities,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QDate, QDateTime, QSize, Qt, QTime  # noqa: E402
from qgis.PyQt.QtGui import QColor  # noqa: E402

AREA = (-8.9, 53.0, -8.6, 53.2)  # lon/lat inside the bundled 2022 T29UNU scene
TIME = "2022-10-05"
ROOT = Path(__file__).resolve().parents[2]
# The temporal check's catalogue: the T29UNU item on three days, each with its visible bands in
# another order, so that each day draws another image of the same place.
TEMPORAL_DAYS = {
    "2022-10-05": {},
    "2022-10-15": {"B02": "B04", "B04": "B02"},
    "2022-10-25": {"B02": "B03", "B03": "B02"},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    eotiler: str, port: int, log: Path, config: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen:
    handle = log.open("w")
    command = [eotiler, "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        command + (["--config", str(config)] if config else []),
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"eotiler did not start; see {log}")


def layer_uris(base: str) -> dict[str, tuple[str, str]]:
    """Provider URIs as QGIS's WMS/WMTS, WCS and WFS dialogs build them."""
    wms = f"{base}/ogc/wms"
    wmts_caps = quote(f"{base}/ogc/wmts?SERVICE=WMTS&REQUEST=GetCapabilities", safe=":/")
    # A Sentinel Hub habit: vendor parameters in the base URL (kept on every request).
    vendor = quote(f"{wms}?MAXCC=80&PRIORITY=mostRecent", safe=":/")
    return {
        "WMS 1.3.0 TRUE_COLOR": (
            "wms",
            f"contextualWMSLegend=0&crs=EPSG:3857&dpiMode=7&format=image/png&layers=TRUE_COLOR&styles=&url={wms}",
        ),
        "WMS 1.3.0 SCL (EPSG:4326)": (
            "wms",
            f"contextualWMSLegend=0&crs=EPSG:4326&dpiMode=7&format=image/png&layers=SCL&styles=default&url={wms}",
        ),
        "WMS tiled (WMS-C style) TRUE_COLOR": (
            "wms",
            "contextualWMSLegend=0&crs=EPSG:3857&dpiMode=7&format=image/jpeg&layers=TRUE_COLOR&styles="
            f"&tiled=256;256&url={wms}",
        ),
        "WMS vendor params in base URL": (
            "wms",
            f"IgnoreGetMapUrl=1&crs=EPSG:3857&format=image/png&layers=TRUE_COLOR&styles=&url={vendor}",
        ),
        "WMTS WebMercatorQuad TRUE_COLOR": (
            "wms",
            "contextualWMSLegend=0&crs=EPSG:3857&dpiMode=7&format=image/png&layers=TRUE_COLOR&styles=default"
            f"&tileMatrixSet=WebMercatorQuad&tileDimensions=Time%3D{TIME}&url={wmts_caps}",
        ),
        "WMTS WebMercatorQuad512 SWIR": (
            "wms",
            "contextualWMSLegend=0&crs=EPSG:3857&dpiMode=7&format=image/png&layers=SWIR&styles=default"
            f"&tileMatrixSet=WebMercatorQuad512&url={wmts_caps}",
        ),
        "WMTS WorldCRS84Quad TRUE_COLOR": (
            "wms",
            "contextualWMSLegend=0&crs=OGC:CRS84&dpiMode=7&format=image/png&layers=TRUE_COLOR&styles=default"
            f"&tileMatrixSet=WorldCRS84Quad&url={wmts_caps}",
        ),
        "WCS 1.0.0 TRUE_COLOR": (
            "wcs",
            f"cache=AlwaysNetwork&crs=EPSG:4326&format=GeoTIFF&identifier=TRUE_COLOR&time={TIME}&url={base}/ogc/wcs",
        ),
        # the scene footprints behind the layer (vector: every footprint covering AREA is filled)
        "WFS 2.0.0 TRUE_COLOR footprints": (
            "WFS",
            "pagingEnabled='true' preferCoordinatesForWfsT11='false' restrictToRequestBBOX='1' srsname='EPSG:4326' "
            f"typename='eotiler:TRUE_COLOR' url='{base}/ogc/wfs' version='2.0.0'",
        ),
    }


def render(
    layer: QgsRasterLayer | QgsVectorLayer, out: Path, frame: QgsDateTimeRange | None = None
) -> dict[str, object]:
    settings = QgsMapSettings()
    if frame is not None:  # what the temporal controller sets on the canvas for one frame
        settings.setIsTemporal(True)
        settings.setTemporalRange(frame)
    settings.setLayers([layer])
    settings.setBackgroundColor(QColor(0, 0, 0, 0))
    settings.setOutputSize(QSize(800, 600))
    target = QgsCoordinateReferenceSystem("EPSG:3857")
    settings.setDestinationCrs(target)
    area = QgsRectangle(*AREA)
    to_target = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:4326"), target, QgsProject.instance())
    settings.setExtent(to_target.transformBoundingBox(area))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    image.save(str(out))
    drawn = sum(
        1
        for y in range(0, image.height(), 4)
        for x in range(0, image.width(), 4)
        if QColor(image.pixel(x, y)).alpha() > 0 and sum(QColor(image.pixel(x, y)).getRgb()[:3]) > 15
    )
    samples = (image.height() // 4) * (image.width() // 4)
    errors = [e.what() for e in job.errors()]
    return {"drawn_share": round(drawn / samples, 3), "errors": errors}


def temporal_config(directory: Path) -> Path:
    """The bundled configuration with the Sentinel-2 collection reading ``TEMPORAL_DAYS``'s items."""
    base = ROOT / "config"
    raw = yaml.safe_load((base / "eotiler.yaml").read_text())
    raw["evalscripts_dir"] = str((base / raw["evalscripts_dir"]).resolve())
    for collection in raw["collections"].values():
        collection["catalogue"]["path"] = str((base / collection["catalogue"]["path"]).resolve())
        collection["data_root"] = str((base / collection["data_root"]).resolve())
    source = Path(raw["collections"]["sentinel-2-l2a"]["catalogue"]["path"])
    item = next(
        doc
        for doc in (json.loads(p.read_text()) for p in sorted(source.glob("*.json")))
        if doc.get("type") == "Feature" and "_T29UNU_" in doc["id"]
    )
    items = directory / "items"
    items.mkdir(parents=True, exist_ok=True)
    for day, swap in TEMPORAL_DAYS.items():
        copied = copy.deepcopy(item)
        copied["id"] = f"{item['id']}_{day}"
        copied["properties"]["datetime"] = f"{day}T11:54:11Z"
        copied["properties"]["eo:cloud_cover"] = 0.0
        for key, asset in item["assets"].items():
            band, _, rest = key.partition("_")
            if band in swap:
                copied["assets"][key] = {**asset, "href": item["assets"][f"{swap[band]}_{rest}"]["href"]}
        (items / f"{copied['id']}.json").write_text(json.dumps(copied))
    raw["collections"]["sentinel-2-l2a"]["catalogue"]["path"] = str(items)
    path = directory / "temporal.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def temporal_check(eotiler: str, out: Path) -> dict[str, object]:
    """A WMS-T layer as QGIS's WMS dialog adds it, rendered once per day of ``TEMPORAL_DAYS`` with
    the map settings the temporal controller sets: three days, three different images."""
    port = free_port()
    log = out / "server-temporal.log"
    server = start_server(eotiler, port, log, temporal_config(out / "temporal"))
    days = list(TEMPORAL_DAYS)
    try:
        uri = (
            "allowTemporalUpdates=true&temporalSource=provider&type=wmst"
            f"&timeDimensionExtent={','.join(days)}&contextualWMSLegend=0&crs=EPSG:3857&dpiMode=7"
            f"&format=image/png&layers=TRUE_COLOR&styles=&url=http://127.0.0.1:{port}/ogc/wms"
        )
        layer = QgsRasterLayer(uri, "WMS-T TRUE_COLOR", "wms")
        entry: dict[str, object] = {"uri": uri, "valid": layer.isValid(), "frames": {}}
        if not layer.isValid():
            entry["error"] = layer.error().summary()
            return entry
        layer.temporalProperties().setIsActive(True)
        # The layer's "time slice mode" set to the whole frame (Layer Properties > Temporal), as
        # for daily data: QGIS sends TIME=start/end; at its default (the frame's start) it sends
        # TIME=<day>T00:00:00Z, an instant no scene of that day is taken at.
        layer.temporalProperties().setIntervalHandlingMethod(
            QgsRasterDataProviderTemporalCapabilities.MatchUsingWholeRange
        )
        digests = set()
        for day in days:
            date = QDate.fromString(day, "yyyy-MM-dd")
            start = QDateTime(date, QTime(0, 0, 0), Qt.UTC)
            frame = QgsDateTimeRange(start, start.addSecs(24 * 3600 - 1))
            image_path = out / f"wms_t_{day}.png"
            result = render(layer, image_path, frame)
            result["sha256"] = hashlib.sha256(image_path.read_bytes()).hexdigest()[:16]
            digests.add(result["sha256"])
            entry["frames"][day] = result  # type: ignore[index]
        time.sleep(0.3)  # let the access log flush
        sent = re.findall(r"[?&]TIME=([^& \"]+)", log.read_text(), flags=re.IGNORECASE)
        entry["times_sent"] = sorted(set(sent))
        frames = entry["frames"].values()  # type: ignore[union-attr]
        entry["ok"] = len(digests) == len(days) and all(
            float(f["drawn_share"]) > 0.2 and not f["errors"] for f in frames
        )
        return entry
    finally:
        layer = None  # released before QGIS exits
        server.terminate()
        server.wait(timeout=10)


# The access check's client (docs/access.md): QGIS 3.22 sends a key in the URL (kept on every
# request, as vendor parameters are), an instance id in the path, or HTTP Basic from the
# dialog's user name and password (its only way to send a header without an auth plugin).
ACCESS_CLIENT, ACCESS_KEY, ACCESS_INSTANCE = "qgis-team", "qgis-check-key-5b0e7d1c9a", "9d4e2c1a-qgis-check"


def access_uris(base: str) -> dict[str, tuple[str, str, bool]]:
    """(provider, URI, should it draw) for each way QGIS can send the client's credential."""
    plain = "contextualWMSLegend=0&crs=EPSG:3857&dpiMode=7&format=image/png&styles="
    wmts = "contextualWMSLegend=0&crs=EPSG:3857&dpiMode=7&format=image/png&styles=default&tileMatrixSet=WebMercatorQuad"
    caps = "SERVICE=WMTS&REQUEST=GetCapabilities"
    return {
        "WMS, key= in the URL": ("wms", f"{plain}&layers=TRUE_COLOR&url={base}/ogc/wms?key={ACCESS_KEY}", True),
        "WMS, instance id in the path": (
            "wms",
            f"{plain}&layers=TRUE_COLOR&url={base}/ogc/wms/{ACCESS_INSTANCE}",
            True,
        ),
        "WMS, Basic user name + key (Authorization header)": (
            "wms",
            f"{plain}&layers=TRUE_COLOR&username={ACCESS_CLIENT}&password={ACCESS_KEY}&url={base}/ogc/wms",
            True,
        ),
        "WMTS, key= in the capabilities URL": (
            "wms",
            f"{wmts}&layers=TRUE_COLOR&url={quote(f'{base}/ogc/wmts?{caps}&key={ACCESS_KEY}', safe=':/')}",
            True,
        ),
        "WMTS, instance id in the path": (
            "wms",
            f"{wmts}&layers=TRUE_COLOR&url={quote(f'{base}/ogc/wmts/{ACCESS_INSTANCE}?{caps}', safe=':/')}",
            True,
        ),
        "WCS 1.0.0, key= in the URL": (
            "wcs",
            f"cache=AlwaysNetwork&crs=EPSG:4326&format=GeoTIFF&identifier=TRUE_COLOR&time={TIME}"
            f"&url={base}/ogc/wcs?key={ACCESS_KEY}",
            True,
        ),
        "WMS, a layer the client may not use": (
            "wms",
            f"{plain}&layers=FALSE_COLOR&url={base}/ogc/wms?key={ACCESS_KEY}",
            False,
        ),
        "WMS, no credential": ("wms", f"{plain}&layers=TRUE_COLOR&url={base}/ogc/wms", False),
    }


def access_check(eotiler: str, out: Path) -> dict[str, object]:
    """Each credential form as QGIS sends it: the client's layer draws, another layer and no
    credential give no layer (the capabilities do not list it; 401 without a credential)."""
    directory = out / "access"
    directory.mkdir(parents=True, exist_ok=True)
    clients = directory / "clients.yaml"
    client = {"api_keys": [ACCESS_KEY], "instance_id": ACCESS_INSTANCE, "layers": ["TRUE_COLOR", "NDVI"]}
    clients.write_text(yaml.safe_dump({ACCESS_CLIENT: client}))
    port = free_port()
    log = out / "server-access.log"
    server = start_server(eotiler, port, log, env={"EOTILER_CLIENTS_FILE": str(clients)})
    entries: dict[str, object] = {}
    try:
        for name, (provider, uri, should_draw) in access_uris(f"http://127.0.0.1:{port}").items():
            # QGIS's HTTP cache is keyed by URL: the Basic case's answers would serve the next one
            QgsNetworkAccessManager.instance().cache().clear()
            layer = QgsRasterLayer(uri, name, provider)
            entry: dict[str, object] = {"uri": uri.replace(ACCESS_KEY, "<key>"), "valid": layer.isValid()}
            if layer.isValid():
                slug = re.sub(r"\W+", "_", name).strip("_").lower()
                entry.update(render(layer, out / f"access_{slug}.png"))
            drew = bool(entry["valid"]) and float(entry.get("drawn_share", 0)) > 0.2 and not entry.get("errors")
            entry["ok"] = drew if should_draw else not entry["valid"]
            entries[name] = entry
            layer = None
        time.sleep(0.3)  # let the access log flush
        text = log.read_text()
        statuses = Counter(re.findall(r'"status": (\d+)', text))
        return {"layers": entries, "statuses": dict(statuses), "key_in_log": ACCESS_KEY in text}
    finally:
        server.terminate()
        server.wait(timeout=10)


def summarise(log: Path, start: int) -> list[str]:
    """One line per distinct (path, REQUEST, key set) QGIS sent, with a count and one example."""
    seen: Counter[str] = Counter()
    examples: dict[str, str] = {}
    pattern = re.compile(r'"GET (\S+) HTTP/1\.1" (\d+)')
    for line in log.read_text().splitlines()[start:]:
        match = pattern.search(line)
        if not match:
            continue
        url, status = match.groups()
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        request = next((v for k, v in query.items() if k.upper() == "REQUEST"), "")
        key = f"{status} {parts.path} {request} [{','.join(sorted(k.upper() for k in query))}]"
        seen[key] += 1
        examples.setdefault(key, url)
    return [f"{count:4d} x {key}\n       e.g. {examples[key][:400]}" for key, count in seen.most_common()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eotiler", default=str(Path(".venv/bin/eotiler").resolve()))
    parser.add_argument("--out", default="benchmarks/results/qgis")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = out / "server.log"
    server = start_server(args.eotiler, port, log)
    app = QgsApplication([], False)
    app.initQgis()
    report: dict[str, object] = {"qgis": Qgis.QGIS_VERSION, "layers": {}}
    failures = 0
    try:
        for name, (provider, uri) in layer_uris(f"http://127.0.0.1:{port}").items():
            mark = len(log.read_text().splitlines())
            if provider == "WFS":
                layer = QgsVectorLayer(uri, name, provider)
            else:
                layer = QgsRasterLayer(uri, name, provider)
            entry: dict[str, object] = {"uri": uri, "valid": layer.isValid()}
            if provider == "WFS" and layer.isValid():
                entry["features"] = layer.featureCount()  # the bundled sample: 7 Sentinel-2 L2A scenes
            if layer.isValid():
                slug = re.sub(r"\W+", "_", name).strip("_").lower()
                entry.update(render(layer, out / f"{slug}.png"))
            else:
                entry["error"] = layer.error().summary()
            time.sleep(0.3)  # let the access log flush
            entry["requests"] = summarise(log, mark)
            ok = bool(entry["valid"]) and float(entry.get("drawn_share", 0)) > 0.2 and not entry.get("errors")
            entry["ok"] = ok
            failures += 0 if ok else 1
            report["layers"][name] = entry  # type: ignore[index]
            print(f"{'OK  ' if ok else 'FAIL'} {name}: valid={entry['valid']} drawn={entry.get('drawn_share')}")
            for line in entry["requests"]:  # type: ignore[union-attr]
                print("      " + line)
        temporal = temporal_check(args.eotiler, out)
        report["temporal"] = temporal
        failures += 0 if temporal.get("ok") else 1
        print(f"{'OK  ' if temporal.get('ok') else 'FAIL'} WMS-T stepped through {len(TEMPORAL_DAYS)} dates:")
        for day, frame in temporal.get("frames", {}).items():  # type: ignore[union-attr]
            print(f"      {day}: drawn={frame['drawn_share']} sha256={frame['sha256']}")
        print(f"      TIME values QGIS sent: {temporal.get('times_sent')}")
        access = access_check(args.eotiler, out)
        report["access"] = access
        for name, entry in access["layers"].items():  # type: ignore[union-attr]
            failures += 0 if entry["ok"] else 1
            drawn = entry.get("drawn_share")
            print(f"{'OK  ' if entry['ok'] else 'FAIL'} {name}: valid={entry['valid']} drawn={drawn}")
        failures += 1 if access["key_in_log"] else 0
        print(f"      HTTP statuses: {access['statuses']}; key in the server log: {access['key_in_log']}")
    finally:
        app.exitQgis()
        server.terminate()
        server.wait(timeout=10)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"report: {out / 'report.json'}; maps: {out}/*.png")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
