// eotiler map viewer: one Leaflet tile layer per configured layer, a TIME selector, scene
// shortcuts and the legend. Everything is served by eotiler itself (no CDN, no basemap).
//
// The date list holds the days with scenes in the current view (GET /layers/{id}/dates, asked
// again when the map stops moving), cloudy ones marked; a cloudy day is drawn with maxcc=100.
// Layers of a folder catalogue list their scenes (GET /layers/{id}); layers searched through a
// STAC API do not ("scenes": null): for them a date can also be typed in (a search returns a
// bounded number of scenes, so older days may be missing from the list), the scene list is
// hidden and the view is kept (zoomed in to the layer's minzoom).
// The view is kept in the URL as #map=zoom/lat/lon (OpenStreetMap's convention).
"use strict";

(async function main() {
  const map = L.map("map", { worldCopyJump: true }).setView([50, 0], 4);
  const ui = {
    layer: document.getElementById("layer"),
    time: document.getElementById("time"),
    day: document.getElementById("day"),
    scene: document.getElementById("scene"),
    sceneLabel: document.getElementById("scene-label"),
    zoomHint: document.getElementById("zoom-hint"),
    abstract: document.getElementById("abstract"),
    legend: document.getElementById("legend"),
    tilejson: document.getElementById("tilejson"),
  };
  const layers = (await (await fetch("/layers")).json()).layers.filter((l) => l.formats.includes("png"));
  const tileLayers = {};
  let current = null;
  let details = null;
  let datesAsked = null; // the AbortController of the dates request in flight
  let datesTimer = 0;
  // Above this cloud cover (%) a day is marked cloudy: the layer's own maxcc, else 30.
  function cloudLimit() { return details && details.maxcc != null ? details.maxcc : 30; }

  // A typed date (STAC API layers) wins over the listed one.
  function timeValue() { return details && details.scenes === null && ui.day.value ? ui.day.value : ui.time.value; }

  function tileUrl(id) {
    const time = timeValue();
    const chosen = ui.time.selectedOptions[0];
    const params = new URLSearchParams();
    if (time) params.set("time", time);
    if (time && time === ui.time.value && chosen && chosen.classList.contains("cloudy")) params.set("maxcc", "100");
    const query = params.toString() ? `?${params}` : "";
    return `/layers/${encodeURIComponent(id)}/tiles/WebMercatorQuad/{z}/{x}/{y}.png${query}`;
  }

  for (const info of layers) {
    tileLayers[info.title] = L.tileLayer(tileUrl(info.id), {
      minZoom: 0, maxZoom: 18, maxNativeZoom: info.maxzoom, tileSize: 256,
      attribution: "Contains modified Copernicus Sentinel data", eotilerId: info.id,
    });
    ui.layer.add(new Option(info.title, info.id));
  }
  L.control.layers(tileLayers, null, { collapsed: true, position: "topleft" }).addTo(map);
  L.control.scale().addTo(map);

  function byId(id) { return Object.values(tileLayers).find((t) => t.options.eotilerId === id); }

  function dateOption(day, cloud) {
    const cloudy = cloud != null && cloud > cloudLimit();
    const label = cloud == null ? day : `${day}${cloudy ? " \u2601" : ""} ${Math.round(cloud)} %`;
    const option = new Option(label, day);
    if (cloudy) { option.className = "cloudy"; option.title = `cloud cover ${cloud} % (above ${cloudLimit()} %)`; }
    return option;
  }

  // The days with scenes in the view; the chosen day stays listed (marked) when the view leaves it.
  async function loadDates() {
    if (!details) return;
    if (datesAsked) datesAsked.abort();
    const asked = new AbortController();
    datesAsked = asked;
    const b = map.getBounds();
    const bbox = [b.getWest(), Math.max(b.getSouth(), -90), b.getEast(), Math.min(b.getNorth(), 90)]
      .map((v) => v.toFixed(5)).join(",");
    let found;
    try {
      const response = await fetch(`/layers/${encodeURIComponent(details.id)}/dates?bbox=${bbox}&maxcc=100`, { signal: asked.signal });
      if (!response.ok) return;
      found = (await response.json()).dates;
    } catch (err) {
      if (err.name === "AbortError") return;
      throw err;
    }
    const keep = ui.time.selectedOptions[0];
    ui.time.replaceChildren(new Option("latest", ""));
    for (const d of found) ui.time.add(dateOption(d.date, d.cloud_cover));
    if (keep && keep.value && !found.some((d) => d.date === keep.value)) {
      keep.textContent = `${keep.value} (not in view)`;
      ui.time.add(keep);
    }
    ui.time.value = keep ? keep.value : "";
    ui.time.dataset.loaded = String(Date.now());
  }

  function scheduleDates() { clearTimeout(datesTimer); datesTimer = setTimeout(loadDates, 200); }

  function showDates() {
    ui.time.hidden = false;
    ui.day.hidden = details.scenes !== null;
  }

  function showScenes() {
    const scenes = details.scenes || [];
    ui.scene.replaceChildren(new Option("—", ""));
    scenes.forEach((s, i) => ui.scene.add(new Option(`${s.datetime.slice(0, 10)} ${s.id.split("_")[5] || s.id}`, String(i))));
    ui.sceneLabel.hidden = !scenes.length;
  }

  // The largest scene, else the layer's bounds unless they are the whole globe, else where the
  // map is; never below the layer's minzoom (its tiles are empty there).
  function fitLayer() {
    const scenes = details.scenes || [];
    const box = scenes.length ? scenes.reduce((a, b) => area(b.bbox) > area(a.bbox) ? b : a).bbox : details.bounds;
    if (box && (scenes.length || area(box) < 360 * 180)) fitBox(box);
    else if (map.getZoom() < details.minzoom) map.setZoom(details.minzoom);
  }

  function fitBox(b) {
    const bounds = L.latLngBounds([[b[1], b[0]], [b[3], b[2]]]);
    map.setView(bounds.getCenter(), Math.max(map.getBoundsZoom(bounds), details.minzoom));
  }

  function showZoomHint() {
    const below = details && map.getZoom() < details.minzoom;
    ui.zoomHint.hidden = !below;
    if (below) ui.zoomHint.textContent = `Zoom in to level ${details.minzoom} or more to see this layer.`;
  }

  async function select(id, fit) {
    const info = layers.find((l) => l.id === id);
    details = await (await fetch(`/layers/${encodeURIComponent(id)}`)).json();
    showDates();
    showScenes();
    ui.abstract.textContent = info.abstract || "";
    ui.legend.hidden = !info.legend;
    if (info.legend) ui.legend.src = info.legend;
    ui.tilejson.href = info.tilejson;
    ui.layer.value = id;
    const layer = byId(id);
    layer.setUrl(tileUrl(id));
    if (current !== layer) {
      if (current) map.removeLayer(current);
      layer.addTo(map);
      current = layer;
    }
    if (fit) fitLayer();
    showZoomHint();
    scheduleDates();
  }

  function area(b) { return (b[2] - b[0]) * (b[3] - b[1]); }
  function refresh() { current.setUrl(tileUrl(current.options.eotilerId)); }

  // #map=zoom/lat/lon -> [zoom, lat, lon], or null
  function hashView() {
    const m = /^#map=(\d+)\/(-?[\d.]+)\/(-?[\d.]+)$/.exec(location.hash);
    return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : null;
  }

  map.on("baselayerchange", (e) => { if (e.layer !== current) { current = e.layer; select(e.layer.options.eotilerId, false); } });
  map.on("zoomend", showZoomHint);
  map.on("moveend", () => {
    scheduleDates();
    const c = map.getCenter();
    history.replaceState(null, "", `#map=${map.getZoom()}/${c.lat.toFixed(5)}/${c.lng.toFixed(5)}`);
  });
  ui.layer.addEventListener("change", () => select(ui.layer.value, true));
  ui.time.addEventListener("change", refresh);
  ui.day.addEventListener("change", refresh);
  ui.scene.addEventListener("change", () => {
    const s = (details.scenes || [])[Number(ui.scene.value)];
    if (!s) return;
    const day = s.datetime.slice(0, 10);
    if (![...ui.time.options].some((o) => o.value === day)) ui.time.add(dateOption(day, s.cloud_cover));
    ui.time.value = day;
    refresh();
    fitBox(s.bbox);
  });

  const params = new URLSearchParams(location.search);
  const view = hashView();
  if (view) map.setView([view[1], view[2]], view[0]);
  await select(params.get("layer") || (layers.find((l) => l.id === "TRUE_COLOR") || layers[0]).id, !view);
  await loadDates();
  window.eotilerReady = true;
})().catch((err) => { console.error(err); });
