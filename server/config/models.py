"""Pydantic models of ``config/*.yaml``: the only schema of the configuration.

Why ``extra="forbid"`` everywhere: a misspelt key (``maxc: 20``) must fail loudly at start-up
instead of silently falling back to a default.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from server.models import Priority

_ID = r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$"
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}([0-9a-fA-F]{2})?$")
# Coarsest view a layer draws unless it says otherwise (``LayerConfig.max_meters_per_pixel``).
DEFAULT_MAX_METERS_PER_PIXEL = 1500.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StaticCatalogue(_Strict):
    """A local static STAC catalogue: a directory of item JSON files (CDSE item shape)."""

    type: Literal["static"]
    path: Path


class StacApiCatalogue(_Strict):
    """A STAC API (e.g. the CDSE one) searched per request."""

    type: Literal["stac-api"]
    url: str = "https://stac.dataspace.copernicus.eu/v1"
    collection: str
    # Extra CQL2-JSON clause ANDed into every search, e.g. to exclude a platform.
    filter: dict[str, Any] | None = None
    max_items: int = Field(default=100, ge=1, le=1000, description="items fetched per search at most")

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return value


Catalogue = Annotated[StaticCatalogue | StacApiCatalogue, Field(discriminator="type")]


class BandConfig(_Strict):
    """How one named band is found in an item and turned into physical values.

    ``asset`` is the asset key in the STAC item; ``{res}`` is replaced by each of
    ``resolutions`` (metres) so one band can come from its 10, 20 or 60 m file.
    """

    asset: str
    resolutions: list[float] = Field(default_factory=lambda: [0.0], min_length=1)
    dtype: Literal["uint8", "uint16", "int16", "float32"] = "uint16"
    nodata: float | None = 0
    categorical: bool = False
    scale: float = 1.0
    offset: float = 0.0
    offset_rule: Literal["none", "s2-baseline"] = "none"
    # Radar amplitude bands: LINEAR_POWER = DN^2 x power_scale (Sentinel Hub's default unit for
    # Sentinel-1), e.g. 1 / calibration constant^2.
    power_scale: float | None = Field(default=None, gt=0)

    @field_validator("resolutions")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(r < 0 for r in value):
            raise ValueError("resolutions must be >= 0 metres")
        return sorted(value)

    @model_validator(mode="after")
    def _placeholder(self) -> BandConfig:
        if len(self.resolutions) > 1 and "{res}" not in self.asset:
            raise ValueError("asset needs a {res} placeholder when several resolutions are given")
        return self


class CollectionConfig(_Strict):
    """A data collection: where its scenes are listed and where its files live."""

    title: str
    catalogue: Catalogue
    data_root: str = Field(description="local directory or /vsis3/<bucket>")
    href_prefix: str = "s3://eodata/"
    # "transform": files carry a geotransform (S2, COGs); "gcps": only ground control points
    # (Sentinel-1 GRD), warped through a thin-plate spline.
    geolocation: Literal["transform", "gcps"] = "transform"
    bands: dict[str, BandConfig] = Field(min_length=1)

    @field_validator("bands")
    @classmethod
    def _band_names(cls, value: dict[str, BandConfig]) -> dict[str, BandConfig]:
        for name in value:
            if not re.match(r"^[A-Za-z][A-Za-z0-9_]*$", name) or name == "dataMask":
                raise ValueError(f"band name '{name}' is not a valid identifier")
        return value


class LegendItem(_Strict):
    """One colour of a legend: a value (gradients) or a label (classes).

    A class item may give its class ``value`` instead of a ``color``: the colour is then the
    script's for that class (``PALETTE[value]`` of the ``.js`` script or twin).
    """

    color: str | None = None
    label: str = ""
    value: float | None = None

    @field_validator("color")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not _COLOR.match(value):
            raise ValueError(f"color '{value}' is not #RRGGBB or #RRGGBBAA")
        return value

    @model_validator(mode="after")
    def _colour_or_class(self) -> LegendItem:
        if self.color is None and self.value is None:
            raise ValueError("give a color, or the class value whose colour the script's PALETTE holds")
        return self


class LegendConfig(_Strict):
    """A legend shown by the viewer and by GetLegendGraphic.

    A gradient written without ``items`` takes the stops and colours of the layer's evalscript
    (``STOPS``/``COLORS`` of the ``.js`` file, which a ``.py`` twin reads too), and class items
    without a ``color`` take ``PALETTE[value]``: the layers are built with them filled in
    (``catalog.layers.with_script_legend``), so colours are written once, in the script.
    """

    type: Literal["gradient", "discrete"] = "gradient"
    title: str = ""
    items: list[LegendItem] | None = Field(default=None, min_length=2)

    @model_validator(mode="after")
    def _discrete_items(self) -> LegendConfig:
        if self.items is None and self.type == "discrete":
            raise ValueError("a discrete legend needs its items (colour or class value, and label, of each class)")
        if self.type == "gradient" and any(item.color is None for item in self.items or []):
            raise ValueError("every item of a gradient legend needs a color (or give no items)")
        return self


class LayerConfig(_Strict):
    """A layer: a collection seen through an evalscript (a file or an inline expression)."""

    title: str
    abstract: str = ""
    collection: str
    evalscript: str | None = None
    expression: str | None = None
    colormap: str | None = None
    rescale: tuple[float, float] | None = None
    units: Literal["REFLECTANCE", "DN"] = "REFLECTANCE"
    default_time: str | None = None
    maxcc: float | None = Field(default=None, ge=0, le=100)
    priority: Priority = Priority.MOST_RECENT
    minzoom: int = Field(default=0, ge=0, le=30)
    # The floor: views coarser than this many metres per pixel (measured on the ground, any CRS)
    # are not read. Maps get a transparent image with an X-Eotiler-Notice header to zoom in, WCS
    # a 400. The default suits Sentinel-2 and -1 (10-60 m bands): 256 px Web Mercator tiles of
    # zoom 7 and finer everywhere, zoom 6 from about 52° latitude. null: no floor (only for
    # small or pre-tiled collections).
    max_meters_per_pixel: float | None = Field(default=DEFAULT_MAX_METERS_PER_PIXEL, gt=0)
    maxzoom: int = Field(default=18, ge=0, le=30)
    resampling: Literal["nearest", "bilinear", "cubic"] = "nearest"
    legend: LegendConfig | None = None
    # Whether requests may replace this layer's script with an EVALSCRIPT parameter. Request
    # scripts are only ever compiled as whitelisted expressions, never as Python.
    request_evalscript: bool = True
    # Cache-Control max-age for this layer's images (default: EOTILER_CACHE_MAX_AGE; an open-ended
    # or absent TIME always uses the shorter EOTILER_CACHE_MAX_AGE_OPEN).
    cache_max_age: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_script(self) -> LayerConfig:
        if (self.evalscript is None) == (self.expression is None):
            raise ValueError("give exactly one of 'evalscript' or 'expression'")
        if self.expression is None and (self.colormap or self.rescale):
            raise ValueError("'colormap' and 'rescale' apply to 'expression' layers only")
        if self.minzoom > self.maxzoom:
            raise ValueError("minzoom is larger than maxzoom")
        return self


class ClientConfig(_Strict):
    """A client of the server: what it authenticates with and what it may do.

    Keyed by client id in ``clients:``. The same registry serves the OAuth2 token endpoint of
    the Sentinel Hub APIs (``secret``) and every other endpoint (a token, an API key or the
    ``instance_id`` in the URL); ``server/access`` enforces ``layers``, ``evalscripts`` and
    ``rate_limit``.
    """

    secret: SecretStr | None = Field(
        default=None, min_length=16, description="the OAuth2 client secret (at least 16 characters)"
    )
    api_keys: list[SecretStr] = Field(default_factory=list, description="keys sent as X-API-Key or key=")
    # Sentinel Hub's configuration instance id: /ogc/wms/<instance_id>, /<instance_id>/layers/...
    instance_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9\-]{7,63}$")
    # Layer ids the client may use; null: every layer.
    layers: list[str] | None = None
    # Whether the client may replace a layer's script with its own EVALSCRIPT.
    evalscripts: bool = True
    # Requests per minute, shared by every worker and replica through Redis; null: no limit.
    rate_limit: int | None = Field(default=None, ge=1, le=100_000)

    @field_validator("api_keys")
    @classmethod
    def _long_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(len(key.get_secret_value()) < 16 for key in value):
            raise ValueError("every API key needs at least 16 characters")
        return value

    @model_validator(mode="after")
    def _some_credential(self) -> ClientConfig:
        if self.secret is None and not self.api_keys and self.instance_id is None:
            raise ValueError("give a secret, api_keys or an instance_id")
        return self


class Config(_Strict):
    """The whole configuration file."""

    # Whether requests may send EVALSCRIPT at all (JavaScript or expressions; never Python). Each
    # layer can still refuse with ``request_evalscript: false``.
    request_evalscripts: bool = True
    evalscripts_dir: Path = Path("../evalscripts")
    collections: dict[Annotated[str, Field(pattern=_ID)], CollectionConfig] = Field(min_length=1)
    layers: dict[Annotated[str, Field(pattern=_ID)], LayerConfig] = Field(min_length=1)
    # Clients of every endpoint (tokens, API keys, instance ids; docs/access.md): none means the
    # server is open to anyone.
    clients: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@\-]{0,127}$")], ClientConfig] = Field(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _client_references(self) -> Config:
        seen: dict[str, str] = {}
        for cid, client in self.clients.items():
            unknown = [lid for lid in client.layers or [] if lid not in self.layers]
            if unknown:
                raise ValueError(f"clients.{cid}.layers: unknown layer(s) {', '.join(unknown)}")
            credentials = [k.get_secret_value() for k in client.api_keys]
            credentials += [client.instance_id] if client.instance_id else []
            for value in credentials:
                if value in seen:  # never print the value: it is a credential
                    raise ValueError(f"clients.{cid}: an API key or instance id is also used by {seen[value]}")
                seen[value] = cid
        return self
