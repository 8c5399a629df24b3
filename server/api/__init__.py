"""REST endpoints: layers, XYZ tiles, TileJSON, legends, the map viewer, health."""
