"""OpenLayers (TileWMS, and WMTS from the capabilities) and Leaflet (L.tileLayer.wms with its
defaults) against the OGC endpoints in headless Chromium: every tile loads, none fails, and the
maps draw data. The example pages live in ``server/api/static/examples/``."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

pytestmark = pytest.mark.browser


def watch(page):
    errors: list[str] = []
    responses: list[tuple[int, str, str]] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "requestfailed",
        lambda req: None if "ERR_ABORTED" in (req.failure or "") else errors.append(f"{req.url}: {req.failure}"),
    )
    page.on("response", lambda r: responses.append((r.status, r.url, r.headers.get("content-type", ""))))
    return errors, responses


def painted(page, selector: str) -> float:
    """Share of the canvas/image pixels under ``selector`` that are opaque and not black."""
    return page.evaluate(
        """(selector) => {
            let total = 0, drawn = 0;
            for (const el of document.querySelectorAll(selector)) {
                const c = document.createElement('canvas');
                c.width = el.naturalWidth || el.width; c.height = el.naturalHeight || el.height;
                if (!c.width || !c.height) continue;
                const ctx = c.getContext('2d'); ctx.drawImage(el, 0, 0);
                const d = ctx.getImageData(0, 0, c.width, c.height).data;
                for (let i = 0; i < d.length; i += 4) {
                    total += 1;
                    if (d[i + 3] > 0 && d[i] + d[i + 1] + d[i + 2] > 30) drawn += 1;
                }
            }
            return total ? drawn / total : 0; }""",
        selector,
    )


def test_openlayers_tilewms_and_wmts_from_capabilities(browser, live_url: str, tmp_path):
    page = browser.new_page()
    errors, responses = watch(page)
    page.goto(live_url + "/static/examples/openlayers.html?layer=TRUE_COLOR&time=2022-10-05")
    page.wait_for_function("window.eotiler && window.eotiler.ready", timeout=30000)
    page.wait_for_function("window.eotiler.loaded >= 8 && window.eotiler.pending === 0", timeout=60000)
    page.wait_for_timeout(300)  # let OpenLayers compose the loaded tiles on its canvases
    state = page.evaluate("window.eotiler")
    assert state["errors"] == [] and errors == [], [r for r in responses if r[0] >= 400]
    wms = [u for s, u, _ in responses if "/ogc/wms?" in u]
    wmts = [u for s, u, _ in responses if "/ogc/wmts?" in u and "GetTile" in u]
    assert wms and wmts
    assert all(s == 200 for s, u, _ in responses if "/ogc/" in u), [r for r in responses if r[0] != 200]
    wms_query = {k.upper(): v[0] for k, v in parse_qs(urlsplit(wms[0]).query, keep_blank_values=True).items()}
    assert wms_query["VERSION"] == "1.3.0" and wms_query["CRS"] == "EPSG:3857"
    assert wms_query["TIME"] == "2022-10-05" and wms_query["FORMAT"] == "image/png"
    wmts_query = {k.upper(): v[0] for k, v in parse_qs(urlsplit(wmts[0]).query, keep_blank_values=True).items()}
    assert wmts_query["TILEMATRIXSET"] == "WebMercatorQuad" and wmts_query["TIME"] == "2022-10-05"
    assert painted(page, "#wms canvas") > 0.2
    assert painted(page, "#wmts canvas") > 0.2
    page.screenshot(path=str(tmp_path / "openlayers.png"))


def test_leaflet_wms_with_its_defaults(browser, live_url: str):
    page = browser.new_page()
    errors, responses = watch(page)
    page.goto(live_url + "/static/examples/leaflet-wms.html?layer=TRUE_COLOR&time=2022-10-05")
    page.wait_for_function(
        "document.querySelectorAll('img.leaflet-tile-loaded').length >= 4 && "
        "document.querySelectorAll('img.leaflet-tile:not(.leaflet-tile-loaded)').length === 0",
        timeout=60000,
    )
    tiles = [(s, u, t) for s, u, t in responses if "/ogc/wms?" in u]
    assert tiles and all(s == 200 and t == "image/jpeg" for s, _, t in tiles), tiles
    query = parse_qs(urlsplit(tiles[0][1]).query, keep_blank_values=True)
    # Leaflet's defaults: lower-case keys, WMS 1.1.1, SRS (not CRS), JPEG, not transparent
    assert query["version"] == ["1.1.1"] and query["srs"] == ["EPSG:3857"] and query["format"] == ["image/jpeg"]
    assert query["transparent"] == ["false"] and query["styles"] == [""]
    assert errors == []
    assert painted(page, "img.leaflet-tile-loaded") > 0.2
