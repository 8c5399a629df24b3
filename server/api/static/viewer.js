// eotiler map viewer: one Leaflet tile layer per configured layer, a TIME selector, scene
// shortcuts and the legend. Everything is served by eotiler itself (no CDN, no basemap).
//
// Layers of a folder catalogue list their scenes and dates (GET /layers/{id}); layers searched
// through a STAC API list neither ("scenes": null, "times": []): for them the date is typed
// in, the scene list is hidden and the view is kept (zoomed in to the layer's minzoom).
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

  // A listed date when the layer has dates, else the typed one.
  function timeValue() { return details && !details.times.length ? ui.day.value : ui.time.value; }

  function tileUrl(id) {
    const time = timeValue();
    const query = time ? `?time=${encodeURIComponent(time)}` : "";
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

  function showDates() {
    const keep = ui.time.value;
    ui.time.replaceChildren(new Option("latest", ""));
    for (const day of details.times) ui.time.add(new Option(day, day));
    ui.time.value = details.times.includes(keep) ? keep : "";
    ui.time.hidden = !details.times.length;
    ui.day.hidden = !!details.times.length;
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
    const c = map.getCenter();
    history.replaceState(null, "", `#map=${map.getZoom()}/${c.lat.toFixed(5)}/${c.lng.toFixed(5)}`);
  });
  ui.layer.addEventListener("change", () => select(ui.layer.value, true));
  ui.time.addEventListener("change", refresh);
  ui.day.addEventListener("change", refresh);
  ui.scene.addEventListener("change", () => {
    const s = (details.scenes || [])[Number(ui.scene.value)];
    if (!s) return;
    ui.time.value = s.datetime.slice(0, 10);
    refresh();
    fitBox(s.bbox);
  });

  const params = new URLSearchParams(location.search);
  const view = hashView();
  if (view) map.setView([view[1], view[2]], view[0]);
  await select(params.get("layer") || (layers.find((l) => l.id === "TRUE_COLOR") || layers[0]).id, !view);
  window.eotilerReady = true;
})().catch((err) => { console.error(err); });
