"""Readers: a scene plus a grid and band names -> arrays; the only place that opens rasters."""
