"""Layers as the server runs them: configuration + compiled evalscript + scene catalogue.

Built once at start-up (and by ``eotiler check-config``), so requests never re-read YAML or
re-import evalscripts. This is also the last configuration stage: every evalscript is compiled
and run once on a small synthetic array, and failures name the layer and the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from server.access.clients import current_caller
from server.catalog.catalogue import Catalogue
from server.catalog.stac_api import StacApiCatalogue
from server.catalog.static import StaticCatalogue
from server.config.models import CollectionConfig, Config, LayerConfig, LegendConfig
from server.config.models import StaticCatalogue as StaticCatalogueConfig
from server.errors import ConfigError, EotilerError, EvalscriptError, Forbidden, InvalidParameter, LayerNotDefined
from server.evalscript.colour_ramp import script_palette, script_ramp
from server.evalscript.contract import Evalscript, Samples
from server.evalscript.expression import ExpressionEvalscript
from server.evalscript.js_script import JavaScriptEvalscript, SceneInfo
from server.evalscript.postprocess import to_sample_type
from server.evalscript.python_script import PythonEvalscript
from server.evalscript.request_script import compile_request_script, decode_evalscript
from server.models import TimeRange, parse_time
from server.render.legend import colormap_legend, script_legend
from server.settings import Settings
from server.upstream_breaker import CircuitBreaker


@dataclass(slots=True, eq=False)
class Layer:
    """A configured layer, ready to render (hashed by identity: built once per app)."""

    id: str
    config: LayerConfig
    collection_id: str
    collection: CollectionConfig
    catalogue: Catalogue
    evalscript: Evalscript
    default_time: TimeRange | None
    request_evalscripts: bool = True  # the configuration-wide switch (``request_evalscripts``)

    @property
    def bounds(self) -> tuple[float, float, float, float] | None:
        """Lon/lat union of the collection's item footprints."""
        return self.catalogue.extent()[0]

    @property
    def times(self) -> list[datetime]:
        """Acquisition times of every scene in the collection."""
        return self.catalogue.extent()[1]

    @property
    def native_resolution(self) -> float:
        """Finest resolution in metres among the bands the script reads (10 m when unknown)."""
        found = [
            res
            for name in self.evalscript.inputs.data_bands
            for res in self.collection.bands[name].resolutions
            if res > 0
        ]
        return min(found) if found else 10.0

    def request_script(
        self, encoded: str | None, parameter: str = "EVALSCRIPT", require_default: bool = True
    ) -> Evalscript | None:
        """Compile a request's EVALSCRIPT for this layer (``None`` when absent); refused if the layer forbids it.

        ``require_default=False``: a script may lack a ``default`` output (Process and Statistical APIs)."""
        if encoded is None or not encoded.strip():
            return None
        if not (self.config.request_evalscript and self.request_evalscripts):
            raise InvalidParameter(f"layer '{self.id}' does not accept {parameter}", parameter=parameter)
        caller = current_caller.get()
        if caller is not None and not caller.evalscripts:
            raise Forbidden(f"this client may not send its own {parameter}", parameter=parameter)
        text = decode_evalscript(encoded, parameter)
        units = self.config.units
        script = compile_request_script(text, frozenset(self.collection.bands), units, parameter, require_default)
        try:
            check_inputs(script, self.collection)
        except EvalscriptError as exc:
            raise EvalscriptError(f"{parameter}: {exc.public_message}", parameter=parameter) from None
        return script

    def legend(self) -> LegendConfig | None:
        """The configured legend, or one derived from an expression layer's colormap."""
        if self.config.legend is not None:
            return self.config.legend
        script = self.evalscript
        if isinstance(script, ExpressionEvalscript) and script.colormap is not None and script.rescale:
            return colormap_legend(self.config.title, script.colormap, *script.rescale)
        return None


def with_script_legend(layer_id: str, layer: LayerConfig, scripts_dir: Path) -> LayerConfig:
    """The layer with the colours its legend leaves out taken from its script.

    A gradient without items gets the script's ramp (``STOPS``/``COLORS``), a class item without
    a colour ``PALETTE[value]``. Colours are written once, in the script (``evalscripts/ndvi.js``,
    ``scl.js``); the legend, the ``.js`` script and its ``.py`` twin all read them there.
    """
    legend = layer.legend
    where = f"layers.{layer_id}.legend"
    if legend is None or (legend.items is not None and all(item.color for item in legend.items)):
        return layer
    if layer.evalscript is None:
        raise ConfigError(f"{where}: an expression layer's legend needs items with colours")
    script = scripts_dir / layer.evalscript
    try:
        if legend.items is None:
            return layer.model_copy(update={"legend": script_legend(legend, *script_ramp(script))})
        palette = script_palette(script)
    except ConfigError as exc:
        raise ConfigError(f"{where}: colours left out, and {exc.public_message}") from None
    items = []
    for i, item in enumerate(legend.items):
        if item.color is None:
            value = item.value  # set: an item without a colour names its class (``LegendItem``)
            if value is None or not (value.is_integer() and 0 <= value < len(palette)):
                raise ConfigError(f"{where}.items[{i}]: class {value} is not in the script's PALETTE")
            item = item.model_copy(update={"color": f"#{palette[int(value)]:06x}"})
        items.append(item)
    return layer.model_copy(update={"legend": legend.model_copy(update={"items": items})})


def compile_evalscript(
    layer_id: str, layer: LayerConfig, collection: CollectionConfig, scripts_dir: Path
) -> Evalscript:
    """Compile a layer's script and check its bands exist in the collection."""
    where = f"layers.{layer_id}"
    try:
        if layer.expression is not None:
            script: Evalscript = ExpressionEvalscript(
                layer.expression,
                set(collection.bands),
                units=layer.units,
                rescale=layer.rescale,
                colormap=layer.colormap,
                name=layer_id,
            )
        elif str(layer.evalscript).endswith(".js"):
            path = scripts_dir / str(layer.evalscript)
            script = JavaScriptEvalscript(path.read_text(encoding="utf-8"), path.name, set(collection.bands))
        else:
            script = PythonEvalscript(scripts_dir / str(layer.evalscript))
        check_inputs(script, collection)
    except (EotilerError, OSError) as exc:
        message = exc.public_message if isinstance(exc, EotilerError) else str(exc)
        raise ConfigError(f"{where}: {message}") from None
    return script


def check_inputs(script: Evalscript, collection: CollectionConfig) -> None:
    """Refuse a script that reads bands the collection lacks, or in units they do not have."""
    unknown = [b for b in script.inputs.data_bands if b not in collection.bands]
    if unknown:
        raise EvalscriptError(f"evalscript {script.name} reads bands not in the collection: {', '.join(unknown)}")
    for name in script.inputs.data_bands:
        if script.inputs.unit(name) == "LINEAR_POWER" and collection.bands[name].power_scale is None:
            raise EvalscriptError(f"evalscript {script.name}: band {name} has no LINEAR_POWER unit")


def smoke_test(layer_id: str, script: Evalscript) -> None:
    """Run a script once on an 8x8 synthetic sample (two scenes, two days when multi-temporal)."""
    rng = np.random.default_rng(0)
    temporal = script.mosaicking != "SIMPLE"
    shape = (2, 8, 8) if temporal else (8, 8)
    arrays = {b: rng.uniform(0.0, 0.5, shape).astype(np.float32) for b in script.inputs.data_bands}
    arrays["dataMask"] = np.ones(shape, dtype=np.float32)
    days = [datetime(2025, 6, 1, 11, tzinfo=UTC), datetime(2025, 6, 2, 11, tzinfo=UTC)]
    scenes = [SceneInfo(day, 10.0, "smoke-test") for day in days] if temporal else None
    try:
        values = script.evaluate(Samples(arrays, scenes))
        to_sample_type(values, script.output, np.ones((8, 8), dtype=bool))
    except EotilerError as exc:
        raise ConfigError(f"layers.{layer_id}: {exc.public_message}") from None


class LayerRegistry:
    """All layers by id."""

    def __init__(self, config: Config, settings: Settings | None = None) -> None:
        self.config = config
        settings = settings or Settings()
        catalogues: dict[str, Catalogue] = {}
        for cid, collection in config.collections.items():
            cat = collection.catalogue
            if isinstance(cat, StaticCatalogueConfig):
                catalogues[cid] = StaticCatalogue(cat.path)
            else:
                catalogues[cid] = StacApiCatalogue(
                    cat.url,
                    cat.collection,
                    cql2_filter=cat.filter,
                    max_items=cat.max_items,
                    timeout=settings.stac_timeout,
                    cache_ttl=settings.stac_cache_ttl,
                    breaker=CircuitBreaker(
                        f"catalogue {cat.url}", settings.breaker_threshold, settings.breaker_cooldown
                    ),
                )
        self.catalogues = catalogues  # by collection id, layers or not (Catalog API, WFS)
        self.all_layers: dict[str, Layer] = {}  # ``layers`` is what the current caller may see
        for lid, configured in config.layers.items():
            layer = with_script_legend(lid, configured, config.evalscripts_dir)
            collection = config.collections[layer.collection]
            script = compile_evalscript(lid, layer, collection, config.evalscripts_dir)
            smoke_test(lid, script)
            try:
                default_time = parse_time(layer.default_time, "default_time")
            except EotilerError as exc:
                raise ConfigError(f"layers.{lid}.default_time: {exc.public_message}") from None
            self.all_layers[lid] = Layer(
                lid,
                layer,
                layer.collection,
                collection,
                catalogues[layer.collection],
                script,
                default_time,
                config.request_evalscripts,
            )

    @property
    def layers(self) -> dict[str, Layer]:
        """The layers the caller of the current request may use (all of them outside a request).

        Capabilities, layer lists and feature types are built from this, so each client sees
        only its own layers; ``all_layers`` is the whole configuration.
        """
        caller = current_caller.get()
        if caller is None or caller.layers is None:
            return self.all_layers
        return {lid: layer for lid, layer in self.all_layers.items() if lid in caller.layers}

    def find(self, layer_id: str, parameter: str = "layer") -> Layer | None:
        """The layer, ``None`` when no such layer exists, ``Forbidden`` when the caller may not use it.

        The one place a request's layer name is checked against the caller's layers: every
        protocol resolves layers here (``get``), or here first when it reports unknown names
        in its own words (WCS coverages, WFS feature types).
        """
        layer = self.all_layers.get(layer_id)
        if layer is None:
            return None
        caller = current_caller.get()
        if caller is not None and not caller.may_use(layer_id):
            raise Forbidden(f"{parameter}: this client may not use layer '{layer_id[:64]}'", parameter=parameter)
        return layer

    def get(self, layer_id: str, parameter: str = "layer") -> Layer:
        """Return a layer or raise ``LayerNotDefined`` (``Forbidden``) naming the parameter."""
        layer = self.find(layer_id, parameter)
        if layer is None:
            raise LayerNotDefined(f"{parameter}: unknown layer '{layer_id[:64]}'", parameter=parameter)
        return layer
