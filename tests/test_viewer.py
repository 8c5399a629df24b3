"""The map viewer in headless Chromium (Debian's package, driven by Playwright).

Skipped when /usr/bin/chromium is missing, unless EOTILER_REQUIRE_BROWSER=1 (set by .ci/run),
in which case a missing browser fails the run.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.browser


def open_viewer(browser, url: str):
    page = browser.new_page()
    errors: list[str] = []
    tiles: list[tuple[int, str]] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Leaflet cancels in-flight tiles when a layer's URL changes (net::ERR_ABORTED): not an error.
    page.on(
        "requestfailed",
        lambda req: None if "ERR_ABORTED" in (req.failure or "") else errors.append(f"failed {req.url}: {req.failure}"),
    )
    page.on("response", lambda r: tiles.append((r.status, r.url)) if "/tiles/" in r.url else None)
    page.goto(url)
    page.wait_for_function("window.eotilerReady === true", timeout=30000)
    page.wait_for_function(
        "document.querySelectorAll('img.leaflet-tile-loaded').length >= 4 && "
        "document.querySelectorAll('img.leaflet-tile:not(.leaflet-tile-loaded)').length === 0",
        timeout=60000,
    )
    return page, errors, tiles


def drawn_tiles(page) -> int:
    """Tiles whose pixels are not all transparent, measured in the page with a canvas."""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('img.leaflet-tile-loaded')).filter((img) => {
            const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
            const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
            const d = ctx.getImageData(0, 0, c.width, c.height).data;
            for (let i = 3; i < d.length; i += 4) if (d[i] > 0) return true;
            return false; }).length"""
    )


def test_viewer_draws_tiles_without_errors(browser, live_url: str, tmp_path):
    page, errors, tiles = open_viewer(browser, live_url + "/")
    assert tiles and all(status == 200 for status, _ in tiles), tiles
    assert drawn_tiles(page) >= 1
    assert page.locator("#layer option").count() >= 10
    # the date list holds the view's days (the largest scene, T29RKH of 2020-02-19), not the catalogue's
    page.wait_for_function("[...document.querySelectorAll('#time option')].some((o) => o.value === '2020-02-19')")
    page.screenshot(path=os.environ.get("EOTILER_SCREENSHOT", str(tmp_path / "viewer.png")))
    # switch to NDVI through the layer select: legend appears, tiles reload from the NDVI layer
    tiles.clear()
    page.select_option("#layer", "NDVI")
    page.wait_for_function("document.querySelector('#legend').complete && !document.querySelector('#legend').hidden")
    page.wait_for_function(
        "document.querySelectorAll('img.leaflet-tile-loaded[src*=\"/NDVI/\"]').length >= 1", timeout=60000
    )
    assert page.evaluate("document.querySelector('#legend').naturalWidth") > 0
    # pick a date: tile URLs carry TIME
    tiles.clear()
    page.wait_for_function("[...document.querySelectorAll('#time option')].some((o) => o.value === '2020-02-19')")
    page.select_option("#time", "2020-02-19")
    page.wait_for_function("document.querySelectorAll('img.leaflet-tile[src*=\"time=2020-02-19\"]').length >= 1")
    assert errors == []


def test_api_docs_load_without_cdn(browser, live_url: str):
    page = browser.new_page()
    errors: list[str] = []
    external: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("request", lambda req: external.append(req.url) if not req.url.startswith(live_url) else None)
    page.goto(live_url + "/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=30000)
    assert "eotiler" in page.inner_text(".swagger-ui .info .title")
    assert page.locator(".opblock").count() >= 5
    assert errors == [] and [u for u in external if not u.startswith("data:")] == []


def test_viewer_shows_a_stac_api_layer(browser, s3_client, stac):
    """A layer searched through a STAC API lists no scenes ("scenes": null) and no dates: the
    viewer still draws it, hides the scene list and takes a typed date instead."""
    url = str(s3_client.base_url).rstrip("/")
    details = s3_client.get("/layers/TRUE_COLOR").json()
    assert details["scenes"] is None and details["times"] == []  # what the page has to cope with
    searches = len(stac.searches)
    page, errors, tiles = open_viewer(browser, f"{url}/?layer=TRUE_COLOR#map=11/53.12/-8.75")  # over T29UNU
    assert tiles and all(status == 200 for status, _ in tiles), tiles
    assert drawn_tiles(page) >= 1
    assert len(stac.searches) > searches, "the tiles were found through the STAC API"
    assert page.is_hidden("#scene-label") and page.is_visible("#day")
    # the date list comes from the STAC API too: the view's one day
    page.wait_for_function("[...document.querySelectorAll('#time option')].some((o) => o.value === '2022-10-05')")
    # a typed date reaches the tile URLs, and that day's scene is drawn
    page.fill("#day", "2022-10-05")
    page.wait_for_function(
        "document.querySelectorAll('img.leaflet-tile-loaded[src*=\"time=2022-10-05\"]').length >= 4 && "
        "document.querySelectorAll('img.leaflet-tile:not(.leaflet-tile-loaded)').length === 0",
        timeout=60000,
    )
    assert drawn_tiles(page) >= 1
    assert errors == []


def view_dates(page) -> list[str]:
    """The days the date list offers (without "latest")."""
    return page.evaluate("[...document.querySelectorAll('#time option')].map((o) => o.value).filter(Boolean)")


def test_date_list_follows_the_view(browser, live_url: str):
    """The date list holds the days with scenes in the view, cloudy ones marked, and changes when
    the map moves to another scene; a cloudy day is drawn (maxcc=100 in the tile URLs)."""
    page, errors, _ = open_viewer(browser, live_url + "/?layer=TRUE_COLOR#map=12/53.12/-8.75")  # over T29UNU
    page.wait_for_function("document.querySelector('#time').dataset.loaded")
    assert view_dates(page) == ["2022-10-05"]
    cloudy = page.locator("#time option[value='2022-10-05']")
    assert cloudy.get_attribute("class") == "cloudy" and "60 %" in cloudy.inner_text()  # 59.8 % > 30 %
    page.select_option("#time", "2022-10-05")
    page.wait_for_function(
        "document.querySelectorAll('img.leaflet-tile-loaded[src*=\"time=2022-10-05&maxcc=100\"]').length >= 1",
        timeout=60000,
    )
    # move to T29UPU through the scene list: the list now offers that scene's day
    index = page.evaluate(
        "[...document.querySelectorAll('#scene option')].findIndex((o) => o.textContent.includes('T29UPU')) - 1"
    )
    page.select_option("#scene", str(index))
    page.wait_for_function(
        "![...document.querySelectorAll('#time option')].some((o) => o.value === '2022-10-05')", timeout=30000
    )
    assert view_dates(page) == ["2017-06-17"]
    assert page.locator("#time option[value='2017-06-17']").get_attribute("class") != "cloudy"  # 0 %
    assert errors == []
