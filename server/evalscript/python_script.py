"""Load a Python evalscript file shaped like a Sentinel Hub V3 script, but vectorised.

A file defines ``setup()`` returning ``{"input": [...], "output": {...}}`` and
``evaluatePixel(samples)`` returning the output bands as arrays, and may define
``updateOutputMetadata(scenes, inputMetadata, outputMetadata)`` as a V3 script does (with
dicts). Python files come only from the server's configuration (trusted); requests can never
supply Python.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from server.errors import ConfigError, EvalscriptError
from server.evalscript.contract import INPUT_METADATA, InputSpec, OutputSpec, Samples, SampleType, stack_output


def _load_module(path: Path, digest: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"eotiler_evalscript_{path.stem}_{digest[:12]}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - any import-time failure is a configuration error
        raise ConfigError(f"{path}: failed to import: {type(exc).__name__}: {exc}") from None
    return module


def _parse_setup(setup: dict[str, Any], path: Path) -> tuple[InputSpec, OutputSpec]:
    """Read ``input`` and ``output`` of a setup() dict, naming the key that is wrong."""
    if not isinstance(setup, dict):
        raise ConfigError(f"{path}: setup() must return a dict with 'input' and 'output'")
    inputs = setup.get("input")
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict):
        if len(inputs) != 1:
            raise ConfigError(f"{path}: setup().input: only one input object is supported")
        bands = inputs[0].get("bands")
        units = inputs[0].get("units", "REFLECTANCE")
    else:
        bands, units = inputs, "REFLECTANCE"
    if not isinstance(bands, list) or not bands or not all(isinstance(b, str) for b in bands):
        raise ConfigError(f"{path}: setup().input.bands must be a non-empty list of band names")
    if units not in ("REFLECTANCE", "DN"):
        raise ConfigError(f"{path}: setup().input.units must be REFLECTANCE or DN, not {units!r}")
    output = setup.get("output")
    if isinstance(output, list):
        defaults = [o for o in output if isinstance(o, dict) and o.get("id", "default") == "default"]
        output = defaults[0] if defaults else None
    if not isinstance(output, dict) or not isinstance(output.get("bands"), int) or output["bands"] < 1:
        raise ConfigError(f"{path}: setup().output.bands must be a positive integer")
    try:
        sample_type = SampleType(str(output.get("sampleType", "AUTO")).upper())
    except ValueError:
        raise ConfigError(f"{path}: setup().output.sampleType must be AUTO, UINT8, UINT16 or FLOAT32") from None
    return InputSpec(tuple(bands), units), OutputSpec(output["bands"], sample_type)


class PythonEvalscript:
    """An evalscript loaded from a ``.py`` file."""

    mosaicking = "SIMPLE"  # numpy scripts see one flattened sample per pixel
    runtime = "python (numpy)"  # what evaluates it (``eotiler layers``)

    def __init__(self, path: Path) -> None:
        source = path.read_bytes()
        self.name = path.name
        # A JavaScript twin next to the file is part of it: twins read their colour ramp from it.
        twin = path.with_suffix(".js")
        self.digest = hashlib.sha256(source + (twin.read_bytes() if twin.is_file() else b"")).hexdigest()
        module = _load_module(path, self.digest)
        for func in ("setup", "evaluatePixel"):
            if not callable(getattr(module, func, None)):
                raise ConfigError(f"{path}: missing function {func}()")
        try:
            setup = module.setup()
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"{path}: setup() raised {type(exc).__name__}: {exc}") from None
        self.inputs, self.output = _parse_setup(setup, path)
        self._evaluate_pixel = module.evaluatePixel
        hook = getattr(module, "updateOutputMetadata", None)
        self._update_output_metadata = hook if callable(hook) else None

    def output_metadata(self, scenes: list[Any]) -> Any:
        """``updateOutputMetadata(scenes, inputMetadata, outputMetadata)`` as in a JavaScript V3
        script, with dicts: ``scenes["tiles"]`` lists the scenes that drew the image (``date`` an
        ISO string, ``cloudCoverage``, ``dataPath``, ``shId``); what it sets as
        ``outputMetadata["userData"]`` is returned (it must be JSON-serialisable)."""
        if self._update_output_metadata is None:
            return {}
        tiles = [scene.as_js(number) for number, scene in enumerate(scenes)]
        metadata: dict[str, Any] = {"userData": {}}
        try:
            self._update_output_metadata({"tiles": tiles}, dict(INPUT_METADATA), metadata)
            return json.loads(json.dumps(metadata.get("userData", {})))
        except Exception as exc:  # noqa: BLE001 - a script bug must not become a 500
            raise EvalscriptError(
                f"evalscript '{self.name}' updateOutputMetadata failed: {type(exc).__name__}: {exc}"
            ) from exc

    def evaluate(self, samples: Samples) -> np.ndarray:
        """Run ``evaluatePixel`` over whole arrays and check the result's shape."""
        # Sentinel Hub computes in double precision and rounds only the final values; so do the
        # JavaScript twins, and both must give the same bytes.
        samples = samples.as_float64()
        shape = samples.shape
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            try:
                result = self._evaluate_pixel(samples)
            except EvalscriptError:
                raise
            except Exception as exc:  # noqa: BLE001 - a script bug must not become a 500
                raise EvalscriptError(f"evalscript '{self.name}' failed: {type(exc).__name__}: {exc}") from exc
        # The float64 inputs the result does not hold (8 MB a band on a 1024 px map) go before
        # the output is stacked, so the render's peak is the script's, not the script's plus the stack.
        del samples
        return stack_output(result, self.output, shape, self.name)
