// eotiler map viewer: one Leaflet tile layer per configured layer, a TIME selector, scene
// shortcuts and the legend. Everything is served by eotiler itself (no CDN, no basemap).
"use strict";

(async function main() {
  const map = L.map("map", { worldCopyJump: true }).setView([50, 0], 4);
  const ui = {
    layer: document.getElementById("layer"),
    time: document.getElementById("time"),
    scene: document.getElementById("scene"),
    abstract: document.getElementById("abstract"),
    legend: document.getElementById("legend"),
    tilejson: document.getElementById("tilejson"),
  };
  const layers = (await (await fetch("/layers")).json()).layers.filter((l) => l.formats.includes("png"));
  const tileLayers = {};
  let current = null;
  let details = null;

  function tileUrl(id) {
    const time = ui.time.value;
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

  async function select(id, fit) {
    const info = layers.find((l) => l.id === id);
    details = await (await fetch(`/layers/${encodeURIComponent(id)}`)).json();
    const keep = ui.time.value;
    ui.time.replaceChildren(new Option("latest", ""));
    for (const day of details.times) ui.time.add(new Option(day, day));
    ui.time.value = details.times.includes(keep) ? keep : "";
    ui.scene.replaceChildren(new Option("—", ""));
    details.scenes.forEach((s, i) => ui.scene.add(new Option(`${s.datetime.slice(0, 10)} ${s.id.split("_")[5] || s.id}`, String(i))));
    ui.abstract.textContent = info.abstract;
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
    if (fit && details.scenes.length) {
      const largest = details.scenes.reduce((a, b) => area(b.bbox) > area(a.bbox) ? b : a);
      fitScene(largest);
    }
  }

  function area(b) { return (b[2] - b[0]) * (b[3] - b[1]); }
  function fitScene(s) { map.fitBounds([[s.bbox[1], s.bbox[0]], [s.bbox[3], s.bbox[2]]]); }

  map.on("baselayerchange", (e) => { if (e.layer !== current) { current = e.layer; select(e.layer.options.eotilerId, false); } });
  ui.layer.addEventListener("change", () => select(ui.layer.value, true));
  ui.time.addEventListener("change", () => current.setUrl(tileUrl(current.options.eotilerId)));
  ui.scene.addEventListener("change", () => {
    const s = details.scenes[Number(ui.scene.value)];
    if (!s) return;
    ui.time.value = s.datetime.slice(0, 10);
    current.setUrl(tileUrl(current.options.eotilerId));
    fitScene(s);
  });

  const params = new URLSearchParams(location.search);
  await select(params.get("layer") || (layers.find((l) => l.id === "TRUE_COLOR") || layers[0]).id, true);
  window.eotilerReady = true;
})().catch((err) => { console.error(err); });
