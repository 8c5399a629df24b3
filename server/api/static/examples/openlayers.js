// Two OpenLayers maps on eotiler's OGC services, written the way an OpenLayers user would:
// a TileWMS source with OpenLayers' own defaults (WMS 1.3.0, image/png, TRANSPARENT=TRUE) and a
// WMTS source from WMTS.optionsFromCapabilities. Query: ?layer=NDVI&time=2022-10-05&lon=&lat=&zoom=
// window.eotiler counts tile loads and errors so the browser tests can read them.
(function () {
  'use strict';
  const query = new URLSearchParams(window.location.search);
  const layer = query.get('layer') || 'TRUE_COLOR';
  const time = query.get('time') || '2022-10-05';
  const center = ol.proj.fromLonLat([Number(query.get('lon') || -8.77), Number(query.get('lat') || 53.11)]);
  const zoom = Number(query.get('zoom') || 11);
  const state = { loaded: 0, pending: 0, errors: [], ready: false };
  window.eotiler = state;

  function watch(source) {
    source.on('tileloadstart', () => { state.pending += 1; });
    source.on('tileloadend', () => { state.pending -= 1; state.loaded += 1; });
    source.on('tileloaderror', (event) => {
      state.pending -= 1;
      state.errors.push(String(event.tile && event.tile.src_ ? event.tile.src_ : 'tile'));
    });
    return source;
  }

  const view = new ol.View({ center: center, zoom: zoom });
  const wms = watch(new ol.source.TileWMS({ url: '/ogc/wms', params: { LAYERS: layer, TIME: time }, transition: 0 }));
  new ol.Map({ target: 'wms', layers: [new ol.layer.Tile({ source: wms })], view: view });

  fetch('/ogc/wmts?SERVICE=WMTS&REQUEST=GetCapabilities&VERSION=1.0.0')
    .then((response) => response.text())
    .then((text) => {
      const capabilities = new ol.format.WMTSCapabilities().read(text);
      const options = ol.source.WMTS.optionsFromCapabilities(capabilities, {
        layer: layer,
        matrixSet: query.get('matrixSet') || 'WebMercatorQuad',
      });
      options.dimensions = Object.assign({}, options.dimensions, { Time: time });
      options.transition = 0;
      const wmts = watch(new ol.source.WMTS(options));
      new ol.Map({ target: 'wmts', layers: [new ol.layer.Tile({ source: wmts })], view: view });
      state.ready = true;
    })
    .catch((error) => { state.errors.push('capabilities: ' + error); state.ready = true; });
}());
