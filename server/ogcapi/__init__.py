"""OGC API - Tiles and OGC API - Maps (Part 1 core) on the same pipeline as XYZ, WMS and WMTS."""
