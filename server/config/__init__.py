"""The layer catalogue configuration: pydantic models and the staged loader."""

from server.config.loader import load_config
from server.config.models import BandConfig, CollectionConfig, Config, LayerConfig, LegendConfig

__all__ = ["BandConfig", "CollectionConfig", "Config", "LayerConfig", "LegendConfig", "load_config"]
