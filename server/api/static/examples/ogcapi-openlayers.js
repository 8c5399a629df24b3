// OpenLayers' OGCMapTile source on eotiler's OGC API - Tiles, as an OpenLayers user writes it:
// the source reads the tileset document, its tiling scheme and its tile URL template.
// Query: ?layer=TRUE_COLOR&matrixSet=WebMercatorQuad&lon=&lat=&zoom=
// window.eotiler counts tile loads and errors so the browser tests can read them.
(function () {
  'use strict';
  const query = new URLSearchParams(window.location.search);
  const layer = query.get('layer') || 'TRUE_COLOR';
  const matrixSet = query.get('matrixSet') || 'WebMercatorQuad';
  const center = ol.proj.fromLonLat([Number(query.get('lon') || -8.77), Number(query.get('lat') || 53.11)]);
  const state = { loaded: 0, pending: 0, errors: [], ready: false };
  window.eotiler = state;

  const source = new ol.source.OGCMapTile({
    url: `/collections/${encodeURIComponent(layer)}/tiles/${matrixSet}`,
    transition: 0,
  });
  source.on('tileloadstart', () => { state.pending += 1; });
  source.on('tileloadend', () => { state.pending -= 1; state.loaded += 1; });
  source.on('tileloaderror', () => { state.pending -= 1; state.errors.push('tile'); });
  source.on('change', () => {
    if (source.getState() === 'ready') state.ready = true;
    if (source.getState() === 'error') { state.errors.push('tileset: ' + source.getState()); state.ready = true; }
  });
  new ol.Map({
    target: 'map',
    layers: [new ol.layer.Tile({ source: source })],
    view: new ol.View({ center: center, zoom: Number(query.get('zoom') || 11) }),
  });
}());
