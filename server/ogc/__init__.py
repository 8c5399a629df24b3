"""OGC services (WMS, WMTS, WCS, WFS) on the one pipeline: parse KVP -> typed request ->
``Pipeline.render`` -> response (or an OGC exception report)."""
