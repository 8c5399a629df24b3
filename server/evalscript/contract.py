"""The one render contract every script kind implements.

Why a contract and not a base class with behaviour: the pipeline must only know what a script
reads (bands, units), what it returns (band count, sample type) and how to run it on arrays, so
that numpy scripts, numexpr expressions and V8-hosted JavaScript can be swapped freely.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import numpy as np

from server.errors import EvalscriptError


class SampleType(StrEnum):
    """Output sample types of Sentinel Hub evalscript V3."""

    AUTO = "AUTO"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    INT8 = "INT8"
    INT16 = "INT16"
    FLOAT32 = "FLOAT32"


@dataclass(frozen=True, slots=True)
class InputSpec:
    """Bands a script reads, in which units; ``dataMask`` is listed like a band.

    ``units`` is one unit for every band or one per band. ``DEFAULT`` means each band's own
    default, as Sentinel Hub defines it (REFLECTANCE for optical bands, DN for SCL,
    LINEAR_POWER for Sentinel-1): what a JavaScript script gets when it names no units.
    """

    bands: tuple[str, ...]
    units: str | tuple[str, ...] = "REFLECTANCE"

    def unit(self, band: str) -> str:
        """The unit ``band`` is read in."""
        if isinstance(self.units, str):
            return self.units
        return self.units[self.bands.index(band)]

    @property
    def data_bands(self) -> tuple[str, ...]:
        """The bands that come from files (everything but ``dataMask``)."""
        return tuple(b for b in self.bands if b != "dataMask")


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """The ``default`` output: band count and sample type."""

    bands: int
    sample_type: SampleType = SampleType.AUTO
    id: str = "default"

    @property
    def has_alpha(self) -> bool:
        """Sentinel Hub treats a 4th band of a visual output as alpha."""
        return self.bands == 4 and self.sample_type is not SampleType.FLOAT32


class Samples:
    """Band arrays by name, read as attributes (``samples.B04``) like Sentinel Hub samples.

    For multi-temporal scripts (mosaicking ORBIT or TILE) every array is (samples, h, w) and
    ``scenes`` describes each sample's scenes (``js_script.SceneInfo``).
    """

    def __init__(self, arrays: dict[str, np.ndarray], scenes: list[Any] | None = None) -> None:
        self._arrays = arrays
        self.scenes = scenes

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self._arrays[name]
        except KeyError:
            raise AttributeError(f"band '{name}' was not declared in setup() inputs") from None

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def as_float64(self) -> Samples:
        """The same samples in double precision (what Sentinel Hub computes in)."""
        return Samples({k: np.asarray(v, dtype=np.float64) for k, v in self._arrays.items()}, self.scenes)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of every array (height, width)."""
        return next(iter(self._arrays.values())).shape


# ``inputMetadata`` as Sentinel Hub gives it to scripts: the service's version, and the factor
# DN values are multiplied by to give reflectance (the JavaScript runtime's is the same).
INPUT_METADATA = {"serviceVersion": "eotiler-1", "normalizationFactor": 0.0001}


def user_data(script: object, scenes: list[Any]) -> Any:
    """The ``userData`` a script's ``updateOutputMetadata`` sets for an image drawn from ``scenes``
    (``SceneInfo`` each): JSON-ready, ``{}`` for scripts without the hook (expressions)."""
    hook = getattr(script, "output_metadata", None)
    return {} if hook is None else hook(scenes)


class Evalscript(Protocol):
    """What the pipeline needs from any script."""

    name: str
    inputs: InputSpec
    output: OutputSpec
    digest: str
    mosaicking: str  # SIMPLE (one flattened sample per pixel), ORBIT or TILE (arrays over scenes)
    runtime: str  # what evaluates it: numexpr, python (numpy), numpy (vectorised JavaScript) or "v8: why"

    def evaluate(self, samples: Samples) -> np.ndarray:
        """Return the output bands as a float array of shape (bands, height, width)."""
        ...


def stack_output(result: object, output: OutputSpec, shape: tuple[int, int], name: str) -> np.ndarray:
    """Turn what ``evaluatePixel`` returned into a (bands, h, w) float32 array, or raise.

    Accepts a sequence of arrays/scalars or an ndarray; scalars are broadcast, so a script may
    return ``[0, 0, 0, samples.dataMask]``.
    """
    if isinstance(result, np.ndarray) and result.ndim == 3:
        bands = list(result)
    elif isinstance(result, list | tuple):
        bands = list(result)
    elif isinstance(result, np.ndarray | float | int) and output.bands == 1:
        bands = [result]
    else:
        raise EvalscriptError(f"evalscript '{name}' must return a list of {output.bands} band arrays")
    if len(bands) != output.bands:
        raise EvalscriptError(f"evalscript '{name}' returned {len(bands)} bands, setup() declares {output.bands}")
    stacked = np.empty((output.bands, *shape), dtype=np.float32)  # results rounded once, here
    for i, band in enumerate(bands):
        arr = np.asarray(band, dtype=np.float64)  # no copy for the float64 arrays scripts return
        if arr.ndim not in (0, 2) or (arr.ndim == 2 and arr.shape != shape):
            raise EvalscriptError(f"evalscript '{name}' returned band {i} with shape {arr.shape}, expected {shape}")
        stacked[i] = arr
    return stacked
