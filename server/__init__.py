"""eotiler: an OGC tile and map server for Copernicus Earth-observation data."""

__version__ = "0.1.0"
